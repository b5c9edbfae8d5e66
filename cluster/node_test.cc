// Two servers (Nodes with real peer endpoints on loopback) sharing volumes in
// one store: ownership moves with the writes, readers are coherent, status
// and lock break tell the truth.
#include "cluster/node.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "cluster/shared_volume.h"
#include "store/memory_store.h"
#include "util/test_util.h"
#include "volume/clone.h"
#include "volume/trash.h"
#include "volume/volume.h"

namespace hbiss::cluster {
namespace {

constexpr uint32_t kBlock = 4096;

std::vector<uint8_t> Pattern(uint32_t tag) { return TaggedBlock(tag); }

class TwoServers : public ::testing::Test {
 protected:
  void SetUp() override {
    volume::CreateOptions co;
    co.size = 64ull << 20;
    co.segment_size = 4ull << 20;
    ASSERT_TRUE(volume::Volume::Create(&store_, "vm", co).ok());
    a_ = StartNode("host-a");
    b_ = StartNode("host-b");
  }

  std::unique_ptr<Node> StartNode(const std::string& id, const std::string& listen = "127.0.0.1:0",
                                  int acquire_timeout_ms = 20000) {
    NodeOptions o;
    o.server_id = id;
    o.peer_listen = listen;
    o.acquire_timeout_ms = acquire_timeout_ms;
    o.open.clean_threshold = 0;
    auto n = Node::Start(&store_, o);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return n.ok() ? std::move(*n) : nullptr;
  }

  static SharedVolume* Shared(volume::Volume* v) { return static_cast<SharedVolume*>(v); }

  // RunSnapshotOp on "vm", with the timeouts every test here uses.
  Result<SnapshotOpResult> Snap(SnapshotOp::Kind kind, const std::string& snap,
                                const std::string& new_name = "") {
    SnapshotOp op;
    op.kind = kind;
    op.volume = "vm";
    op.snap = snap;
    op.new_name = new_name;
    return RunSnapshotOp(&store_, op, 2000, 20000);
  }

  // host-a owns "vm" (*va) and host-b reads it (*vb); snapshot s1 holds
  // Pattern(1) in block 0, the volume Pattern(2).
  void OwnerAndReaderWithSnapshot(std::unique_ptr<volume::Volume>* va,
                                  std::unique_ptr<volume::Volume>* vb) {
    auto a = a_->Open("vm");
    auto b = b_->Open("vm");
    ASSERT_TRUE(a.ok() && b.ok());
    *va = std::move(*a);
    *vb = std::move(*b);
    ASSERT_TRUE((*va)->Write(0, Pattern(1)).ok());
    ASSERT_TRUE((*va)->CreateSnapshot("s1").ok());
    ASSERT_TRUE((*va)->Write(0, Pattern(2)).ok());
  }

  // Volume "c", a clone of vm@base, where vm holds Pattern(kGoldTag + b) in
  // every block b < kGoldBlocks (several of the engine's 1 MiB copy pieces).
  static constexpr uint64_t kGoldBlocks = 2048;
  static constexpr uint32_t kGoldTag = 100000;
  void MakeClone() {
    volume::OpenOptions oo;
    oo.clean_threshold = 0;
    auto g = volume::Volume::Open(&store_, "vm", oo);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    for (uint64_t b = 0; b < kGoldBlocks; b += 64) {
      std::vector<uint8_t> buf;
      for (uint64_t i = b; i < b + 64; i++) {
        auto blk = Pattern(uint32_t(kGoldTag + i));
        buf.insert(buf.end(), blk.begin(), blk.end());
      }
      ASSERT_TRUE((*g)->Write(b * kBlock, buf).ok());
    }
    ASSERT_TRUE((*g)->CreateSnapshot("base").ok());
    ASSERT_TRUE((*g)->Close().ok());
    ASSERT_TRUE(volume::Volume::Clone(&store_, "vm@base", "c").ok());
  }

  // MakeClone, then host-a owns "c" (*va: it wrote Pattern(1) in block 0,
  // noted in *written) and host-b reads it (*vb).
  void ServedClone(std::unique_ptr<volume::Volume>* va, std::unique_ptr<volume::Volume>* vb,
                   std::map<uint64_t, uint32_t>* written) {
    ASSERT_NO_FATAL_FAILURE(MakeClone());
    auto a = a_->Open("c");
    auto b = b_->Open("c");
    ASSERT_TRUE(a.ok() && b.ok());
    *va = std::move(*a);
    *vb = std::move(*b);
    ASSERT_TRUE((*va)->Write(0, Pattern(1)).ok());
    (*written)[0] = 1;
  }

  // Every block of [0, kGoldBlocks + 64) of `v` holds what `written` (block
  // -> tag) says, else vm@base's.
  static void ExpectClone(volume::Volume* v, const std::map<uint64_t, uint32_t>& written,
                          const std::string& what) {
    std::vector<uint8_t> got(kBlock);
    for (uint64_t b = 0; b < kGoldBlocks + 64; b++) {
      ASSERT_TRUE(v->Read(b * kBlock, got).ok()) << what << " block " << b;
      auto it = written.find(b);
      std::vector<uint8_t> want = it != written.end() ? Pattern(it->second)
                                  : b < kGoldBlocks   ? Pattern(uint32_t(kGoldTag + b))
                                                      : std::vector<uint8_t>(kBlock, 0);
      ASSERT_EQ(got, want) << what << " block " << b;
    }
  }

  // The clone no longer depends on vm: its snapshot, then vm itself, can go.
  void ExpectDetached() {
    auto kids = volume::ListChildren(&store_, "vm", 0);
    ASSERT_TRUE(kids.ok());
    EXPECT_TRUE(kids->empty());
    volume::OpenOptions oo;
    oo.clean_threshold = 0;
    auto g = volume::Volume::Open(&store_, "vm", oo);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    Status rm = (*g)->RemoveSnapshot("base");
    EXPECT_TRUE(rm.ok()) << rm.ToString();
    ASSERT_TRUE((*g)->Close().ok());
    Status gone = volume::Volume::Remove(&store_, "vm");
    EXPECT_TRUE(gone.ok()) << gone.ToString();
  }

  store::MemoryStore store_;
  std::unique_ptr<Node> a_, b_;
};

TEST_F(TwoServers, OwnershipFollowsTheWritesAndReadsAreCoherent) {
  auto va = a_->Open("vm");
  auto vb = b_->Open("vm");
  ASSERT_TRUE(va.ok() && vb.ok());
  SharedVolume* sa = Shared(va->get());
  SharedVolume* sb = Shared(vb->get());
  EXPECT_FALSE(sa->owner());
  EXPECT_FALSE(sb->owner());

  std::map<uint64_t, uint32_t> model;  // block -> tag
  std::mt19937 rng(7);
  uint64_t last_epoch = 0;
  for (int round = 0; round < 40; round++) {
    volume::Volume* w = (round % 2 == 0) ? va->get() : vb->get();
    volume::Volume* r = (round % 2 == 0) ? vb->get() : va->get();
    for (int i = 0; i < 3; i++) {
      uint64_t blk = rng() % 64;
      uint32_t tag = uint32_t(round * 10 + i + 1);
      ASSERT_TRUE(w->Write(blk * kBlock, Pattern(tag)).ok()) << "round " << round;
      model[blk] = tag;
    }
    if (round % 3 == 0) {
      ASSERT_TRUE(w->Flush().ok());
    }
    // Exactly one owner, the writer; the epoch only grows.
    EXPECT_TRUE(Shared(w)->owner());
    EXPECT_FALSE(Shared(r)->owner());
    EXPECT_GT(w->epoch(), last_epoch);
    last_epoch = w->epoch();
    // The other server reads every acknowledged write, flushed or not.
    for (auto& [blk, tag] : model) {
      std::vector<uint8_t> got(kBlock);
      ASSERT_TRUE(r->Read(blk * kBlock, got).ok());
      ASSERT_EQ(got, Pattern(tag)) << "round " << round << " block " << blk;
    }
  }
  EXPECT_EQ(sa->stats().acquired, 20u);
  EXPECT_EQ(sb->stats().acquired, 20u);
  EXPECT_EQ(sa->stats().released + sb->stats().released, 39u);
  ASSERT_TRUE((*va)->Close().ok());
  ASSERT_TRUE((*vb)->Close().ok());

  // A plain open after both servers closed sees the last state.
  auto v = volume::Volume::Open(&store_, "vm");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  for (auto& [blk, tag] : model) {
    std::vector<uint8_t> got(kBlock);
    ASSERT_TRUE((*v)->Read(blk * kBlock, got).ok());
    ASSERT_EQ(got, Pattern(tag));
  }
}

// A reader of a volume nobody owns replays the log only when the owner record
// shows a new epoch or the lock is held: a writer that is not a server (a
// CLI open) is seen while it writes and after it closed.
TEST_F(TwoServers, AnUnownedVolumeIsReadWithoutReplaysUntilAWriterComes) {
  auto write = [&](volume::Volume* v, uint32_t tag) {
    ASSERT_TRUE(v->Write(0, Pattern(tag)).ok());
    ASSERT_TRUE(v->Flush().ok());
  };
  auto read = [&](volume::Volume* v) {
    std::vector<uint8_t> got(kBlock);
    EXPECT_TRUE(v->Read(0, got).ok());
    return got;
  };
  {
    auto cli = volume::Volume::Open(&store_, "vm");
    ASSERT_TRUE(cli.ok());
    write(cli->get(), 1);
    ASSERT_TRUE((*cli)->Close().ok());
  }
  auto vb = b_->Open("vm");
  ASSERT_TRUE(vb.ok());
  SharedVolume* sb = Shared(vb->get());
  EXPECT_EQ(read(vb->get()), Pattern(1));
  const uint64_t replays = sb->stats().replays;
  const uint64_t syncs = sb->stats().syncs;
  for (int i = 0; i < 50; i++) ASSERT_EQ(read(vb->get()), Pattern(1));
  EXPECT_GE(sb->stats().syncs, syncs + 50);
  EXPECT_EQ(sb->stats().replays, replays) << "the final log was replayed again";

  // A writer that holds the lock: every round replays, and sees each flush.
  auto cli = volume::Volume::Open(&store_, "vm");
  ASSERT_TRUE(cli.ok());
  for (uint32_t tag = 2; tag < 6; tag++) {
    write(cli->get(), tag);
    ASSERT_EQ(read(vb->get()), Pattern(tag));
    ASSERT_EQ(read(vb->get()), Pattern(tag));
  }
  ASSERT_TRUE((*cli)->Close().ok());
  cli->reset();
  EXPECT_EQ(read(vb->get()), Pattern(5));
  const uint64_t after = sb->stats().replays;
  for (int i = 0; i < 20; i++) ASSERT_EQ(read(vb->get()), Pattern(5));
  EXPECT_LE(sb->stats().replays, after + 1) << "the closed writer's epoch is final";

  // Deleted and created again under its name: epochs start over, and the
  // reader must not take the new volume's epoch for the one it read.
  ASSERT_TRUE(volume::Volume::Remove(&store_, "vm").ok());
  volume::CreateOptions co;
  co.size = 64ull << 20;
  co.segment_size = 4ull << 20;
  ASSERT_TRUE(volume::Volume::Create(&store_, "vm", co).ok());
  // As many opens as the first life had, so the epoch numbers meet again.
  for (uint32_t tag = 8; tag < 10; tag++) {
    auto fresh = volume::Volume::Open(&store_, "vm");
    ASSERT_TRUE(fresh.ok());
    write(fresh->get(), tag);
    ASSERT_TRUE((*fresh)->Close().ok());
  }
  EXPECT_EQ(volume::Volume::Owner(&store_, "vm")->epoch, (*vb)->epoch());
  std::vector<uint8_t> got(kBlock);
  Status r = (*vb)->Read(0, got);
  EXPECT_TRUE(r.IsNotFound()) << r.ToString();
  EXPECT_NE(r.ToString().find("was removed"), std::string::npos) << r.ToString();
  (void)(*vb)->Close();
}

TEST_F(TwoServers, ConcurrentWritersOnTwoServersBothProgressAndAgree) {
  auto va = a_->Open("vm");
  auto vb = b_->Open("vm");
  ASSERT_TRUE(va.ok() && vb.ok());
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  // Each server writes its own half of the first 64 blocks; the last tag
  // each wrote per block is the model.
  std::vector<uint32_t> last(64, 0);
  auto writer = [&](volume::Volume* v, uint64_t first, uint32_t base) {
    std::mt19937 rng(base);
    for (uint32_t n = 1; !stop.load(); n++) {
      uint64_t blk = first + rng() % 32;
      uint32_t tag = base + n;
      if (!v->Write(blk * kBlock, Pattern(tag)).ok()) {
        failures++;
        return;
      }
      last[blk] = tag;
      if (n % 5 == 0 && !v->Flush().ok()) failures++;
    }
  };
  std::thread ta(writer, va->get(), 0, 1000000);
  std::thread tb(writer, vb->get(), 32, 2000000);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  stop = true;
  ta.join();
  tb.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(Shared(va->get())->stats().acquired, 1u) << "ownership never moved";
  for (uint64_t blk = 0; blk < 64; blk++) {
    std::vector<uint8_t> ga(kBlock), gb(kBlock);
    ASSERT_TRUE((*va)->Read(blk * kBlock, ga).ok());
    ASSERT_TRUE((*vb)->Read(blk * kBlock, gb).ok());
    ASSERT_EQ(ga, gb) << "block " << blk;
    if (last[blk] != 0) {
      ASSERT_EQ(ga, Pattern(last[blk])) << "block " << blk;
    }
  }
}

TEST_F(TwoServers, AWriterWaitsForAnOwnerThatCannotBeAskedAndTimesOut) {
  // host-c has no peer endpoint: nobody can ask it to release.
  auto c = StartNode("host-c", "");
  auto d = StartNode("host-d", "127.0.0.1:0", /*acquire_timeout_ms=*/600);
  auto vc = c->Open("vm");
  auto vd = d->Open("vm");
  ASSERT_TRUE(vc.ok() && vd.ok());
  ASSERT_TRUE((*vc)->Write(0, Pattern(1)).ok());
  Status s = (*vd)->Write(kBlock, Pattern(2));
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.ToString().find("host-c"), std::string::npos) << s.ToString();
  // Once c lets go (here: closes), d's next write goes through.
  ASSERT_TRUE((*vc)->Close().ok());
  ASSERT_TRUE((*vd)->Write(kBlock, Pattern(2)).ok());
  std::vector<uint8_t> got(kBlock);
  ASSERT_TRUE((*vd)->Read(0, got).ok());
  EXPECT_EQ(got, Pattern(1));
}

TEST_F(TwoServers, AReaderNeverServesStaleDataWhenTheOwnerCannotBeAsked) {
  // host-c has no peer endpoint: a reader cannot ask it to sync.
  auto c = StartNode("host-c", "");
  auto d = StartNode("host-d", "127.0.0.1:0", /*acquire_timeout_ms=*/800);
  auto vc = c->Open("vm");
  auto vd = d->Open("vm");
  ASSERT_TRUE(vc.ok() && vd.ok());
  ASSERT_TRUE((*vc)->Write(0, Pattern(1)).ok());
  ASSERT_TRUE((*vc)->Flush().ok());
  ASSERT_TRUE((*vc)->Write(0, Pattern(2)).ok());  // acknowledged, not flushed
  // While c holds the lock, d cannot know what c acknowledged: it waits, then fails.
  std::vector<uint8_t> got(kBlock);
  Status s = (*vd)->Read(0, got);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  // Once c let go (a close makes it durable), d reads the latest.
  ASSERT_TRUE((*vc)->Close().ok());
  ASSERT_TRUE((*vd)->Read(0, got).ok());
  EXPECT_EQ(got, Pattern(2));
}

TEST_F(TwoServers, StatusNamesTheOwnerAndEveryOpenServer) {
  auto va = a_->Open("vm");
  auto vb = b_->Open("vm");
  ASSERT_TRUE(va.ok() && vb.ok());
  ASSERT_TRUE((*va)->Write(0, Pattern(1)).ok());
  auto st = GetVolumeStatus(&store_, "vm", 2000);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_TRUE(st->has_owner);
  EXPECT_EQ(st->owner.record.server, "host-a");
  EXPECT_EQ(st->owner.record.peer, a_->peer_address());
  EXPECT_TRUE(st->owner.answers);
  EXPECT_TRUE(st->owner.owns);
  EXPECT_EQ(st->epoch, (*va)->epoch());
  ASSERT_EQ(st->open.size(), 2u);
  EXPECT_EQ(st->open[0].record.server, "host-a");
  EXPECT_EQ(st->open[1].record.server, "host-b");
  EXPECT_FALSE(st->open[1].owns);
  std::string json = VolumeStatusJson(*st);
  EXPECT_NE(json.find("\"owner\":{\"server\":\"host-a\""), std::string::npos) << json;

  // A live owner is not broken.
  Status br = BreakVolumeLock(&store_, "vm", /*force=*/false, 2000);
  EXPECT_TRUE(br.IsBusy()) << br.ToString();

  // Ownership moved: status follows.
  ASSERT_TRUE((*vb)->Write(0, Pattern(2)).ok());
  st = GetVolumeStatus(&store_, "vm", 2000);
  ASSERT_TRUE(st.ok() && st->has_owner);
  EXPECT_EQ(st->owner.record.server, "host-b");
  EXPECT_GT(st->epoch, 1u);

  // Closed by both: no owner, nobody has it open.
  ASSERT_TRUE((*va)->Close().ok());
  ASSERT_TRUE((*vb)->Close().ok());
  st = GetVolumeStatus(&store_, "vm", 2000);
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->has_owner);
  EXPECT_TRUE(st->open.empty());
}

TEST_F(TwoServers, SnapshotOpsGoThroughTheOwner) {
  auto va = a_->Open("vm");
  auto vb = b_->Open("vm");
  ASSERT_TRUE(va.ok() && vb.ok());
  ASSERT_TRUE((*va)->Write(0, Pattern(1)).ok());  // host-a owns it, not flushed
  const uint64_t epoch = (*va)->epoch();

  auto r = Snap(SnapshotOp::kCreate, "s1");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "host-a");
  EXPECT_EQ(r->created.name, "s1");
  EXPECT_GT(r->created.id, 0u);
  EXPECT_TRUE(Shared(va->get())->owner());  // the owner did it, and still owns it
  EXPECT_EQ((*va)->epoch(), epoch);
  ASSERT_TRUE((*va)->Write(0, Pattern(2)).ok());

  // The snapshot holds the write acknowledged before it, not the one after.
  std::vector<uint8_t> got(kBlock);
  {
    volume::OpenOptions ro;
    ro.read_only = true;
    auto snap = volume::Volume::Open(&store_, "vm@s1", ro);
    ASSERT_TRUE(snap.ok()) << snap.status().ToString();
    ASSERT_TRUE((*snap)->Read(0, got).ok());
    EXPECT_EQ(got, Pattern(1));
  }

  // The engine's errors come back with their kind.
  pb::Request dup;
  dup.set_type(pb::Request::SNAP_CREATE);
  dup.set_id(9);
  dup.set_volume("vm");
  dup.set_snap("s1");
  pb::Reply rep = a_->Handle(dup);
  EXPECT_EQ(rep.code(), pb::Reply::FAILED);
  EXPECT_EQ(Status::Code(rep.status_code()), Status::Code::kAlreadyExists) << rep.message();
  EXPECT_TRUE(Snap(SnapshotOp::kCreate, "s1").status().IsAlreadyExists());
  EXPECT_TRUE(Snap(SnapshotOp::kRemove, "nosuch").status().IsNotFound());

  // Rename, then roll back through the owner: both servers read the snapshot's data.
  r = Snap(SnapshotOp::kRename, "s1", "s2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "host-a");
  ASSERT_TRUE((*vb)->Close().ok());  // a reader elsewhere refuses a rollback (below)
  r = Snap(SnapshotOp::kRollback, "s2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "host-a");
  ASSERT_TRUE((*va)->Read(0, got).ok());
  EXPECT_EQ(got, Pattern(1));
  {
    // A reader opened after the rollback (one opened before it does not
    // see it yet: DISABLED_AReaderOpenBeforeARollbackSeesIt).
    auto c = StartNode("host-c");
    auto vc = c->Open("vm");
    ASSERT_TRUE(vc.ok());
    ASSERT_TRUE((*vc)->Read(0, got).ok());
    EXPECT_EQ(got, Pattern(1));
    ASSERT_TRUE((*vc)->Close().ok());
  }

  r = Snap(SnapshotOp::kRemove, "s2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto list = volume::Volume::ListSnapshots(&store_, "vm");
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  ASSERT_TRUE((*va)->Close().ok());
}

// The trash (doc/snapshots.md "Trash") of a served volume: the snapshot
// goes to the trash through the owner, and so does its deletion once the
// last clone is gone (SNAP_REMOVE with purge_trash), never behind its back.
TEST_F(TwoServers, TrashOfAServedVolumeGoesThroughTheOwner) {
  auto va = a_->Open("vm");
  ASSERT_TRUE(va.ok());
  ASSERT_TRUE((*va)->Write(0, Pattern(1)).ok());  // host-a owns it
  ASSERT_TRUE(Snap(SnapshotOp::kCreate, "base").ok());
  ASSERT_TRUE(volume::Volume::Clone(&store_, "vm@base", "c").ok());
  // Refused without --trash, by reading only: the message names the clone.
  auto r = Snap(SnapshotOp::kRemove, "base");
  EXPECT_TRUE(r.status().IsBusy()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("(c)"), std::string::npos) << r.status().message();
  SnapshotOp op;
  op.kind = SnapshotOp::kRemove;
  op.volume = "vm";
  op.snap = "base";
  op.trash = true;
  r = RunSnapshotOp(&store_, op, 2000, 20000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->trashed);
  EXPECT_EQ(r->server, "host-a");
  auto all = volume::Volume::ListSnapshots(&store_, "vm", true);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_TRUE((*all)[0].trashed);
  ASSERT_TRUE(volume::Volume::Remove(&store_, "c").ok());
  std::string purged_by;
  Status p = volume::PurgeTrash(&store_, "vm", [&](const std::string& vol) -> Status {
    SnapshotOp purge;
    purge.kind = SnapshotOp::kPurgeTrash;
    purge.volume = vol;
    auto pr = RunSnapshotOp(&store_, purge, 2000, 20000);
    if (!pr.ok()) return pr.status();
    EXPECT_EQ(pr->purged, 1u);
    purged_by = pr->server;
    return Status::OK();
  });
  ASSERT_TRUE(p.ok()) << p.ToString();
  EXPECT_EQ(purged_by, "host-a");
  all = volume::Volume::ListSnapshots(&store_, "vm", true);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
  EXPECT_TRUE(Shared(va->get())->owner());
  ASSERT_TRUE((*va)->Close().ok());
}

// Bug (found by SnapshotOpsGoThroughTheOwner, not fixed yet): Rollback
// reaches the store as checkpoints only (volume_snapshot.cc), and a reader's
// Refresh replays only the log after its position, so a server that had the
// volume open as a reader before another server rolled it back keeps serving
// the pre-rollback data.
TEST_F(TwoServers, DISABLED_AReaderOpenBeforeARollbackSeesIt) {
  std::unique_ptr<volume::Volume> va, vb;
  ASSERT_NO_FATAL_FAILURE(OwnerAndReaderWithSnapshot(&va, &vb));
  std::vector<uint8_t> got(kBlock);
  ASSERT_TRUE(vb->Read(0, got).ok());
  EXPECT_EQ(got, Pattern(2));
  ASSERT_TRUE(va->Rollback("s1").ok());
  ASSERT_TRUE(vb->Read(0, got).ok());
  EXPECT_EQ(got, Pattern(1));
  ASSERT_TRUE(va->Close().ok());
  ASSERT_TRUE(vb->Close().ok());
}

TEST_F(TwoServers, SnapshotOpsWithoutAnOwnerOpenTheVolume) {
  auto vb = b_->Open("vm");  // a reader only
  ASSERT_TRUE(vb.ok());
  auto r = Snap(SnapshotOp::kCreate, "s1");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "");
  auto owner = volume::Volume::Owner(&store_, "vm");
  ASSERT_TRUE(owner.ok());
  EXPECT_EQ(owner->owner, "");  // closed again
  // The reader follows, and can still become the owner.
  ASSERT_TRUE((*vb)->Write(0, Pattern(3)).ok());
  ASSERT_TRUE((*vb)->Close().ok());
}

// Until DISABLED_AReaderOpenBeforeARollbackSeesIt passes, a rollback is
// refused while a server other than the one doing it has the volume open; a
// lone reader with nobody owning the volume does it itself.
TEST_F(TwoServers, RollbackIsRefusedWhileAnotherServerReadsTheVolume) {
  std::unique_ptr<volume::Volume> va, vb;
  ASSERT_NO_FATAL_FAILURE(OwnerAndReaderWithSnapshot(&va, &vb));
  auto r = Snap(SnapshotOp::kRollback, "s1");
  EXPECT_TRUE(r.status().IsBusy()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("host-b"), std::string::npos) << r.status().ToString();
  std::vector<uint8_t> got(kBlock);
  ASSERT_TRUE(va->Read(0, got).ok());
  EXPECT_EQ(got, Pattern(2));  // nothing was rolled back

  ASSERT_TRUE(va->Close().ok());  // now b is a lone reader and nobody owns it
  r = Snap(SnapshotOp::kRollback, "s1");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "host-b");
  ASSERT_TRUE(vb->Read(0, got).ok());
  EXPECT_EQ(got, Pattern(1));
  ASSERT_TRUE(vb->Close().ok());
}

TEST_F(TwoServers, AnOwnerThatDoesNotAnswerIsNamedNotBroken) {
  auto c = StartNode("host-c", "");  // no peer endpoint: it cannot be asked
  auto vc = c->Open("vm");
  ASSERT_TRUE(vc.ok());
  ASSERT_TRUE((*vc)->Write(0, Pattern(1)).ok());
  const uint64_t epoch = (*vc)->epoch();
  SnapshotOp op;
  op.volume = "vm";
  op.snap = "s1";
  auto r = RunSnapshotOp(&store_, op, 500, 2000);
  EXPECT_TRUE(r.status().IsBusy()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("host-c"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("hbiss lock break vm"), std::string::npos);
  EXPECT_TRUE(Shared(vc->get())->owner());
  auto owner = volume::Volume::Owner(&store_, "vm");
  ASSERT_TRUE(owner.ok());
  EXPECT_EQ(owner->epoch, epoch);
  ASSERT_TRUE((*vc)->Close().ok());
}

TEST(ServerRecordTest, RoundTripsAndRejectsJunk) {
  ServerRecord r{"host-a", "10.0.0.1:10810", 1700000000, 42};
  auto d = DecodeServerRecord(EncodeServerRecord(r));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->server, "host-a");
  EXPECT_EQ(d->peer, "10.0.0.1:10810");
  EXPECT_EQ(d->since, 1700000000);
  EXPECT_EQ(d->pid, 42);
  for (const char* bad : {"", "{", "[]", "{\"peer\":\"x\"}", "{\"server\":5}"}) {
    EXPECT_FALSE(DecodeServerRecord(bad).ok()) << bad;
  }
}

TEST(NodeTest, RejectsAServerIdThatCannotNameAnObject) {
  store::MemoryStore s;
  NodeOptions o;
  o.server_id = "a/b";
  EXPECT_TRUE(Node::Start(&s, o).status().IsInvalidArgument());
}

TEST_F(TwoServers, FlattenGoesThroughTheOwnerWhileItsClientWrites) {
  std::unique_ptr<volume::Volume> va, vb;
  std::map<uint64_t, uint32_t> written;
  ASSERT_NO_FATAL_FAILURE(ServedClone(&va, &vb, &written));
  const uint64_t epoch = va->epoch();

  // host-a's client writes all along; the writes land in what c shares.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  Status write_error;
  std::map<uint64_t, uint32_t> late;
  std::thread writer([&] {
    std::mt19937 rng(11);
    for (uint32_t tag = 2; !stop.load(); tag++) {
      const uint64_t blk = rng() % kGoldBlocks;
      Status s = va->Write(blk * kBlock, Pattern(tag));
      if (!s.ok()) {
        write_error = s;
        return;
      }
      late[blk] = tag;
      writes++;
      if (tag % 16 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  while (writes.load() < 50) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const uint64_t writes_before = writes.load();
  std::vector<std::pair<uint64_t, uint64_t>> seen;
  auto r = RunFlatten(&store_, "c", 2000,
                      [&](uint64_t done, uint64_t total) { seen.emplace_back(done, total); });
  const uint64_t writes_during = writes.load() - writes_before;
  stop = true;
  writer.join();
  ASSERT_TRUE(write_error.ok()) << write_error.ToString();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "host-a");
  EXPECT_GT(r->copied_blocks, 0u);
  EXPECT_GT(writes_during, 0u);
  // The owner did it and still owns c: no move, no new epoch.
  EXPECT_TRUE(Shared(va.get())->owner());
  EXPECT_EQ(va->epoch(), epoch);
  ASSERT_FALSE(seen.empty());
  for (size_t i = 0; i < seen.size(); i++) {
    EXPECT_LE(seen[i].first, seen[i].second);
    EXPECT_LE(seen[i].second, kGoldBlocks * kBlock);
    if (i > 0) {
      EXPECT_GE(seen[i].first, seen[i - 1].first);
    }
  }
  EXPECT_EQ(seen.back().first, seen.back().second);
  for (auto& [blk, tag] : late) written[blk] = tag;

  ASSERT_NO_FATAL_FAILURE(ExpectDetached());
  ASSERT_NO_FATAL_FAILURE(ExpectClone(va.get(), written, "c on host-a"));
  ASSERT_NO_FATAL_FAILURE(ExpectClone(vb.get(), written, "c on host-b"));
  ASSERT_TRUE(va->Close().ok());
  ASSERT_TRUE(vb->Close().ok());
  auto c = volume::Volume::Open(&store_, "c", volume::OpenOptions{});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_NO_FATAL_FAILURE(ExpectClone(c->get(), written, "c reopened"));
  ASSERT_TRUE((*c)->Close().ok());
}

// A write on another server moves ownership mid-flatten: the flatten stops
// at once instead of holding that write (and this server's I/O) for its
// whole run, and flatten run again, through the new owner, finishes it.
TEST_F(TwoServers, AReleaseStopsARunningFlattenAndARunAgainFinishesIt) {
  std::unique_ptr<volume::Volume> va, vb;
  std::map<uint64_t, uint32_t> written;
  ASSERT_NO_FATAL_FAILURE(ServedClone(&va, &vb, &written));

  std::thread taker;
  Status took;
  int64_t took_ms = -1;
  int calls = 0;
  auto r = va->Flatten([&](uint64_t, uint64_t) {
    if (++calls == 1) {
      taker = std::thread([&] {
        const auto start = std::chrono::steady_clock::now();
        took = vb->Write(5 * kBlock, Pattern(5));
        took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
      });
    }
    // Slow: 8 pieces would take 1.6 s, far longer than a release.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return true;
  });
  taker.join();
  ASSERT_TRUE(took.ok()) << took.ToString();
  written[5] = 5;
  EXPECT_EQ(r.status().code(), Status::Code::kAborted) << r.status().ToString();
  EXPECT_NE(r.status().message().find("gave the volume up"), std::string::npos)
      << r.status().ToString();
  EXPECT_LT(calls, 8);
  EXPECT_LT(took_ms, 1000);
  EXPECT_TRUE(Shared(vb.get())->owner());
  EXPECT_FALSE(Shared(va.get())->owner());
  auto kids = volume::ListChildren(&store_, "vm", 0);
  ASSERT_TRUE(kids.ok());
  EXPECT_EQ(kids->size(), 1u);  // still a clone

  auto again = RunFlatten(&store_, "c", 2000, nullptr);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->server, "host-b");
  ASSERT_NO_FATAL_FAILURE(ExpectDetached());
  ASSERT_NO_FATAL_FAILURE(ExpectClone(va.get(), written, "c on host-a"));
  ASSERT_NO_FATAL_FAILURE(ExpectClone(vb.get(), written, "c on host-b"));
  ASSERT_TRUE(va->Close().ok());
  ASSERT_TRUE(vb->Close().ok());
}

// FLATTEN answers at once; a second one while it runs attaches to it; a
// Close of the volume does not wait for the flatten (it stops it), and its
// outcome is still answered after the close.
TEST_F(TwoServers, FlattenRunsInTheBackgroundAndACloseDoesNotWaitForIt) {
  std::unique_ptr<volume::Volume> va, vb;
  std::map<uint64_t, uint32_t> written;
  ASSERT_NO_FATAL_FAILURE(ServedClone(&va, &vb, &written));
  ASSERT_TRUE(vb->Close().ok());
  pb::Request req;
  req.set_type(pb::Request::FLATTEN);
  req.set_id(1);
  req.set_volume("c");
  pb::Reply first = a_->Handle(req);
  ASSERT_EQ(first.code(), pb::Reply::OK) << first.message();
  pb::Reply second = a_->Handle(req);
  ASSERT_EQ(second.code(), pb::Reply::OK) << second.message();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(va->Close().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));

  pb::Request st;
  st.set_type(pb::Request::FLATTEN_STATUS);
  st.set_id(2);
  st.set_volume("c");
  st.set_job(first.flatten().job());
  pb::Reply r = a_->Handle(st);
  ASSERT_EQ(r.code(), pb::Reply::OK);
  const pb::FlattenJob& job = r.flatten();
  if (second.flatten().job() != first.flatten().job()) {
    EXPECT_EQ(job.state(), pb::FlattenJob::DONE) << "a second job only after the first ended";
  }
  // Done before the close, or stopped by it; never still running.
  if (job.state() == pb::FlattenJob::FAILED) {
    EXPECT_EQ(Status::Code(job.status_code()), Status::Code::kAborted) << job.message();
    EXPECT_NE(job.message().find("gave the volume up"), std::string::npos) << job.message();
  } else {
    EXPECT_EQ(job.state(), pb::FlattenJob::DONE);
  }
  auto again = RunFlatten(&store_, "c", 2000, nullptr);  // nobody serves c now
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->server, "");
  ASSERT_NO_FATAL_FAILURE(ExpectDetached());
}

TEST_F(TwoServers, FlattenWithoutAnOwnerIsDoneByAServerReadingTheClone) {
  ASSERT_NO_FATAL_FAILURE(MakeClone());
  auto vb = b_->Open("c");  // a reader only
  ASSERT_TRUE(vb.ok());
  EXPECT_FALSE(Shared(vb->get())->owner());
  auto r = RunFlatten(&store_, "c", 2000, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "host-b");
  EXPECT_TRUE(Shared(vb->get())->owner());  // it became the owner to do it
  ASSERT_NO_FATAL_FAILURE(ExpectDetached());
  ASSERT_NO_FATAL_FAILURE(ExpectClone(vb->get(), {}, "c on host-b"));
  ASSERT_TRUE((*vb)->Close().ok());
}

TEST_F(TwoServers, FlattenWithoutAServerOpensTheCloneAndAStatusOfNoJobIsUnknown) {
  ASSERT_NO_FATAL_FAILURE(MakeClone());
  auto r = RunFlatten(&store_, "c", 2000, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->server, "");
  EXPECT_GT(r->copied_blocks, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectDetached());
  EXPECT_TRUE(RunFlatten(&store_, "nosuch", 2000, nullptr).status().IsNotFound());

  pb::Request req;
  req.set_type(pb::Request::FLATTEN_STATUS);
  req.set_id(1);
  req.set_volume("c");
  req.set_job(12345);
  pb::Reply rep = a_->Handle(req);
  EXPECT_EQ(rep.code(), pb::Reply::OK);
  EXPECT_EQ(rep.flatten().state(), pb::FlattenJob::UNKNOWN);
}

}  // namespace
}  // namespace hbiss::cluster

namespace hbiss::cluster {
namespace {

TEST_F(TwoServers, StatusRequestIsAnsweredByTheReporterAndOpenVolumesListsWhatIsOpen) {
  pb::Request req;
  req.set_type(pb::Request::STATUS);
  req.set_id(7);
  // No reporter yet: FAILED with NotSupported, not a hang or a bad request.
  auto none = PeerCall(a_->peer_address(), req, 2000);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->code(), pb::Reply::FAILED);
  EXPECT_EQ(none->status_code(), uint32_t(Status::Code::kNotSupported));

  a_->SetStatusReporter([] { return std::string("{\"ok\":true}"); });
  auto r = PeerCall(a_->peer_address(), req, 2000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->code(), pb::Reply::OK);
  EXPECT_EQ(r->status_json(), "{\"ok\":true}");
  EXPECT_EQ(r->server(), "host-a");
  a_->SetStatusReporter(nullptr);

  EXPECT_TRUE(a_->OpenVolumes().empty());
  auto va = a_->Open("vm");
  ASSERT_TRUE(va.ok());
  ASSERT_TRUE((*va)->Write(0, Pattern(1)).ok());
  auto open = a_->OpenVolumes();
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].name, "vm");
  EXPECT_TRUE(open[0].owner);
  EXPECT_EQ(open[0].info.size, 64ull << 20);
  ASSERT_TRUE((*va)->Close().ok());
  EXPECT_TRUE(a_->OpenVolumes().empty());
}

}  // namespace
}  // namespace hbiss::cluster
