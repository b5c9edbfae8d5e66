// The log-structured volume engine. See volume.h for the contract,
// doc/log_format.md, doc/checkpoint_format.md and doc/volume_meta.md for the
// formats, and /work/coord/VOLUME_DESIGN.md for the design.
//
// Threads and locks:
//  * write_mu_ serialises writers (Write/Trim/WriteZeroes), so the
//    read-modify-write of partial edge blocks is atomic against other writers.
//  * mu_ guards the extent map, the in-memory segments, the open batch, the
//    queue of sealed batches and the flush/durability state. Lock order:
//    clean_mu_ -> write_mu_ -> mu_ -> cache_mu_.
//  * One flusher thread owns the store SegmentWriter: it encodes sealed batch
//    headers, appends them, syncs for Flush callers (group commit), rolls
//    segments and writes periodic checkpoints. It takes mu_ only briefly.
//  * Reads look the map up under mu_, copy from in-memory segments under mu_,
//    and read closed segments from the store outside mu_, inside read_gate_
//    from the lookup to the end of the read.
//  * One cleaner thread (and Clean callers, one at a time under clean_mu_)
//    copies live blocks out of mostly-dead segments through the write path
//    (write_mu_ -> mu_) and deletes dead segments; before a delete it waits
//    for the reads already inside read_gate_, so none still holds an old
//    location.
#include "volume/volume.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "util/crc32c.h"
#include "volume/batch_builder.h"
#include "volume/checkpoint.h"
#include "volume/chunk_cache.h"
#include "volume/extent_map.h"
#include "volume/log_format.h"

namespace hbiss::volume {

namespace {

constexpr size_t kMaxInMemorySegments = 3;    // open + being closed
// CRC tables of closed segments kept for reads: 64 KiB each for 64 MiB
// segments, so 512 of them cover 32 GiB of log in 32 MiB.
constexpr size_t kSegInfoCacheEntries = 512;
// The read cache (OpenOptions::cache_bytes) holds 64 KiB chunks of closed
// segments; reads of 256 KiB or more go around it (sequential streams are
// cheap on HDFS and would only push out the small, hot data).
constexpr uint64_t kCacheChunkSlots = 16;
constexpr uint64_t kCacheBypassBytes = 256 << 10;
constexpr uint64_t kMaxCheckpointBytes = 1ull << 34;
constexpr uint32_t kMetaVersion = 1;

std::string VolDir(const std::string& name) { return "volumes/" + name; }
std::string MetaName(const std::string& name) { return VolDir(name) + "/meta"; }
std::string LockName(const std::string& name) { return VolDir(name) + "/lock"; }
std::string SegDir(const std::string& name) { return VolDir(name) + "/seg"; }
std::string CkptDir(const std::string& name) { return VolDir(name) + "/ckpt"; }
std::string SegName(const std::string& name, uint64_t id) {
  return SegDir(name) + "/" + Hex16(id);
}
std::string SumName(const std::string& name, uint64_t id) {
  return VolDir(name) + "/sum/" + Hex16(id);
}
std::string CkptName(const std::string& name, uint64_t seq) {
  return CkptDir(name) + "/" + Hex16(seq);
}

struct Meta {
  uint64_t id = 0;
  uint64_t size = 0;
  uint64_t segment_size = 0;
  int64_t created = 0;
};

std::string EncodeMeta(const Meta& m) {
  nlohmann::json j;
  j["format"] = "hbiss-volume";
  j["version"] = kMetaVersion;
  j["id"] = Hex16(m.id);
  j["size"] = m.size;
  j["block_size"] = kBlockSize;
  j["segment_size"] = m.segment_size;
  j["created"] = m.created;
  return j.dump(2) + "\n";
}

Result<Meta> DecodeMeta(const std::string& text, const std::string& name) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const char* why) {
    return Status::Corruption("volume " + name + ": meta " + why);
  };
  if (j.is_discarded() || !j.is_object()) return bad("is not a JSON object");
  if (!j.contains("format") || j["format"] != "hbiss-volume") return bad("has a wrong format tag");
  if (!j.contains("version") || !j["version"].is_number_unsigned()) return bad("has no version");
  if (j["version"].get<uint64_t>() > kMetaVersion) {
    return Status::NotSupported("volume " + name + ": meta version " +
                                std::to_string(j["version"].get<uint64_t>()) +
                                " is newer than this build supports");
  }
  Meta m;
  if (!j.contains("id") || !j["id"].is_string() ||
      !ParseHex16(j["id"].get<std::string>(), &m.id) || m.id == 0) {
    return bad("has a bad id");
  }
  for (const char* k : {"size", "block_size", "segment_size"}) {
    if (!j.contains(k) || !j[k].is_number_unsigned()) return bad("lacks a numeric field");
  }
  m.size = j["size"].get<uint64_t>();
  m.segment_size = j["segment_size"].get<uint64_t>();
  if (j["block_size"].get<uint64_t>() != kBlockSize) return bad("has an unsupported block size");
  if (m.size == 0 || m.size % kBlockSize != 0 || m.size > kMaxVolumeSize) return bad("has a bad size");
  if (m.segment_size % kSlotSize != 0 || m.segment_size / kSlotSize < kMinSegmentSlots ||
      m.segment_size / kSlotSize > kMaxSegmentSlots) {
    return bad("has a bad segment size");
  }
  if (j.contains("created") && j["created"].is_number_integer()) m.created = j["created"];
  return m;
}

Result<Meta> ReadMeta(store::Store* store, const std::string& name) {
  auto text = store->Get(MetaName(name), 1 << 20);
  if (!text.ok()) {
    if (text.status().IsNotFound()) {
      return Status::NotFound("volume " + name + " does not exist");
    }
    return text.status().WithContext("volume " + name + ": reading meta");
  }
  return DecodeMeta(*text, name);
}

// Lists the ids of the objects under `dir` whose names are 16 hex digits,
// sorted. A missing directory is empty.
Result<std::vector<std::pair<uint64_t, uint64_t>>> ListIds(store::Store* store,
                                                         const std::string& dir) {
  std::vector<std::pair<uint64_t, uint64_t>> ids;  // (id, size)
  auto list = store->List(dir);
  if (!list.ok()) {
    if (list.status().IsNotFound()) return ids;
    return list.status();
  }
  for (const auto& o : *list) {
    uint64_t id;
    if (!o.is_dir && ParseHex16(o.name, &id) && id != 0) ids.push_back({id, o.size});
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

// Reads exactly out.size() bytes at offset. Corruption when the object is
// shorter. Errors are named by what(), which is called only on failure, so
// the read path builds no message for the common case.
template <typename WhatFn>
Status ReadExact(store::SegmentReader* r, uint64_t offset, std::span<uint8_t> out,
                 const WhatFn& what) {
  size_t done = 0;
  while (done < out.size()) {
    auto n = r->ReadAt(offset + done, out.subspan(done));
    if (!n.ok()) return n.status().WithContext(what());
    if (*n == 0) {
      return Status::Corruption(what() + " ends at " + std::to_string(offset + done) +
                                ", before the " + std::to_string(out.size()) + " bytes at " +
                                std::to_string(offset));
    }
    done += *n;
  }
  return Status::OK();
}

Status ReadExact(store::SegmentReader* r, uint64_t offset, std::span<uint8_t> out,
                 const std::string& what) {
  return ReadExact(r, offset, out, [&] { return what; });
}

// Loads the newest checkpoint that decodes with a good CRC, newest first.
// Returns false in *found when none does. Corrupt ones are skipped (logged).
Status LoadNewestCheckpoint(store::Store* store, const std::string& name, const Meta& meta,
                            CheckpointInfo* info, ExtentMap* map, bool* found,
                            std::vector<uint64_t>* all_seqs) {
  *found = false;
  HBISS_ASSIGN_OR_RETURN(auto ids, ListIds(store, CkptDir(name)));
  if (all_seqs) {
    for (auto& [id, size] : ids) all_seqs->push_back(id);
  }
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    std::string obj = CkptName(name, it->first);
    auto data = store->Get(obj, kMaxCheckpointBytes);
    if (!data.ok()) {
      if (data.status().IsNotFound()) continue;
      return data.status().WithContext("volume " + name + ": reading " + obj);
    }
    if (map) map->Reset();
    Status s = DecodeCheckpoint(*data, info, map);
    if (s.ok() && (info->volume_id != meta.id || info->volume_size != meta.size ||
                   info->seq != it->first)) {
      s = Status::Corruption("checkpoint belongs to another volume or name");
    }
    if (s.ok()) {
      *found = true;
      return Status::OK();
    }
    if (!s.IsCorruption()) return s.WithContext("volume " + name + ": " + obj);
    spdlog::warn("volume {}: skipping checkpoint {}: {}", name, obj, s.ToString());
  }
  if (map) map->Reset();
  return Status::OK();
}

// Lets a deleter wait until every read that began before it has ended,
// without ever blocking a reader (a reader-preferring rwlock would let a
// steady stream of reads starve the deleter).
class ReadGate {
 public:
  class Pass {
   public:
    explicit Pass(ReadGate& g) : g_(g), i_(g.Enter()) {}
    ~Pass() { g_.in_[i_].fetch_sub(1); }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

   private:
    ReadGate& g_;
    int i_;
  };

  // Returns once every Pass made before the call is gone. REQUIRES: one
  // caller at a time.
  void WaitForEarlierReads() {
    const uint64_t g = gen_.fetch_add(1);
    while (in_[g & 1].load() != 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }

 private:
  int Enter() {
    for (;;) {
      const uint64_t g = gen_.load();
      in_[g & 1].fetch_add(1);
      if (gen_.load() == g) return int(g & 1);
      in_[g & 1].fetch_sub(1);  // a deleter moved on meanwhile: join the new generation
    }
  }

  std::atomic<uint64_t> gen_{0};
  std::atomic<int64_t> in_[2] = {0, 0};
};

// Cached per closed segment: a reader and the CRC of every data slot.
struct SegInfo {
  std::mutex mu;  // guards reader creation
  std::shared_ptr<store::SegmentReader> reader;
  std::vector<uint32_t> crcs;
  std::vector<bool> valid;  // slot has a CRC from a valid batch header
};

// A segment whose bytes are kept in memory: the open one, and closed ones
// until the flusher has closed them in the store.
struct MemSegment {
  uint64_t id = 0;
  uint32_t slots = 0;
  std::unique_ptr<uint8_t[]> buf;  // slots * kSlotSize
  uint32_t used = 1;               // slots allocated (slot 0 is the header)
  std::vector<uint32_t> crcs;      // data slot CRCs, filled by the flusher
  std::vector<bool> valid;
  uint64_t closed_bytes = 0;       // object size once the flusher closed it (0: not closed)
  uint8_t* Slot(uint32_t i) { return buf.get() + size_t(i) * kSlotSize; }
};

struct QueueItem {
  std::shared_ptr<MemSegment> seg;
  bool end_of_segment = false;  // marker: no more batches in seg
  uint32_t header_slot = 0;
  uint32_t data_slots = 0;
  uint64_t seq = 0;
  std::vector<BatchEntry> entries;
};

struct PendingEntry {
  BatchEntry e;
  uint32_t seg = 0;
  uint32_t slot = 0;
};

struct BlockSpan;  // defined with Write below

class VolumeImpl final : public Volume {
 public:
  VolumeImpl(store::Store* store, std::string name, Meta meta, OpenOptions opts,
             std::unique_ptr<store::Lock> lock)
      : store_(store),
        name_(std::move(name)),
        meta_(meta),
        opts_(opts),
        lock_(std::move(lock)),
        seg_slots_(uint32_t(meta.segment_size / kSlotSize)),
        map_(meta.size / kBlockSize) {
    if (opts.cache_bytes > 0 && !store->CachesReadsLocally()) {
      chunks_ = std::make_unique<ChunkCache>(opts.cache_bytes);
    }
  }

  ~VolumeImpl() override {
    Status s = Close();
    if (!s.ok() && s.code() != Status::Code::kAborted) {
      spdlog::warn("volume {}: close on destruction: {}", name_, s.ToString());
    }
  }

  Status Recover();
  void Start();
  // After Start: makes operations that recovery logged again durable, so
  // what Open shows never goes back after a later crash. (Normally they are
  // durable already: PutRelogSegmentLocked wrote them whole.)
  Status FinishOpen() { return relogged_ ? Flush() : Status::OK(); }

  uint64_t size() const override { return meta_.size; }
  const std::string& name() const override { return name_; }
  bool read_only() const override { return opts_.read_only; }

  Status Read(uint64_t offset, std::span<uint8_t> out) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Trim(uint64_t offset, uint64_t length) override {
    return Unmap(offset, length, EntryType::kTrim);
  }
  Status WriteZeroes(uint64_t offset, uint64_t length) override {
    return Unmap(offset, length, EntryType::kZero);
  }
  Status Flush() override;
  Result<std::vector<Extent>> BlockStatus(uint64_t offset, uint64_t length) override;
  VolumeInfo Info() const override;
  Status Close() override;

 private:
  Status CheckRange(uint64_t offset, uint64_t length) const {
    if (offset > meta_.size || length > meta_.size - offset) {
      return Status::InvalidArgument("range [" + std::to_string(offset) + ", +" +
                                     std::to_string(length) + ") is outside volume " + name_ +
                                     " of " + std::to_string(meta_.size) + " bytes");
    }
    return Status::OK();
  }
  Status WritableLocked() const;
  Status Unmap(uint64_t offset, uint64_t length, EntryType type);
  // Reads the partly covered edge blocks of `b` into head / tail.
  Status ReadEdges(const BlockSpan& b, uint8_t* head, uint8_t* tail);
  // Appends one whole operation over the blocks of `b`: the partial edge
  // blocks as writes of `head` / `tail`, and the full blocks between them
  // through middle(first_lba, count, is_last_part). REQUIRES: write_mu_ and
  // mu_ (held by l).
  using MiddleFn = std::function<Status(uint64_t, uint64_t, bool)>;
  Status AppendOpLocked(std::unique_lock<std::mutex>& l, const BlockSpan& b,
                        const uint8_t* head, const uint8_t* tail, const MiddleFn& middle);

  // --- recovery ---
  Status ReplaySegment(store::SegmentReader* r, uint64_t seg_id, uint64_t from,
                       const uint64_t* limit, uint64_t* seq, uint64_t* end);
  void ApplyEntry(const PendingEntry& p);

  // --- write path; all REQUIRE mu_ held via `l` ---
  Status OpenBatchLocked(std::unique_lock<std::mutex>& l);
  void SealBatchLocked();
  Status RollSegmentLocked(std::unique_lock<std::mutex>& l);
  Status AppendWriteLocked(std::unique_lock<std::mutex>& l, uint64_t lba, uint64_t n,
                           const uint8_t* src, bool last_part);
  Status AppendUnmapLocked(std::unique_lock<std::mutex>& l, EntryType type, uint64_t lba,
                           uint64_t n, bool last_part);
  // Live-block accounting. ForgetBlocksLocked must run before the map
  // changes blocks [lba, lba+n): it takes their old locations off the
  // counts. REQUIRES: mu_ held.
  void CountLiveLocked();
  void ForgetBlocksLocked(uint64_t lba, uint64_t n);
  std::shared_ptr<MemSegment> NewMemSegmentLocked(uint64_t id, uint64_t prev_id,
                                                  uint64_t prev_end, uint32_t flags = 0);
  // A segment that is now closed in the store (synced): its CRC table goes to
  // the read side, reads go to the store from now on, its buffer is kept for
  // a later segment when the caller holds the only reference, and it is
  // noted dead when no block lives in it. REQUIRES: mu_ held; seg is not cur_.
  void RetireSegmentLocked(const std::shared_ptr<MemSegment>& seg);
  Status Relog(uint64_t seg_id, size_t first_batch, bool pending);
  Status PutRelogSegmentLocked(std::unique_lock<std::mutex>& l);
  LogPosition SealedEndLocked() const;
  // The header of the next checkpoint: it covers the log up to the end of the
  // last sealed batch. REQUIRES: mu_ held.
  CheckpointInfo NextCheckpointInfoLocked() const;

  // --- flusher ---
  void FlusherLoop();
  Status ProcessItem(QueueItem& item, std::vector<std::shared_ptr<MemSegment>>* closed);
  // Puts a checkpoint encoded from `ci`, then deletes all but the newest two.
  Status WriteCheckpoint(const std::string& data, const CheckpointInfo& ci);
  // Stores the CRC table of closed segment `seg` (`bytes` long) as its
  // summary; a failure only costs a scan when the segment is next read.
  void PutSummary(const MemSegment& seg, uint64_t bytes);

  // --- cleaner ---
  void CleanerLoop();
  // Copies the live blocks of closed segment `seg` to the head of the log.
  // Corruption (and the segment is never tried again) if one fails its CRC.
  Status CleanSegment(uint64_t seg, CleanStats* stats);
  // The blocks of `seg` that the map points to, as runs. REQUIRES: seg is closed.
  Result<std::vector<MapRun>> LiveRunsOf(uint64_t seg);
  // The closed segment with the fewest live blocks among those with some
  // and a live fraction below `threshold`, below `below_id`; 0 if none.
  uint64_t PickVictimLocked(double threshold, uint64_t below_id) const;
  bool DeletableLocked(uint64_t seg) const;
  // Dead segments that wait for a checkpoint before they can be deleted.
  uint64_t DeadWaitingLocked() const;
  Status DeleteDeadSegments(CleanStats* stats);
  // Has the flusher write a checkpoint now and waits for it.
  Status CheckpointNow();
  Result<CleanStats> Clean(double threshold) override;

  // --- reads ---
  // Calls fn(offset, header) for each valid batch header of `seg`, in order,
  // until the first that is not one (the end of the segment's log).
  Status ScanBatchHeaders(uint64_t seg, store::SegmentReader* reader,
                          const std::function<void(uint64_t, const BatchHeader&)>& fn);
  Result<std::shared_ptr<SegInfo>> GetSegInfo(uint64_t seg);
  Result<std::shared_ptr<SegInfo>> LoadSegInfo(uint64_t seg);
  void CacheSegInfo(uint64_t seg, std::shared_ptr<SegInfo> info);
  Status ReadFromStore(const MapRun& r, uint64_t offset, std::span<uint8_t> out);
  // Reads slots [slot0, slot0 + n) of closed segment `seg` into dst, through
  // the chunk cache when there is one and the read is small.
  Status ReadSlots(uint64_t seg, store::SegmentReader* reader, uint32_t slot0, uint64_t n,
                   uint8_t* dst);

  store::Store* const store_;
  const std::string name_;
  const Meta meta_;
  const OpenOptions opts_;
  std::unique_ptr<store::Lock> lock_;
  const uint32_t seg_slots_;

  std::mutex write_mu_;  // serialises writers (RMW atomicity)

  mutable std::mutex mu_;
  std::condition_variable flusher_cv_;  // wakes the flusher
  std::condition_variable done_cv_;     // durability / space / failure changes
  ExtentMap map_;                                       // GUARDED_BY(mu_)
  std::map<uint64_t, std::shared_ptr<MemSegment>> mem_segs_;  // GUARDED_BY(mu_)
  std::shared_ptr<MemSegment> cur_;                     // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<uint8_t[]>> spare_bufs_;  // GUARDED_BY(mu_)
  std::vector<uint64_t> segment_ids_;                   // GUARDED_BY(mu_)
  BatchBuilder batch_;  // the open batch; GUARDED_BY(mu_)
  uint64_t next_seq_ = 1;
  uint64_t last_sealed_seq_ = 0;
  std::deque<QueueItem> queue_;
  uint64_t flush_target_ = 0;   // a Flush waits for batches <= this seq
  uint64_t durable_seq_ = 0;    // batches <= this are synced
  uint64_t log_bytes_ = 0;      // bytes in all segment files (as appended)
  uint64_t segment_files_ = 0;  // segment objects in the store
  uint64_t ckpt_log_mark_ = 0;  // log_bytes_ at the last checkpoint
  uint64_t ckpt_seq_ = 0;       // newest checkpoint written or loaded
  // Blocks of each segment that the map points to; absent means none. Kept
  // for writable volumes from the end of recovery on. GUARDED_BY(mu_)
  std::unordered_map<uint64_t, uint64_t> live_blocks_;
  // Closed segments whose last live block went away: the flusher tells the
  // store it may drop their cached bytes. GUARDED_BY(mu_)
  std::vector<uint64_t> dead_segs_;
  std::vector<MapRun> old_runs_;  // scratch of ForgetBlocksLocked; GUARDED_BY(mu_)
  std::vector<uint64_t> ckpt_seqs_;  // existing checkpoint objects, increasing
  // What the checkpoints this process wrote or loaded need: replay starts in
  // segment pos_seg, and their runs point into listed segments only.
  struct KnownCheckpoint {
    uint64_t pos_seg = 0;
    std::vector<uint64_t> listed;  // increasing
  };
  std::map<uint64_t, KnownCheckpoint> ckpt_known_;  // by seq; GUARDED_BY(mu_)
  uint64_t log_appended_ = 0;   // log_bytes_ without deletions, for checkpoint_interval
  bool ckpt_requested_ = false;  // the flusher writes a checkpoint soon
  uint64_t ckpts_encoded_ = 0;   // checkpoints the flusher encoded
  uint64_t ckpts_done_ = 0;      // ... and then tried to write
  Status ckpt_status_;           // ... and how the last one went
  // Segment objects that are not in segment_ids_ (deletion candidates).
  std::set<uint64_t> orphans_;  // GUARDED_BY(mu_)
  std::set<uint64_t> unclean_;  // segments where cleaning met corruption
  std::set<uint64_t> summarizing_;  // closed, their summary not yet Put; GUARDED_BY(mu_)
  CleanStats clean_totals_;     // GUARDED_BY(mu_)
  bool cleaner_stop_ = false;   // GUARDED_BY(mu_)
  std::condition_variable cleaner_cv_;
  std::chrono::steady_clock::time_point last_forced_ckpt_{};
  std::chrono::steady_clock::duration ckpt_encode_time_{};  // of the last checkpoint
  std::chrono::steady_clock::duration ckpt_cost_{};  // its encoding and writing; GUARDED_BY(mu_)
  std::thread cleaner_;
  std::mutex clean_mu_;            // one cleaning pass at a time
  ReadGate read_gate_;              // see the top of this file
  Status failed_;               // set once the flusher failed
  bool stop_ = false;
  bool closed_ = false;
  bool started_ = false;
  std::thread flusher_;

  // Flusher-owned.
  std::unique_ptr<store::SegmentWriter> writer_;
  uint64_t writer_seg_ = 0;
  LogPosition appended_pos_;
  uint64_t appended_seq_ = 0;
  LogPosition durable_pos_;
  BatchHeader scratch_header_;

  // Recovery scratch.
  std::vector<PendingEntry> pending_op_;
  struct TailBatch {  // a valid batch of the last segment, as replayed
    uint64_t off = 0;
    uint64_t seq = 0;
    bool pending_before = false;  // an operation was incomplete before it
    std::vector<BatchEntry> entries;
    std::vector<uint32_t> crcs;  // of its data slots
  };
  std::vector<TailBatch> tail_batches_;
  uint64_t tail_proven_ = 0;  // largest synced_upto offset inside the last segment
  bool relogged_ = false;

  // Closed-segment data, on stores without a local cache (null otherwise).
  std::unique_ptr<ChunkCache> chunks_;

  // Closed-segment cache.
  std::mutex cache_mu_;
  std::list<uint64_t> lru_;  // most recent first
  std::unordered_map<uint64_t, std::pair<std::shared_ptr<SegInfo>, std::list<uint64_t>::iterator>>
      cache_;
};

// ---------------------------------------------------------------------------
// Recovery

void VolumeImpl::ApplyEntry(const PendingEntry& p) {
  if (p.e.type == EntryType::kWrite) {
    map_.Set(p.e.lba, p.e.count, p.seg, p.slot);
  } else {
    map_.Clear(p.e.lba, p.e.count);
  }
}

// Replays batches of one segment starting at `from`. With `limit`, the
// segment is followed by another one that says its valid log ends at
// *limit: everything up to there must be valid. Without, this is the last
// segment: the first bad batch is the torn tail, unless a later batch proves
// it had been synced.
Status VolumeImpl::ReplaySegment(store::SegmentReader* r, uint64_t seg_id, uint64_t from,
                                 const uint64_t* limit, uint64_t* seq, uint64_t* end) {
  const std::string where = "volume " + name_ + " segment " + Hex16(seg_id);
  uint64_t off = from;
  uint64_t size = r->Size();
  std::vector<uint8_t> slot(kSlotSize);
  std::vector<uint8_t> data;
  BatchHeader& h = scratch_header_;
  if (limit == nullptr) {
    tail_batches_.clear();
    tail_proven_ = 0;
  }
  auto corrupt = [&](const std::string& why) {
    return Status::Corruption(where + ": bad batch at offset " + std::to_string(off) + ": " + why);
  };
  for (;;) {
    if (limit != nullptr) {
      if (off == *limit) break;
      if (off > *limit) return corrupt("log runs past the end named by the next segment");
    }
    Status bad;
    bool have_header = false;
    if (off + kSlotSize > size) {
      bad = Status::Corruption("segment ends inside a batch header");
    } else {
      HBISS_RETURN_IF_ERROR(ReadExact(r, off, slot, where));
      bad = DecodeBatchHeader(slot, &h);
      if (bad.IsNotSupported()) return bad.WithContext(where);
      if (bad.ok()) {
        have_header = true;
        if (h.volume_id != meta_.id) bad = Status::Corruption("batch of another volume");
        else if (h.segment_id != seg_id) bad = Status::Corruption("batch of another segment");
        else if (h.seq != *seq) {
          bad = Status::Corruption("batch seq " + std::to_string(h.seq) + ", expected " +
                                   std::to_string(*seq));
        }
      }
    }
    uint64_t batch_end = off + kSlotSize + uint64_t(h.data_crcs.size()) * kSlotSize;
    if (bad.ok() && have_header) {
      if (batch_end > uint64_t(seg_slots_) * kSlotSize) {
        bad = Status::Corruption("batch runs past the volume's segment size");
      } else if (batch_end > size) {
        bad = Status::Corruption("segment ends inside the batch's data");
      } else if (limit == nullptr && !h.data_crcs.empty()) {
        // The tail segment: a batch counts only if all its data arrived.
        data.resize(h.data_crcs.size() * kSlotSize);
        HBISS_RETURN_IF_ERROR(ReadExact(r, off + kSlotSize, data, where));
        for (size_t i = 0; i < h.data_crcs.size(); i++) {
          if (DataSlotCrc(data.data() + i * kSlotSize) != h.data_crcs[i]) {
            bad = Status::Corruption("data slot " + std::to_string(i) + " CRC mismatch");
            break;
          }
        }
      }
    }
    if (!bad.ok()) {
      if (limit != nullptr) return corrupt(bad.message());
      // Torn tail, unless a later valid batch says the log was durable
      // beyond this point.
      LogPosition here{seg_id, off};
      std::vector<uint8_t> buf(256 * kSlotSize);
      for (uint64_t p = off + kSlotSize; p < size; p += buf.size()) {
        size_t want = size_t(std::min<uint64_t>(buf.size(), size - p));
        want -= want % kSlotSize;
        if (want == 0) break;
        HBISS_RETURN_IF_ERROR(ReadExact(r, p, std::span<uint8_t>(buf.data(), want), where));
        for (size_t i = 0; i < want; i += kSlotSize) {
          BatchHeader later;
          if (!DecodeBatchHeader(std::span<const uint8_t>(buf.data() + i, kSlotSize), &later)
                   .ok()) {
            continue;
          }
          if (later.volume_id == meta_.id && later.segment_id == seg_id && later.seq > *seq &&
              later.synced_upto > here) {
            return corrupt(bad.message() + "; a later batch (seq " + std::to_string(later.seq) +
                           ") shows it had been synced");
          }
        }
      }
      if (off < size) {
        spdlog::info("{}: log ends at offset {} (torn tail: {})", where, off, bad.message());
      }
      break;
    }
    if (limit == nullptr) {
      tail_batches_.push_back(TailBatch{off, h.seq, !pending_op_.empty(), h.entries,
                                        h.data_crcs});
      if (h.synced_upto.segment_id == seg_id) {
        tail_proven_ = std::max(tail_proven_, h.synced_upto.offset);
      }
    }
    // Apply: an operation takes effect when its last entry is read.
    uint32_t slot_idx = uint32_t(off / kSlotSize) + 1;
    for (const BatchEntry& e : h.entries) {
      spdlog::trace("replay seg {} off {} seq {}: type {} lba {} count {} cont {}", seg_id, off,
                    h.seq, int(e.type), e.lba, e.count, e.continues);
      PendingEntry p{e, uint32_t(seg_id), slot_idx};
      if (e.lba + e.count > map_.blocks()) return corrupt("entry beyond the volume's end");
      if (e.type == EntryType::kWrite) slot_idx += e.count;
      pending_op_.push_back(p);
      if (!e.continues) {
        for (const PendingEntry& q : pending_op_) ApplyEntry(q);
        pending_op_.clear();
      }
    }
    off = batch_end;
    (*seq)++;
  }
  *end = off;
  return Status::OK();
}

Status VolumeImpl::Recover() {
  CheckpointInfo ck;
  bool found = false;
  HBISS_RETURN_IF_ERROR(
      LoadNewestCheckpoint(store_, name_, meta_, &ck, &map_, &found, &ckpt_seqs_));
  LogPosition pos{0, 0};
  uint64_t seq = 1;
  if (found) {
    pos = ck.position;
    seq = ck.next_seq;
    ckpt_seq_ = ck.seq;
    segment_ids_ = ck.segment_ids;
    ckpt_known_[ck.seq] = KnownCheckpoint{ck.position.segment_id, ck.segment_ids};
  }
  // New checkpoints must sort after every existing one, corrupt ones too.
  for (uint64_t s : ckpt_seqs_) ckpt_seq_ = std::max(ckpt_seq_, s);
  HBISS_ASSIGN_OR_RETURN(auto seg_list, ListIds(store_, SegDir(name_)));
  std::map<uint64_t, uint64_t> seg_sizes(seg_list.begin(), seg_list.end());
  for (uint64_t id : segment_ids_) {
    if (!seg_sizes.count(id)) {
      return Status::Corruption("volume " + name_ + ": segment " + Hex16(id) +
                                " named by checkpoint " + Hex16(ck.seq) + " is missing");
    }
  }
  for (auto& [id, sz] : seg_sizes) log_bytes_ += sz;
  segment_files_ = seg_sizes.size();
  log_appended_ = ckpt_log_mark_ = log_bytes_;
  uint64_t max_id = seg_list.empty() ? 0 : seg_list.back().first;
  const uint64_t c = pos.segment_id;

  // Read the headers of every segment at or after the checkpoint's.
  struct Seg {
    SegmentHeader header;
    bool valid = false;
  };
  std::map<uint64_t, Seg> segs;
  for (auto& [id, sz] : seg_sizes) {
    if (id < c || (c == 0 && id == 0)) continue;
    // Readers are not kept: there may be many segments to look at.
    Seg s;
    auto r = store_->Open(SegName(name_, id));
    if (!r.ok()) return r.status().WithContext("volume " + name_ + ": opening segment");
    std::vector<uint8_t> slot(kSlotSize);
    auto n = (*r)->ReadAt(0, slot);
    if (!n.ok()) return n.status().WithContext("volume " + name_ + ": reading segment header");
    if (*n >= kSegmentHeaderBytes) {
      auto h = DecodeSegmentHeader(std::span<const uint8_t>(slot.data(), *n));
      if (h.status().IsNotSupported()) return h.status();
      if (h.ok() && h->volume_id == meta_.id && h->segment_id == id) {
        s.header = *h;
        s.valid = true;
      }
    }
    segs.emplace(id, std::move(s));
  }
  // The chain: from the newest segment with a valid header back to the
  // checkpoint's segment, following prev_segment_id.
  std::vector<uint64_t> chain;
  for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
    if (it->first > c && it->second.valid) {
      chain.push_back(it->first);
      break;
    }
  }
  while (!chain.empty()) {
    const SegmentHeader& h = segs[chain.back()].header;
    if (h.prev_segment_id == c) break;
    if (h.prev_segment_id < c || h.prev_segment_id >= chain.back()) {
      return Status::Corruption("volume " + name_ + ": segment " + Hex16(chain.back()) +
                                " follows segment " + Hex16(h.prev_segment_id) +
                                ", which is not in the log after the checkpoint");
    }
    auto p = segs.find(h.prev_segment_id);
    if (p == segs.end() || !p->second.valid) {
      return Status::Corruption("volume " + name_ + ": segment " + Hex16(h.prev_segment_id) +
                                " (before segment " + Hex16(chain.back()) +
                                ") is missing or has a damaged header");
    }
    chain.push_back(h.prev_segment_id);
  }
  std::reverse(chain.begin(), chain.end());

  uint64_t last_id = c;
  uint64_t last_end = pos.offset;
  if (c != 0) {
    auto it = segs.find(c);
    if (it == segs.end() || !it->second.valid) {
      return Status::Corruption("volume " + name_ + ": segment " + Hex16(c) +
                                " of the checkpoint is missing or has a damaged header");
    }
    const uint64_t* limit = nullptr;
    if (!chain.empty()) {
      limit = &segs[chain[0]].header.prev_segment_end;
      if (*limit < pos.offset) {
        return Status::Corruption("volume " + name_ + ": segment " + Hex16(chain[0]) +
                                  " says segment " + Hex16(c) +
                                  " ends before the checkpoint's position");
      }
    }
    auto r = store_->Open(SegName(name_, c));
    if (!r.ok()) return r.status().WithContext("volume " + name_ + ": opening segment");
    HBISS_RETURN_IF_ERROR(ReplaySegment(r->get(), c, pos.offset, limit, &seq, &last_end));
  }
  for (size_t i = 0; i < chain.size(); i++) {
    Seg& s = segs[chain[i]];
    if (s.header.first_seq != seq) {
      return Status::Corruption("volume " + name_ + ": segment " + Hex16(chain[i]) +
                                " starts at batch seq " + std::to_string(s.header.first_seq) +
                                ", expected " + std::to_string(seq));
    }
    if (s.header.flags & kSegmentDiscardPending) pending_op_.clear();
    const uint64_t* limit =
        i + 1 < chain.size() ? &segs[chain[i + 1]].header.prev_segment_end : nullptr;
    auto r = store_->Open(SegName(name_, chain[i]));
    if (!r.ok()) return r.status().WithContext("volume " + name_ + ": opening segment");
    HBISS_RETURN_IF_ERROR(ReplaySegment(r->get(), chain[i], kSlotSize, limit, &seq, &last_end));
    last_id = chain[i];
    if (std::find(segment_ids_.begin(), segment_ids_.end(), chain[i]) == segment_ids_.end()) {
      segment_ids_.push_back(chain[i]);
    }
  }
  spdlog::debug("volume {}: recovered from checkpoint {} at ({}, {}); chain of {} segments; "
                "log ends at ({}, {}) next seq {}; {} ops cut off",
                name_, found ? ck.seq : 0, pos.segment_id, pos.offset, chain.size(), last_id,
                last_end, seq, pending_op_.size());
  const bool cut_off = !pending_op_.empty();
  pending_op_.clear();  // an operation cut off by the end of the log never happened
  pending_op_.shrink_to_fit();
  if (max_id + 1 > ExtentMap::kMaxSeg) {
    return Status::NotSupported("volume " + name_ + ": segment ids exhausted");
  }
  if (opts_.read_only) return Status::OK();
  {
    std::lock_guard<std::mutex> g(mu_);
    CountLiveLocked();
  }

  // The log's valid tail may not be durable: after a process crash it can
  // sit in the page cache only. Building on it (a new segment naming it as
  // its predecessor's end) would turn a later power loss into corruption.
  // So the new segment continues from the last position proven synced (a
  // synced_upto in the last segment, or the checkpoint's position) and the
  // operations after that point are logged again into the new segment.
  LogPosition prev{last_id, last_end};
  uint64_t next = seq;
  size_t relog_from = tail_batches_.size();
  bool pending = cut_off;
  uint32_t inherited_flags = 0;
  if (last_id != 0 && !tail_batches_.empty()) {
    uint64_t proven = tail_proven_;
    if (last_id == c) proven = std::max(proven, pos.offset);
    if (proven < last_end) {
      relog_from = 0;
      while (relog_from < tail_batches_.size() && tail_batches_[relog_from].off < proven) {
        relog_from++;
      }
      const TailBatch& t = tail_batches_[relog_from];  // exists: proven < last_end
      next = t.seq;
      pending = t.pending_before;
      if (proven >= kSlotSize) {
        prev = {last_id, t.off};
      } else {
        // Nothing in the last segment is proven durable, not even its
        // header: skip it entirely (it becomes garbage off the chain).
        const SegmentHeader& lh = segs[last_id].header;
        prev = {lh.prev_segment_id, lh.prev_segment_end};
        // The new segment takes its place, so it must drop what it dropped.
        inherited_flags = lh.flags & kSegmentDiscardPending;
        segment_ids_.erase(std::remove(segment_ids_.begin(), segment_ids_.end(), last_id),
                           segment_ids_.end());
      }
    }
  }
  // Whether anything after relog_from completes an operation.
  bool completes = false;
  for (size_t i = relog_from; i < tail_batches_.size() && !completes; i++) {
    for (const BatchEntry& e : tail_batches_[i].entries) completes |= !e.continues;
  }
  next_seq_ = next;
  last_sealed_seq_ = next - 1;
  durable_seq_ = next - 1;
  flush_target_ = next - 1;
  appended_seq_ = next - 1;
  durable_pos_ = appended_pos_ = prev;
  {
    std::lock_guard<std::mutex> g(mu_);
    uint32_t flags = (pending && !completes) ? kSegmentDiscardPending : inherited_flags;
    cur_ = NewMemSegmentLocked(std::max(max_id, c) + 1, prev.segment_id, prev.offset, flags);
    // Segment objects outside the log as recovered: left out of the
    // checkpoint as dead, or cut off the chain. The cleaner deletes them
    // when no kept checkpoint needs them.
    for (auto& [id, sz] : seg_sizes) {
      if (std::find(segment_ids_.begin(), segment_ids_.end(), id) == segment_ids_.end()) {
        orphans_.insert(id);
      }
    }
  }
  if (relog_from < tail_batches_.size() && completes) {
    HBISS_RETURN_IF_ERROR(Relog(last_id, relog_from, pending));
  }
  tail_batches_.clear();
  tail_batches_.shrink_to_fit();
  return Status::OK();
}

// Logs the operations of tail_batches_[first..] again, into the new segment,
// up to the last complete one. `pending`: the first entry continues an
// operation begun before tail_batches_[first].
Status VolumeImpl::Relog(uint64_t seg_id, size_t first, bool pending) {
  // The last entry that ends an operation; entries after it were cut off.
  size_t last_b = 0, last_e = 0;
  bool any = false;
  for (size_t i = first; i < tail_batches_.size(); i++) {
    for (size_t j = 0; j < tail_batches_[i].entries.size(); j++) {
      if (!tail_batches_[i].entries[j].continues) {
        last_b = i;
        last_e = j;
        any = true;
      }
    }
  }
  if (!any) return Status::OK();
  auto r = store_->Open(SegName(name_, seg_id));
  if (!r.ok()) return r.status().WithContext("volume " + name_ + ": reopening segment");
  const std::string where = "volume " + name_ + " segment " + Hex16(seg_id);
  std::vector<uint8_t> data;
  size_t relogged = 0;
  std::unique_lock<std::mutex> l(mu_);
  if (pending) batch_.BeginOp();
  for (size_t i = first; i <= last_b; i++) {
    const TailBatch& t = tail_batches_[i];
    uint64_t slot = t.off / kSlotSize + 1;
    size_t crc_index = 0;
    for (size_t j = 0; j < t.entries.size() && (i < last_b || j <= last_e); j++) {
      const BatchEntry& e = t.entries[j];
      if (!batch_.op_in_progress()) batch_.BeginOp();
      if (e.type == EntryType::kWrite) {
        data.resize(size_t(e.count) * kSlotSize);
        l.unlock();
        Status rs = ReadExact(r->get(), slot * kSlotSize, data, where);
        l.lock();
        HBISS_RETURN_IF_ERROR(rs);
        for (uint32_t k = 0; k < e.count; k++) {
          // Replay checked these CRCs; check again, the bytes were read again.
          if (DataSlotCrc(data.data() + size_t(k) * kSlotSize) != t.crcs[crc_index + k]) {
            return Status::Corruption(where + ": CRC mismatch re-reading slot " +
                                      std::to_string(slot + k));
          }
        }
        crc_index += e.count;
        HBISS_RETURN_IF_ERROR(AppendWriteLocked(l, e.lba, e.count, data.data(), !e.continues));
        slot += e.count;
      } else {
        HBISS_RETURN_IF_ERROR(AppendUnmapLocked(l, e.type, e.lba, e.count, !e.continues));
      }
      if (!e.continues) batch_.EndOp();
      relogged++;
    }
    // One new batch per old one: it needs no more slots than the old batch
    // (same data, no more entries), so the re-log always fits in the new
    // segment, which starts no later in its segment than the tail did.
    SealBatchLocked();
  }
  batch_.EndOp();
  spdlog::info("volume {}: logged {} entries again from the unproven tail of segment {}", name_,
               relogged, Hex16(seg_id));
  if (relogged == 0) return Status::OK();
  return PutRelogSegmentLocked(l);
}

// The re-log segment is written whole with the store's atomic, durable Put,
// so a crash leaves it complete or absent, never a header with part of the
// re-logged batches (which would cut the tail off the chain: the operations
// a recovery had shown would be lost). Its batches say the whole segment is
// durable (synced_upto = its end), so a later recovery never logs it again.
// The live log then goes on in a fresh segment after it.
Status VolumeImpl::PutRelogSegmentLocked(std::unique_lock<std::mutex>& l) {
  std::shared_ptr<MemSegment> seg = cur_;
  bool only_seg = !batch_.active() && !queue_.empty() && mem_segs_.size() == 1;
  for (const QueueItem& item : queue_) only_seg &= !item.end_of_segment && item.seg == seg;
  if (!only_seg) {
    // Cannot happen (see Relog); fall back to streaming the re-log through
    // the flusher, which FinishOpen syncs.
    spdlog::warn("volume {}: re-log did not fit one segment; it is not written atomically",
                 name_);
    relogged_ = true;
    return Status::OK();
  }
  if (seg->id + 1 > ExtentMap::kMaxSeg) {
    return Status::NotSupported("volume " + name_ + ": segment ids exhausted");
  }
  const uint64_t end = uint64_t(seg->used) * kSlotSize;
  BatchHeader& h = scratch_header_;
  for (QueueItem& item : queue_) {
    h.volume_id = meta_.id;
    h.segment_id = seg->id;
    h.seq = item.seq;
    h.synced_upto = LogPosition{seg->id, end};
    h.entries = std::move(item.entries);
    h.data_crcs.resize(item.data_slots);
    for (uint32_t i = 0; i < item.data_slots; i++) {
      uint32_t s = item.header_slot + 1 + i;
      h.data_crcs[i] = seg->crcs[s] = DataSlotCrc(seg->Slot(s));
      seg->valid[s] = true;
    }
    HBISS_RETURN_IF_ERROR(
        EncodeBatchHeader(h, std::span<uint8_t, kSlotSize>(seg->Slot(item.header_slot), kSlotSize))
            .WithContext("volume " + name_ + ": re-log batch " + std::to_string(item.seq)));
  }
  const std::string obj = SegName(name_, seg->id);
  l.unlock();  // no other thread runs before Start(); the Put may take a while
  Status s = store_->Put(obj, std::span<const uint8_t>(seg->Slot(0), end));
  l.lock();
  HBISS_RETURN_IF_ERROR(s.WithContext("volume " + name_ + ": writing re-log segment " + obj));
  queue_.clear();
  log_bytes_ += end;
  log_appended_ += end;
  segment_files_++;
  appended_pos_ = durable_pos_ = LogPosition{seg->id, end};
  appended_seq_ = durable_seq_ = flush_target_ = last_sealed_seq_;
  cur_.reset();
  RetireSegmentLocked(seg);
  cur_ = NewMemSegmentLocked(seg->id + 1, seg->id, end);
  relogged_ = false;
  return Status::OK();
}

void VolumeImpl::RetireSegmentLocked(const std::shared_ptr<MemSegment>& seg) {
  // The table is cached before the segment leaves memory, so no read finds
  // neither.
  auto info = std::make_shared<SegInfo>();
  info->crcs = seg->crcs;
  info->valid = seg->valid;
  CacheSegInfo(seg->id, std::move(info));
  mem_segs_.erase(seg->id);
  if (!live_blocks_.count(seg->id)) dead_segs_.push_back(seg->id);
  // Keep the buffer for the next segment while that allocates no more than
  // the in-memory limit: a fresh one costs a page fault per 4 KiB.
  if (mem_segs_.size() + spare_bufs_.size() < kMaxInMemorySegments && seg.use_count() == 1 &&
      seg->buf) {
    spare_bufs_.push_back(std::move(seg->buf));
  }
}

std::shared_ptr<MemSegment> VolumeImpl::NewMemSegmentLocked(uint64_t id, uint64_t prev_id,
                                                            uint64_t prev_end, uint32_t flags) {
  auto s = std::make_shared<MemSegment>();
  s->id = id;
  s->slots = seg_slots_;
  if (!spare_bufs_.empty()) {
    s->buf = std::move(spare_bufs_.back());
    spare_bufs_.pop_back();
  } else {
    s->buf.reset(new uint8_t[size_t(seg_slots_) * kSlotSize]);
  }
  s->crcs.assign(seg_slots_, 0);
  s->valid.assign(seg_slots_, false);
  SegmentHeader h;
  h.volume_id = meta_.id;
  h.segment_id = id;
  h.prev_segment_id = prev_id;
  h.prev_segment_end = prev_end;
  h.first_seq = next_seq_;
  h.flags = flags;
  EncodeSegmentHeader(h, std::span<uint8_t, kSlotSize>(s->Slot(0), kSlotSize));
  mem_segs_[id] = s;
  segment_ids_.push_back(id);
  return s;
}

void VolumeImpl::Start() {
  if (opts_.read_only) return;
  started_ = true;
  flusher_ = std::thread([this] { FlusherLoop(); });
  if (opts_.clean_threshold > 0) cleaner_ = std::thread([this] { CleanerLoop(); });
}

// ---------------------------------------------------------------------------
// Write path

Status VolumeImpl::WritableLocked() const {
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (opts_.read_only) return Status::NotSupported("volume " + name_ + " is open read-only");
  if (!failed_.ok()) {
    return Status::IOError("volume " + name_ + " failed earlier: " + failed_.message());
  }
  return Status::OK();
}

CheckpointInfo VolumeImpl::NextCheckpointInfoLocked() const {
  CheckpointInfo ci;
  ci.volume_id = meta_.id;
  ci.seq = ckpt_seq_ + 1;
  ci.position = SealedEndLocked();
  ci.next_seq = next_seq_;
  ci.volume_size = meta_.size;
  // Segments before the position's with no live block are left out: no run
  // of this checkpoint points into them and replay starts after them, so
  // once every kept checkpoint leaves a segment out it may be deleted.
  for (uint64_t id : segment_ids_) {
    if (id == ci.position.segment_id || (id < ci.position.segment_id && live_blocks_.count(id))) {
      ci.segment_ids.push_back(id);
    }
  }
  return ci;
}

LogPosition VolumeImpl::SealedEndLocked() const {
  // REQUIRES: no open batch. A segment with no batches yet is equivalent to
  // the end of its predecessor (and may not exist in the store).
  if (cur_->used == 1) {
    SegmentHeader h = *DecodeSegmentHeader(std::span<const uint8_t>(cur_->Slot(0), kSlotSize));
    return {h.prev_segment_id, h.prev_segment_end};
  }
  return {cur_->id, uint64_t(cur_->used) * kSlotSize};
}

void VolumeImpl::SealBatchLocked() {
  if (!batch_.active()) return;
  SealedBatch b = batch_.Seal();
  QueueItem item;
  item.seg = cur_;
  item.header_slot = b.header_slot;
  item.data_slots = b.data_slots;
  item.seq = b.seq;
  item.entries = std::move(b.entries);
  last_sealed_seq_ = b.seq;
  bool was_empty = queue_.empty();
  queue_.push_back(std::move(item));
  if (was_empty) flusher_cv_.notify_one();
}

Status VolumeImpl::RollSegmentLocked(std::unique_lock<std::mutex>& l) {
  SealBatchLocked();
  QueueItem marker;
  marker.seg = cur_;
  marker.end_of_segment = true;
  bool was_empty = queue_.empty();
  queue_.push_back(std::move(marker));
  if (was_empty) flusher_cv_.notify_one();
  done_cv_.wait(l, [&] { return mem_segs_.size() < kMaxInMemorySegments || !failed_.ok(); });
  HBISS_RETURN_IF_ERROR(WritableLocked());
  if (cur_->id + 1 > ExtentMap::kMaxSeg) {
    return Status::NoSpace("volume " + name_ + ": segment ids exhausted");
  }
  cur_ = NewMemSegmentLocked(cur_->id + 1, cur_->id, uint64_t(cur_->used) * kSlotSize);
  return Status::OK();
}

Status VolumeImpl::OpenBatchLocked(std::unique_lock<std::mutex>& l) {
  if (batch_.active()) return Status::OK();
  if (cur_->used + 2 > cur_->slots) HBISS_RETURN_IF_ERROR(RollSegmentLocked(l));
  batch_.Start(cur_->used++, next_seq_++);
  return Status::OK();
}

Status VolumeImpl::AppendWriteLocked(std::unique_lock<std::mutex>& l, uint64_t lba, uint64_t n,
                                     const uint8_t* src, bool last_part) {
  while (n > 0) {
    HBISS_RETURN_IF_ERROR(OpenBatchLocked(l));
    const uint32_t k = batch_.WriteRoom(lba, n, last_part, cur_->slots - cur_->used);
    if (k == 0) {
      SealBatchLocked();
      continue;
    }
    HBISS_RETURN_IF_ERROR(batch_.AddWrite(lba, k, last_part && k == n));
    uint32_t slot = cur_->used;
    std::memcpy(cur_->Slot(slot), src, size_t(k) * kSlotSize);
    ForgetBlocksLocked(lba, k);
    map_.Set(lba, k, uint32_t(cur_->id), slot);
    live_blocks_[cur_->id] += k;
    cur_->used += k;
    n -= k;
    lba += k;
    src += k * kSlotSize;
  }
  return Status::OK();
}

Status VolumeImpl::AppendUnmapLocked(std::unique_lock<std::mutex>& l, EntryType type,
                                     uint64_t lba, uint64_t n, bool last_part) {
  while (n > 0) {
    HBISS_RETURN_IF_ERROR(OpenBatchLocked(l));
    const uint64_t k = batch_.UnmapRoom(type, lba, n, last_part);
    if (k == 0) {
      SealBatchLocked();
      continue;
    }
    HBISS_RETURN_IF_ERROR(batch_.AddUnmap(type, lba, k, last_part && k == n));
    ForgetBlocksLocked(lba, k);
    map_.Clear(lba, k);
    n -= k;
    lba += k;
  }
  return Status::OK();
}

void VolumeImpl::CountLiveLocked() {
  live_blocks_.clear();
  map_.ForEach([&](const MapRun& r) { live_blocks_[r.seg] += r.count; });
}

void VolumeImpl::ForgetBlocksLocked(uint64_t lba, uint64_t n) {
  // In slices, so a trim of a huge, fragmented range needs little scratch.
  constexpr uint64_t kSlice = 1 << 16;
  while (n > 0) {
    uint64_t k = std::min(n, kSlice);
    map_.Lookup(lba, k, &old_runs_);
    for (const MapRun& r : old_runs_) {
      if (!r.mapped) continue;
      auto it = live_blocks_.find(r.seg);
      if (it == live_blocks_.end() || it->second < r.count) {
        // Cannot happen while the counts match the map; never underflow.
        spdlog::error("volume {}: live-block count of segment {} is off", name_, Hex16(r.seg));
        if (it != live_blocks_.end()) live_blocks_.erase(it);
        continue;
      }
      it->second -= r.count;
      if (it->second == 0) {
        live_blocks_.erase(it);
        // Segments still in memory are checked when the flusher closes them.
        if (!mem_segs_.count(r.seg)) dead_segs_.push_back(r.seg);
      }
    }
    lba += k;
    n -= k;
  }
}

// The volume blocks [first, last] that the byte range [offset, offset + len)
// touches, and which edge blocks it covers only in part (those need
// read-modify-write). REQUIRES: len > 0.
struct BlockSpan {
  uint64_t first = 0;
  uint64_t last = 0;
  bool head_partial = false;
  bool tail_partial = false;

  static BlockSpan Of(uint64_t offset, uint64_t len) {
    const uint64_t end = offset + len;
    BlockSpan b;
    b.first = offset / kBlockSize;
    b.last = (end - 1) / kBlockSize;
    b.head_partial = offset % kBlockSize != 0 || (b.first == b.last && end % kBlockSize != 0);
    b.tail_partial = b.last != b.first && end % kBlockSize != 0;
    return b;
  }
};

Status VolumeImpl::ReadEdges(const BlockSpan& b, uint8_t* head, uint8_t* tail) {
  if (b.head_partial) {
    HBISS_RETURN_IF_ERROR(Read(b.first * kBlockSize, std::span<uint8_t>(head, kBlockSize)));
  }
  if (b.tail_partial) {
    HBISS_RETURN_IF_ERROR(Read(b.last * kBlockSize, std::span<uint8_t>(tail, kBlockSize)));
  }
  return Status::OK();
}

Status VolumeImpl::AppendOpLocked(std::unique_lock<std::mutex>& l, const BlockSpan& b,
                                  const uint8_t* head, const uint8_t* tail,
                                  const MiddleFn& middle) {
  HBISS_RETURN_IF_ERROR(WritableLocked());
  batch_.BeginOp();
  Status s;
  uint64_t mid_first = b.head_partial ? b.first + 1 : b.first;
  uint64_t mid_last = b.tail_partial ? b.last : b.last + 1;  // exclusive
  if (b.head_partial) s = AppendWriteLocked(l, b.first, 1, head, b.first == b.last);
  if (s.ok() && mid_last > mid_first) s = middle(mid_first, mid_last - mid_first, !b.tail_partial);
  if (s.ok() && b.tail_partial) s = AppendWriteLocked(l, b.last, 1, tail, true);
  batch_.EndOp();
  return s;
}

Status VolumeImpl::Write(uint64_t offset, std::span<const uint8_t> data) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, data.size()));
  if (data.empty()) return Status::OK();
  std::lock_guard<std::mutex> wg(write_mu_);
  const uint64_t end = offset + data.size();
  if (offset % kBlockSize != 0 || end % kBlockSize != 0) {
    std::lock_guard<std::mutex> g(mu_);
    HBISS_RETURN_IF_ERROR(WritableLocked());
  }
  const BlockSpan b = BlockSpan::Of(offset, data.size());
  // Edge blocks that are only partly written: read-modify-write.
  alignas(64) static thread_local uint8_t head[kBlockSize];
  alignas(64) static thread_local uint8_t tail[kBlockSize];
  HBISS_RETURN_IF_ERROR(ReadEdges(b, head, tail));
  if (b.head_partial) {
    size_t in = offset % kBlockSize;
    std::memcpy(head + in, data.data(), std::min<uint64_t>(data.size(), kBlockSize - in));
  }
  if (b.tail_partial) {
    std::memcpy(tail, data.data() + (b.last * kBlockSize - offset), end % kBlockSize);
  }
  std::unique_lock<std::mutex> l(mu_);
  return AppendOpLocked(l, b, head, tail, [&](uint64_t lba, uint64_t n, bool last_part) {
    const uint8_t* src = data.data() + (lba * kBlockSize - offset);
    return AppendWriteLocked(l, lba, n, src, last_part);
  });
}

Status VolumeImpl::Unmap(uint64_t offset, uint64_t length, EntryType type) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, length));
  if (length == 0) return Status::OK();
  std::lock_guard<std::mutex> wg(write_mu_);
  {
    std::lock_guard<std::mutex> g(mu_);
    HBISS_RETURN_IF_ERROR(WritableLocked());
  }
  const uint64_t end = offset + length;
  BlockSpan b = BlockSpan::Of(offset, length);
  alignas(64) static thread_local uint8_t head[kBlockSize];
  alignas(64) static thread_local uint8_t tail[kBlockSize];
  HBISS_RETURN_IF_ERROR(ReadEdges(b, head, tail));
  if (b.head_partial) {
    size_t in = offset % kBlockSize;
    std::memset(head + in, 0, std::min<uint64_t>(length, kBlockSize - in));
  }
  if (b.tail_partial) std::memset(tail, 0, end % kBlockSize);
  // An edge block that is all zeros afterwards is unmapped whole instead of
  // written, so unmapping never allocates space for zeros.
  auto all_zero = [](const uint8_t* p) {
    for (size_t i = 0; i < kBlockSize; i++) {
      if (p[i] != 0) return false;
    }
    return true;
  };
  if (b.head_partial && all_zero(head)) b.head_partial = false;
  if (b.tail_partial && all_zero(tail)) b.tail_partial = false;
  std::unique_lock<std::mutex> l(mu_);
  return AppendOpLocked(l, b, head, tail, [&](uint64_t lba, uint64_t n, bool last_part) {
    return AppendUnmapLocked(l, type, lba, n, last_part);
  });
}

Status VolumeImpl::Flush() {
  std::unique_lock<std::mutex> l(mu_);
  if (closed_) return Status::Aborted("volume " + name_ + " is closed");
  if (opts_.read_only) return Status::OK();
  if (!failed_.ok()) return WritableLocked();
  uint64_t target = batch_.active() ? batch_.seq() : last_sealed_seq_;
  if (target <= durable_seq_) return Status::OK();
  if (target > flush_target_) {
    flush_target_ = target;
    flusher_cv_.notify_one();
  }
  done_cv_.wait(l, [&] { return durable_seq_ >= target || !failed_.ok(); });
  if (durable_seq_ >= target) return Status::OK();
  return WritableLocked();
}

// ---------------------------------------------------------------------------
// Flusher

Status VolumeImpl::ProcessItem(QueueItem& item,
                               std::vector<std::shared_ptr<MemSegment>>* closed) {
  MemSegment* seg = item.seg.get();
  const std::string obj = SegName(name_, seg->id);
  if (item.end_of_segment) {
    if (writer_ && writer_seg_ == seg->id) {
      const uint64_t bytes = writer_->Size();
      HBISS_RETURN_IF_ERROR(writer_->Close().WithContext("closing " + obj));
      writer_.reset();
      writer_seg_ = 0;
      durable_pos_ = appended_pos_;
      seg->closed_bytes = bytes;  // its summary is written once waiters are released
    }
    closed->push_back(item.seg);
    return Status::OK();
  }
  if (!writer_ || writer_seg_ != seg->id) {
    HBISS_ASSIGN_OR_RETURN(writer_, store_->Create(obj));
    writer_seg_ = seg->id;
    HBISS_RETURN_IF_ERROR(writer_->Append(std::span<const uint8_t>(seg->Slot(0), kSlotSize))
                              .WithContext("appending to " + obj));
    std::lock_guard<std::mutex> g(mu_);
    log_bytes_ += kSlotSize;
    log_appended_ += kSlotSize;
    segment_files_++;
  }
  BatchHeader& h = scratch_header_;
  h.volume_id = meta_.id;
  h.segment_id = seg->id;
  h.seq = item.seq;
  h.synced_upto = durable_pos_;
  h.entries = std::move(item.entries);
  h.data_crcs.resize(item.data_slots);
  for (uint32_t i = 0; i < item.data_slots; i++) {
    uint32_t s = item.header_slot + 1 + i;
    uint32_t c = DataSlotCrc(seg->Slot(s));
    h.data_crcs[i] = c;
    seg->crcs[s] = c;
  }
  HBISS_RETURN_IF_ERROR(
      EncodeBatchHeader(h, std::span<uint8_t, kSlotSize>(seg->Slot(item.header_slot), kSlotSize))
          .WithContext("volume " + name_ + ": batch " + std::to_string(item.seq) + " of " + obj));
  size_t bytes = size_t(1 + item.data_slots) * kSlotSize;
  HBISS_RETURN_IF_ERROR(
      writer_->Append(std::span<const uint8_t>(seg->Slot(item.header_slot), bytes))
          .WithContext("appending to " + obj));
  {
    std::lock_guard<std::mutex> g(mu_);
    for (uint32_t i = 0; i < item.data_slots; i++) seg->valid[item.header_slot + 1 + i] = true;
    log_bytes_ += bytes;
    log_appended_ += bytes;
  }
  appended_pos_ = {seg->id, uint64_t(item.header_slot + 1 + item.data_slots) * kSlotSize};
  appended_seq_ = item.seq;
  return Status::OK();
}

void VolumeImpl::PutSummary(const MemSegment& seg, uint64_t bytes) {
  SegmentSummary sum;
  sum.volume_id = meta_.id;
  sum.segment_id = seg.id;
  sum.segment_bytes = bytes;
  const uint64_t n = bytes / kSlotSize;
  {
    std::lock_guard<std::mutex> g(mu_);
    sum.crcs.assign(seg.crcs.begin(), seg.crcs.begin() + n);
    sum.valid.assign(seg.valid.begin(), seg.valid.begin() + n);
  }
  const std::string data = EncodeSegmentSummary(sum);
  Status s = store_->Put(SumName(name_, seg.id),
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                                                  data.size()));
  if (!s.ok()) spdlog::warn("volume {}: segment summary: {}", name_, s.ToString());
}

Status VolumeImpl::WriteCheckpoint(const std::string& data, const CheckpointInfo& ci) {
  const uint64_t seq = ci.seq;
  HBISS_RETURN_IF_ERROR(
      store_->Put(CkptName(name_, seq),
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                                           data.size()))
          .WithContext("volume " + name_ + ": writing checkpoint"));
  std::vector<uint64_t> old;
  {
    std::lock_guard<std::mutex> g(mu_);
    ckpt_seq_ = seq;
    ckpt_seqs_.push_back(seq);
    ckpt_known_[seq] = KnownCheckpoint{ci.position.segment_id, ci.segment_ids};
    // Keep the newest two. The others stay counted as kept until they are
    // gone from the store, so the cleaner never deletes a segment one of
    // them names.
    if (ckpt_seqs_.size() > 2) old.assign(ckpt_seqs_.begin(), ckpt_seqs_.end() - 2);
  }
  for (uint64_t o : old) {
    Status s = store_->Delete(CkptName(name_, o));
    if (!s.ok() && !s.IsNotFound()) {
      spdlog::warn("volume {}: deleting old checkpoint: {}", name_, s.ToString());
      continue;
    }
    std::lock_guard<std::mutex> g(mu_);
    ckpt_seqs_.erase(std::remove(ckpt_seqs_.begin(), ckpt_seqs_.end(), o), ckpt_seqs_.end());
    ckpt_known_.erase(o);
  }
  return Status::OK();
}

void VolumeImpl::FlusherLoop() {
  std::unique_lock<std::mutex> l(mu_);
  std::deque<QueueItem> work;
  for (;;) {
    flusher_cv_.wait(l, [&] {
      return stop_ || !queue_.empty() || flush_target_ > durable_seq_ || !dead_segs_.empty() ||
             ckpt_requested_ || log_appended_ - ckpt_log_mark_ >= opts_.checkpoint_interval;
    });
    if (!failed_.ok()) {
      // Nothing more can be made durable; wake everyone and wait for stop.
      queue_.clear();
      done_cv_.notify_all();
      if (stop_) break;
      flusher_cv_.wait(l, [&] { return stop_; });
      break;
    }
    if (stop_ && queue_.empty() && flush_target_ <= durable_seq_ && dead_segs_.empty()) break;
    // A checkpoint needs the map to match a batch boundary that is not in
    // the middle of an operation.
    std::string ckpt;
    CheckpointInfo ckpt_info;
    bool want_ckpt =
        (ckpt_requested_ || log_appended_ - ckpt_log_mark_ >= opts_.checkpoint_interval) &&
        !stop_;
    if (flush_target_ > last_sealed_seq_ || (want_ckpt && !batch_.op_in_progress())) {
      if (!batch_.op_in_progress()) SealBatchLocked();
    }
    if (want_ckpt && !batch_.op_in_progress() && !batch_.active()) {
      ckpt_info = NextCheckpointInfoLocked();
      const auto t0 = std::chrono::steady_clock::now();
      ckpt = EncodeCheckpoint(ckpt_info, map_);
      ckpt_encode_time_ = std::chrono::steady_clock::now() - t0;
      ckpt_seq_ = ckpt_info.seq;
      ckpt_log_mark_ = log_appended_;
      ckpt_requested_ = false;
      ckpts_encoded_++;
    }
    work.swap(queue_);
    std::vector<uint64_t> dead;
    dead.swap(dead_segs_);
    uint64_t sync_target = std::max(flush_target_, ckpt.empty() ? 0 : last_sealed_seq_);
    l.unlock();

    Status s;
    std::vector<std::shared_ptr<MemSegment>> closed;
    for (QueueItem& item : work) {
      s = ProcessItem(item, &closed);
      if (!s.ok()) break;
    }
    work.clear();
    // Closed segments are synced, so their cached bytes may go: the pages
    // then serve new log instead of data nobody reads.
    for (uint64_t id : dead) store_->DropCache(SegName(name_, id));
    bool synced = false;
    if (s.ok() && sync_target > durable_seq_ && writer_) {
      s = writer_->Sync().WithContext("volume " + name_ + ": sync");
      if (s.ok()) {
        durable_pos_ = appended_pos_;
        synced = true;
      }
    }
    l.lock();
    if (!s.ok()) {
      spdlog::error("volume {}: log write failed, volume is now failed: {}", name_, s.ToString());
      failed_ = s;
      done_cv_.notify_all();
      continue;
    }
    // Everything appended is durable after a Sync; segments that were closed
    // are durable too (Close syncs).
    if (synced || (!writer_ && !closed.empty())) {
      durable_seq_ = std::max(durable_seq_, appended_seq_);
    } else if (!closed.empty()) {
      // Closed segments are synced, but batches of the current one may not be.
      // durable_pos_ marks the end of the last closed segment.
    }
    for (auto& seg : closed) {
      RetireSegmentLocked(seg);
      if (seg->closed_bytes > 0) summarizing_.insert(seg->id);  // not deleted before its Put
    }
    done_cv_.notify_all();
    if (!ckpt.empty()) {
      // The log up to the checkpoint's position is durable now. Flush
      // callers were released above; a failed checkpoint loses nothing (the
      // log has it all), so it is retried after the next interval.
      l.unlock();
      const auto t0 = std::chrono::steady_clock::now();
      Status cs = WriteCheckpoint(ckpt, ckpt_info);
      l.lock();
      ckpt_cost_ = ckpt_encode_time_ + (std::chrono::steady_clock::now() - t0);
      if (!cs.ok()) spdlog::warn("volume {}: periodic checkpoint: {}", name_, cs.ToString());
      ckpt_status_ = cs;
      ckpts_done_++;
      done_cv_.notify_all();
      cleaner_cv_.notify_one();  // segments may have become deletable
    }
    // Summaries last too: nobody waits for them (on HDFS a Put takes a while).
    l.unlock();
    for (auto& seg : closed) {
      if (seg->closed_bytes > 0) PutSummary(*seg, seg->closed_bytes);
    }
    l.lock();
    for (auto& seg : closed) summarizing_.erase(seg->id);
  }
}

// ---------------------------------------------------------------------------
// Reads

void VolumeImpl::CacheSegInfo(uint64_t seg, std::shared_ptr<SegInfo> info) {
  std::lock_guard<std::mutex> g(cache_mu_);
  auto it = cache_.find(seg);
  if (it != cache_.end()) {
    lru_.erase(it->second.second);
    cache_.erase(it);
  }
  lru_.push_front(seg);
  cache_[seg] = {std::move(info), lru_.begin()};
  while (cache_.size() > kSegInfoCacheEntries) {
    cache_.erase(lru_.back());
    lru_.pop_back();
  }
}

Result<std::shared_ptr<SegInfo>> VolumeImpl::LoadSegInfo(uint64_t seg) {
  const std::string obj = SegName(name_, seg);
  auto info = std::make_shared<SegInfo>();
  HBISS_ASSIGN_OR_RETURN(auto reader, store_->Open(obj));
  info->reader = std::move(reader);
  info->crcs.assign(seg_slots_, 0);
  info->valid.assign(seg_slots_, false);
  uint64_t size = info->reader->Size();
  // The summary, when there is a good one for exactly this object, is the
  // table; it only saves the scan below, which recovery's rules also follow.
  auto sum_data = store_->Get(SumName(name_, seg), 1 << 20);
  if (sum_data.ok()) {
    auto sum = DecodeSegmentSummary(std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(sum_data->data()), sum_data->size()));
    if (sum.ok() && sum->volume_id == meta_.id && sum->segment_id == seg &&
        sum->segment_bytes == size && sum->crcs.size() <= seg_slots_) {
      std::copy(sum->crcs.begin(), sum->crcs.end(), info->crcs.begin());
      std::copy(sum->valid.begin(), sum->valid.end(), info->valid.begin());
      return info;
    }
    spdlog::warn("volume {}: ignoring the summary of segment {}: {}", name_, Hex16(seg),
                 sum.ok() ? "it describes another object" : sum.status().ToString());
  }
  HBISS_RETURN_IF_ERROR(
      ScanBatchHeaders(seg, info->reader.get(), [&](uint64_t off, const BatchHeader& h) {
        const uint64_t first = off / kSlotSize + 1;
        for (size_t i = 0; i < h.data_crcs.size(); i++) {
          info->crcs[first + i] = h.data_crcs[i];
          info->valid[first + i] = true;
        }
      }));
  return info;
}

Status VolumeImpl::ScanBatchHeaders(
    uint64_t seg, store::SegmentReader* reader,
    const std::function<void(uint64_t, const BatchHeader&)>& fn) {
  const std::string where = "volume " + name_ + " segment " + Hex16(seg);
  const uint64_t size = reader->Size();
  // Read in large pieces (one request per MiB, not per batch).
  std::vector<uint8_t> buf;
  uint64_t buf_off = 0;
  BatchHeader h;
  for (uint64_t off = kSlotSize; off + kSlotSize <= size;) {
    if (off < buf_off || off + kSlotSize > buf_off + buf.size()) {
      buf.resize(std::min<uint64_t>(1 << 20, (size - off) / kSlotSize * kSlotSize));
      buf_off = off;
      HBISS_RETURN_IF_ERROR(ReadExact(reader, off, buf, where));
    }
    std::span<const uint8_t> slot(buf.data() + (off - buf_off), kSlotSize);
    if (!DecodeBatchHeader(slot, &h).ok() || h.volume_id != meta_.id || h.segment_id != seg) {
      break;
    }
    if (off / kSlotSize + 1 + h.data_crcs.size() > seg_slots_) break;
    fn(off, h);
    off += kSlotSize * (1 + h.data_crcs.size());
  }
  return Status::OK();
}

Result<std::shared_ptr<SegInfo>> VolumeImpl::GetSegInfo(uint64_t seg) {
  std::shared_ptr<SegInfo> info;
  {
    std::lock_guard<std::mutex> g(cache_mu_);
    auto it = cache_.find(seg);
    if (it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      info = it->second.first;
    }
  }
  if (!info) {
    HBISS_ASSIGN_OR_RETURN(info, LoadSegInfo(seg));
    CacheSegInfo(seg, info);
  }
  std::lock_guard<std::mutex> g(info->mu);
  if (!info->reader) {
    HBISS_ASSIGN_OR_RETURN(auto reader, store_->Open(SegName(name_, seg)));
    info->reader = std::move(reader);
  }
  return info;
}

Status VolumeImpl::ReadSlots(uint64_t seg, store::SegmentReader* reader, uint32_t slot0,
                             uint64_t n, uint8_t* dst) {
  auto what = [&] { return "volume " + name_ + " segment " + Hex16(seg); };
  auto read = [&](uint64_t first_slot, uint64_t slots, uint8_t* to) {
    return ReadExact(reader, first_slot * kSlotSize,
                     std::span<uint8_t>(to, size_t(slots) * kSlotSize), what);
  };
  if (!chunks_ || n * kSlotSize >= kCacheBypassBytes) return read(slot0, n, dst);
  // The CRCs are checked by the caller on every read, cached or not, so a
  // chunk read from a bad replica is never served as good.
  const uint64_t seg_bytes = reader->Size();
  uint64_t s = slot0;
  const uint64_t end = slot0 + n;
  while (s < end) {
    const uint64_t c = s / kCacheChunkSlots;
    const uint64_t c_first = c * kCacheChunkSlots;
    ChunkCache::Chunk chunk = chunks_->Find(seg, c);
    if (!chunk) {
      const uint64_t off = c_first * kSlotSize;
      const uint64_t slots =
          std::min(kCacheChunkSlots, seg_bytes > off ? (seg_bytes - off) / kSlotSize : 0);
      if (c_first + slots < std::min(end, c_first + kCacheChunkSlots)) {
        // The object is shorter than the slots asked for: let the plain path
        // say so.
        return read(s, end - s, dst + (s - slot0) * kSlotSize);
      }
      auto buf = std::make_shared<std::vector<uint8_t>>(slots * kSlotSize);
      HBISS_RETURN_IF_ERROR(read(c_first, slots, buf->data()));
      chunk = buf;
      chunks_->Insert(seg, c, chunk);
    }
    const uint64_t upto = std::min(end, c_first + kCacheChunkSlots);
    std::memcpy(dst + (s - slot0) * kSlotSize, chunk->data() + (s - c_first) * kSlotSize,
                (upto - s) * kSlotSize);
    s = upto;
  }
  return Status::OK();
}

Status VolumeImpl::ReadFromStore(const MapRun& r, uint64_t offset, std::span<uint8_t> out) {
  HBISS_ASSIGN_OR_RETURN(auto info, GetSegInfo(r.seg));
  std::shared_ptr<store::SegmentReader> reader;
  {
    std::lock_guard<std::mutex> g(info->mu);
    reader = info->reader;
  }
  const uint64_t end = offset + out.size();
  const uint64_t bs = std::max(r.lba * kBlockSize, offset);
  const uint64_t be = std::min((r.lba + r.count) * kBlockSize, end);
  const uint64_t b0 = bs / kBlockSize, b1 = (be + kBlockSize - 1) / kBlockSize;
  const uint64_t nblocks = b1 - b0;
  const uint32_t slot0 = uint32_t(r.slot + (b0 - r.lba));
  const bool direct = bs % kBlockSize == 0 && be % kBlockSize == 0;
  static thread_local std::vector<uint8_t> scratch;
  uint8_t* dst;
  if (direct) {
    dst = out.data() + (bs - offset);
  } else {
    if (scratch.size() < nblocks * kBlockSize) scratch.resize(nblocks * kBlockSize);
    dst = scratch.data();
  }
  auto where = [&] { return "volume " + name_ + " segment " + Hex16(r.seg); };
  HBISS_RETURN_IF_ERROR(ReadSlots(r.seg, reader.get(), slot0, nblocks, dst));
  for (uint64_t i = 0; i < nblocks; i++) {
    uint32_t s = slot0 + uint32_t(i);
    if (s >= info->valid.size() || !info->valid[s]) {
      return Status::Corruption(where() + ": no valid batch header covers slot " +
                                std::to_string(s) + " (block " + std::to_string(b0 + i) + ")");
    }
    if (DataSlotCrc(dst + i * kBlockSize) != info->crcs[s]) {
      return Status::Corruption(where() + ": CRC mismatch in slot " + std::to_string(s) +
                                " (block " + std::to_string(b0 + i) + ")");
    }
  }
  if (!direct) std::memcpy(out.data() + (bs - offset), dst + (bs - b0 * kBlockSize), be - bs);
  return Status::OK();
}

Status VolumeImpl::Read(uint64_t offset, std::span<uint8_t> out) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, out.size()));
  if (out.empty()) return Status::OK();
  const uint64_t end = offset + out.size();
  const uint64_t first = offset / kBlockSize;
  const uint64_t last = (end - 1) / kBlockSize;
  ReadGate::Pass pass(read_gate_);  // the locations looked up stay readable
  static thread_local std::vector<MapRun> runs;
  static thread_local std::vector<MapRun> from_store;
  from_store.clear();
  {
    std::lock_guard<std::mutex> g(mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    map_.Lookup(first, last - first + 1, &runs);
    for (const MapRun& r : runs) {
      uint64_t bs = std::max(r.lba * kBlockSize, offset);
      uint64_t be = std::min((r.lba + r.count) * kBlockSize, end);
      uint8_t* dst = out.data() + (bs - offset);
      if (!r.mapped) {
        std::memset(dst, 0, be - bs);
        continue;
      }
      auto it = mem_segs_.find(r.seg);
      if (it != mem_segs_.end()) {
        const uint8_t* src = it->second->Slot(r.slot) + (bs - r.lba * kBlockSize);
        std::memcpy(dst, src, be - bs);
      } else {
        from_store.push_back(r);
      }
    }
  }
  for (const MapRun& r : from_store) {
    // Split long runs so the scratch buffer for unaligned reads stays small.
    MapRun piece = r;
    while (piece.count > 0) {
      MapRun p = piece;
      p.count = std::min<uint64_t>(piece.count, 1024);
      HBISS_RETURN_IF_ERROR(ReadFromStore(p, offset, out));
      piece.lba += p.count;
      piece.slot += uint32_t(p.count);
      piece.count -= p.count;
    }
  }
  return Status::OK();
}

Result<std::vector<Extent>> VolumeImpl::BlockStatus(uint64_t offset, uint64_t length) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, length));
  std::vector<Extent> out;
  if (length == 0) return out;
  const uint64_t end = offset + length;
  std::vector<MapRun> runs;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is closed");
    map_.Lookup(offset / kBlockSize, (end - 1) / kBlockSize - offset / kBlockSize + 1, &runs);
  }
  for (const MapRun& r : runs) {
    uint64_t bs = std::max(r.lba * kBlockSize, offset);
    uint64_t be = std::min((r.lba + r.count) * kBlockSize, end);
    if (!out.empty() && out.back().allocated == r.mapped) {
      out.back().length += be - bs;
    } else {
      out.push_back(Extent{bs, be - bs, r.mapped});
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Cleaner

Result<std::vector<MapRun>> VolumeImpl::LiveRunsOf(uint64_t seg) {
  HBISS_ASSIGN_OR_RETURN(auto info, GetSegInfo(seg));
  std::shared_ptr<store::SegmentReader> reader;
  {
    std::lock_guard<std::mutex> g(info->mu);
    reader = info->reader;
  }
  // Where the segment's batches put each written block; the map decides
  // which of those are still the block's current copy.
  struct Written {
    uint64_t lba;
    uint32_t count;
    uint32_t slot;
  };
  std::vector<Written> written;
  HBISS_RETURN_IF_ERROR(
      ScanBatchHeaders(seg, reader.get(), [&](uint64_t off, const BatchHeader& h) {
        uint32_t slot = uint32_t(off / kSlotSize) + 1;
        for (const BatchEntry& e : h.entries) {
          if (e.type != EntryType::kWrite) continue;
          written.push_back(Written{e.lba, e.count, slot});
          slot += e.count;
        }
      }));
  std::vector<MapRun> live;
  std::vector<MapRun> runs;
  std::lock_guard<std::mutex> g(mu_);
  for (const Written& w : written) {
    if (w.lba >= map_.blocks() || w.count > map_.blocks() - w.lba) continue;
    map_.Lookup(w.lba, w.count, &runs);
    for (const MapRun& r : runs) {
      if (r.mapped && r.seg == seg && r.slot == w.slot + (r.lba - w.lba)) live.push_back(r);
    }
  }
  return live;
}

Status VolumeImpl::CleanSegment(uint64_t seg, CleanStats* stats) {
  HBISS_ASSIGN_OR_RETURN(std::vector<MapRun> live, LiveRunsOf(seg));
  constexpr uint64_t kPiece = kMaxBatchDataSlots;  // blocks copied at a time
  std::vector<uint8_t> buf(kPiece * kBlockSize);
  std::vector<MapRun> now;
  Status bad;
  uint64_t moved = 0;
  for (const MapRun& run : live) {
    for (uint64_t done = 0; done < run.count;) {
      MapRun p = run;
      p.lba += done;
      p.slot += uint32_t(done);
      p.count = std::min(kPiece, run.count - done);
      done += p.count;
      Status rs;
      {
        ReadGate::Pass pass(read_gate_);
        rs = ReadFromStore(p, p.lba * kBlockSize,
                           std::span<uint8_t>(buf.data(), p.count * kBlockSize));
      }
      if (!rs.ok()) {
        if (!rs.IsCorruption()) return rs;
        // Never copied: a fresh CRC would make bad data look good. The
        // blocks stay where they are, and so does the segment.
        spdlog::error("volume {}: cleaner left blocks [{}, +{}) in segment {}: {}", name_, p.lba,
                      p.count, Hex16(seg), rs.ToString());
        bad = rs;
        continue;
      }
      // Copy what still lives there; a write since the lookup wins.
      std::lock_guard<std::mutex> wg(write_mu_);
      std::unique_lock<std::mutex> l(mu_);
      HBISS_RETURN_IF_ERROR(WritableLocked());
      // Close waits for the cleaner: stop between pieces, not after 32 MiB.
      if (cleaner_stop_) return Status::Aborted("volume " + name_ + " is closing");
      map_.Lookup(p.lba, p.count, &now);
      for (const MapRun& r : now) {
        if (!r.mapped || r.seg != seg || r.slot != p.slot + (r.lba - p.lba)) continue;
        batch_.BeginOp();
        Status s = AppendWriteLocked(l, r.lba, r.count,
                                     buf.data() + (r.lba - p.lba) * kBlockSize, true);
        batch_.EndOp();
        HBISS_RETURN_IF_ERROR(s);
        moved += r.count;
      }
    }
  }
  std::lock_guard<std::mutex> g(mu_);
  clean_totals_.blocks_moved += moved;
  stats->blocks_moved += moved;
  if (!bad.ok()) {
    unclean_.insert(seg);
    return bad;
  }
  clean_totals_.segments_cleaned++;
  stats->segments_cleaned++;
  return Status::OK();
}

uint64_t VolumeImpl::PickVictimLocked(double threshold, uint64_t below_id) const {
  uint64_t best = 0, best_live = ~uint64_t{0};
  const double limit = threshold * double(seg_slots_ - 1);
  for (uint64_t id : segment_ids_) {
    if (id >= below_id || id >= cur_->id || mem_segs_.count(id) || unclean_.count(id)) continue;
    auto it = live_blocks_.find(id);
    if (it == live_blocks_.end() || double(it->second) >= limit) continue;
    if (it->second < best_live) {
      best = id;
      best_live = it->second;
    }
  }
  return best;
}

bool VolumeImpl::DeletableLocked(uint64_t seg) const {
  if (seg >= cur_->id || mem_segs_.count(seg) || live_blocks_.count(seg) ||
      summarizing_.count(seg)) {
    return false;
  }
  // Every kept checkpoint must be one whose needs are known, start replay
  // after the segment and have no run into it. No checkpoint: replay starts
  // at the beginning of the log, which needs every segment.
  if (ckpt_seqs_.empty()) return false;
  for (uint64_t s : ckpt_seqs_) {
    auto it = ckpt_known_.find(s);
    if (it == ckpt_known_.end() || seg >= it->second.pos_seg ||
        std::binary_search(it->second.listed.begin(), it->second.listed.end(), seg)) {
      return false;
    }
  }
  return true;
}

uint64_t VolumeImpl::DeadWaitingLocked() const {
  // A checkpoint now would start replay in (about) this segment; dead ones
  // at or after it wait for more log, not for a checkpoint.
  const uint64_t pos_seg = cur_->used > 1 ? cur_->id : cur_->id - 1;
  uint64_t n = 0;
  auto count = [&](uint64_t id) {
    if (id < pos_seg && !mem_segs_.count(id) && !live_blocks_.count(id) && !DeletableLocked(id)) {
      n++;
    }
  };
  for (uint64_t id : segment_ids_) count(id);
  for (uint64_t id : orphans_) count(id);
  return n;
}

Status VolumeImpl::DeleteDeadSegments(CleanStats* stats) {
  std::vector<uint64_t> victims;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (uint64_t id : segment_ids_) {
      if (DeletableLocked(id)) victims.push_back(id);
    }
    for (uint64_t id : orphans_) {
      if (DeletableLocked(id)) victims.push_back(id);
    }
  }
  if (victims.empty()) return Status::OK();
  // The map no longer points into the victims; wait out reads that looked
  // it up before it stopped.
  read_gate_.WaitForEarlierReads();
  Status first;
  for (uint64_t id : victims) {
    const std::string obj = SegName(name_, id);
    auto size = store_->Stat(obj);
    Status s = store_->Delete(obj);
    if (!s.ok() && !s.IsNotFound()) {
      if (first.ok()) first = s.WithContext("volume " + name_ + ": deleting dead segment");
      continue;
    }
    Status ss = store_->Delete(SumName(name_, id));
    if (!ss.ok() && !ss.IsNotFound()) {
      spdlog::warn("volume {}: deleting the summary of segment {}: {}", name_, Hex16(id),
                   ss.ToString());
    }
    {
      std::lock_guard<std::mutex> cg(cache_mu_);
      auto it = cache_.find(id);
      if (it != cache_.end()) {
        lru_.erase(it->second.second);
        cache_.erase(it);
      }
    }
    std::lock_guard<std::mutex> g(mu_);
    segment_ids_.erase(std::remove(segment_ids_.begin(), segment_ids_.end(), id),
                       segment_ids_.end());
    orphans_.erase(id);
    if (s.ok()) {
      const uint64_t bytes = size.ok() ? *size : 0;
      log_bytes_ -= std::min(bytes, log_bytes_);
      if (segment_files_ > 0) segment_files_--;
      stats->segments_deleted++;
      stats->bytes_deleted += bytes;
      clean_totals_.segments_deleted++;
      clean_totals_.bytes_deleted += bytes;
    }
  }
  spdlog::debug("volume {}: deleted {} dead segments", name_, victims.size());
  return first;
}

Status VolumeImpl::CheckpointNow() {
  std::unique_lock<std::mutex> l(mu_);
  HBISS_RETURN_IF_ERROR(WritableLocked());
  // Checkpoints are encoded and written in order by the flusher: the first
  // encoded after this request is the one to wait for.
  const uint64_t target = ckpts_encoded_ + 1;
  ckpt_requested_ = true;
  flusher_cv_.notify_one();
  done_cv_.wait(l, [&] { return ckpts_done_ >= target || !failed_.ok() || stop_; });
  if (ckpts_done_ >= target) return ckpt_status_;
  HBISS_RETURN_IF_ERROR(WritableLocked());
  return Status::Aborted("volume " + name_ + " is closing");
}

Result<CleanStats> VolumeImpl::Clean(double threshold) {
  uint64_t below = 0;
  {
    std::lock_guard<std::mutex> g(mu_);
    HBISS_RETURN_IF_ERROR(WritableLocked());
    below = cur_->id;
  }
  std::lock_guard<std::mutex> cg(clean_mu_);
  CleanStats st;
  Status bad;
  for (;;) {
    uint64_t victim = 0;
    {
      std::lock_guard<std::mutex> g(mu_);
      victim = PickVictimLocked(threshold, below);
    }
    if (victim == 0) break;
    Status s = CleanSegment(victim, &st);
    if (s.IsCorruption()) {
      bad = s;  // that segment is never picked again
      continue;
    }
    HBISS_RETURN_IF_ERROR(s);
  }
  // Two checkpoints after the copies are durable: then neither kept one
  // needs the cleaned segments.
  HBISS_RETURN_IF_ERROR(Flush());
  HBISS_RETURN_IF_ERROR(CheckpointNow());
  HBISS_RETURN_IF_ERROR(CheckpointNow());
  HBISS_RETURN_IF_ERROR(DeleteDeadSegments(&st));
  if (!bad.ok()) return bad;
  return st;
}

void VolumeImpl::CleanerLoop() {
  constexpr auto kIdle = std::chrono::seconds(1);
  // Checkpoints asked for to free garbage: at most one per this long, and
  // spending at most about 2% of the time on them (a big map takes long to
  // encode, and writes wait meanwhile).
  constexpr auto kCheckpointEvery = std::chrono::seconds(5);
  std::unique_lock<std::mutex> l(mu_);
  bool busy = false;
  while (!cleaner_stop_) {
    if (!busy) cleaner_cv_.wait_for(l, kIdle);
    busy = false;
    if (cleaner_stop_) break;
    if (!failed_.ok()) continue;
    l.unlock();
    {
      std::lock_guard<std::mutex> cg(clean_mu_);
      CleanStats st;
      Status s = DeleteDeadSegments(&st);
      if (!s.ok()) spdlog::warn("volume {}: cleaner: {}", name_, s.ToString());
      uint64_t victim = 0;
      {
        std::lock_guard<std::mutex> g(mu_);
        // A segment the cleaner has just written is about 99% live (a batch
        // header per 256 blocks): it must never qualify again.
        if (!cleaner_stop_) victim = PickVictimLocked(std::min(opts_.clean_threshold, 0.9),
                                                      ~uint64_t{0});
      }
      if (victim != 0) {
        s = CleanSegment(victim, &st);
        if (s.ok()) {
          busy = true;
        } else if (s.code() != Status::Code::kAborted) {
          spdlog::warn("volume {}: cleaner: segment {}: {}", name_, Hex16(victim), s.ToString());
        }
      }
    }
    l.lock();
    const auto now = std::chrono::steady_clock::now();
    if (!ckpt_requested_ && now - last_forced_ckpt_ >= kCheckpointEvery &&
        now - last_forced_ckpt_ >= 50 * ckpt_cost_ &&
        DeadWaitingLocked() > 0) {
      ckpt_requested_ = true;
      last_forced_ckpt_ = now;
      flusher_cv_.notify_one();
    }
  }
}

VolumeInfo VolumeImpl::Info() const {
  std::lock_guard<std::mutex> g(mu_);
  VolumeInfo v;
  v.name = name_;
  v.id = meta_.id;
  v.size = meta_.size;
  v.segment_size = meta_.segment_size;
  v.mapped_bytes = map_.MappedBlocks() * kBlockSize;
  v.segment_count = segment_files_;
  v.log_bytes = log_bytes_;
  v.checkpoint_seq = ckpt_seq_;
  v.map_memory_bytes = map_.MemoryUsage();
  v.segments_deleted = clean_totals_.segments_deleted;
  v.blocks_moved = clean_totals_.blocks_moved;
  return v;
}

Status VolumeImpl::Close() {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (closed_) return Status::Aborted("volume " + name_ + " is already closed");
  }
  Status result;
  if (!opts_.read_only && started_) {
    {
      std::lock_guard<std::mutex> g(mu_);
      cleaner_stop_ = true;
      cleaner_cv_.notify_one();
    }
    if (cleaner_.joinable()) cleaner_.join();
    std::lock_guard<std::mutex> cg(clean_mu_);  // lock order: clean_mu_ -> write_mu_
    std::lock_guard<std::mutex> wg(write_mu_);  // no writer is mid-operation
    result = Flush();
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
      flusher_cv_.notify_one();
    }
    flusher_.join();
    std::unique_lock<std::mutex> l(mu_);
    if (result.ok() && !failed_.ok()) result = WritableLocked();
    std::shared_ptr<MemSegment> last;  // closed here: gets a summary
    uint64_t last_bytes = 0;
    if (result.ok() && writer_) {
      last_bytes = writer_->Size();
      result = writer_->Close().WithContext("volume " + name_ + ": closing segment");
      writer_.reset();
      if (result.ok() && writer_seg_ == cur_->id) last = cur_;
    }
    if (result.ok() && !batch_.active() && queue_.empty()) {
      // Everything is durable: publish a checkpoint of the final map.
      CheckpointInfo ci = NextCheckpointInfoLocked();
      std::string data = EncodeCheckpoint(ci, map_);
      l.unlock();
      result = WriteCheckpoint(data, ci);
      // A clean close deletes what the checkpoints no longer need.
      if (result.ok() && opts_.clean_threshold > 0) {
        CleanStats ignored;
        Status d = DeleteDeadSegments(&ignored);
        if (!d.ok()) spdlog::warn("volume {}: deleting dead segments: {}", name_, d.ToString());
      }
      l.lock();
    }
    if (last) {
      l.unlock();
      PutSummary(*last, last_bytes);
      l.lock();
    }
    closed_ = true;
  } else {
    std::lock_guard<std::mutex> g(mu_);
    closed_ = true;
  }
  {
    std::lock_guard<std::mutex> g(cache_mu_);
    cache_.clear();
    lru_.clear();
  }
  lock_.reset();
  return result;
}

}  // namespace

// ---------------------------------------------------------------------------
// Static API

Status Volume::ValidateName(const std::string& name) {
  if (name.empty() || name.size() > 128) {
    return Status::InvalidArgument("volume name must be 1 to 128 characters");
  }
  if (name[0] == '.' || name[0] == '-') {
    return Status::InvalidArgument("volume name '" + name + "' must not start with '.' or '-'");
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument("volume name '" + name +
                                     "' may only contain letters, digits, '.', '_' and '-'");
    }
  }
  return Status::OK();
}

Status Volume::Create(store::Store* store, const std::string& name, const CreateOptions& opts) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  if (opts.size == 0) return Status::InvalidArgument("volume size must be greater than zero");
  if (opts.size > kMaxVolumeSize) {
    return Status::InvalidArgument("volume size " + std::to_string(opts.size) +
                                   " exceeds the maximum of " + std::to_string(kMaxVolumeSize));
  }
  if (opts.segment_size % kSlotSize != 0 || opts.segment_size / kSlotSize < kMinSegmentSlots ||
      opts.segment_size / kSlotSize > kMaxSegmentSlots) {
    return Status::InvalidArgument("segment size must be a multiple of 4096 between " +
                                   std::to_string(kMinSegmentSlots * kSlotSize) + " and " +
                                   std::to_string(uint64_t(kMaxSegmentSlots) * kSlotSize));
  }
  auto exists = store->Stat(MetaName(name));
  if (exists.ok()) return Status::AlreadyExists("volume " + name + " already exists");
  if (!exists.status().IsNotFound()) return exists.status();
  Meta m;
  m.size = (opts.size + kBlockSize - 1) / kBlockSize * kBlockSize;
  m.segment_size = opts.segment_size;
  m.created = int64_t(std::time(nullptr));
  std::random_device rd;
  std::mt19937_64 rng((uint64_t(rd()) << 32) ^ rd() ^
                      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  while (m.id == 0) m.id = rng();
  std::string text = EncodeMeta(m);
  // Leftovers without a meta (a Remove interrupted after deleting the meta)
  // are garbage of an old volume: clear them so the new one starts empty.
  HBISS_RETURN_IF_ERROR(store->DeleteDir(VolDir(name)));
  return store->Put(MetaName(name), std::span<const uint8_t>(
                                        reinterpret_cast<const uint8_t*>(text.data()),
                                        text.size()));
}

Result<std::unique_ptr<Volume>> Volume::Open(store::Store* store, const std::string& name,
                                             const OpenOptions& opts) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(Meta meta, ReadMeta(store, name));
  std::unique_ptr<store::Lock> lock;
  if (!opts.read_only) {
    auto l = store->TryLock(LockName(name));
    if (!l.ok() && l.status().IsBusy() && opts.break_lock) {
      spdlog::warn("volume {}: its lock is held; breaking it to take the volume over", name);
      Status b = store->BreakLock(LockName(name));
      if (!b.ok()) return b.WithContext("volume " + name + ": breaking its lock");
      l = store->TryLock(LockName(name));
    }
    if (!l.ok()) {
      if (l.status().IsBusy()) {
        return Status::Busy("volume " + name + " is already open for writing");
      }
      return l.status().WithContext("volume " + name + ": taking lock");
    }
    lock = std::move(*l);
  }
  auto v = std::make_unique<VolumeImpl>(store, name, meta, opts, std::move(lock));
  HBISS_RETURN_IF_ERROR(v->Recover());
  if (!opts.read_only) {
    // With the lock held no Put into these directories can be running: what
    // the store's Put left half-done there is a crash's leftover.
    for (const std::string& dir :
         {VolDir(name), CkptDir(name), VolDir(name) + "/sum", SegDir(name)}) {
      auto n = store->RemoveTempLeftovers(dir);
      if (!n.ok()) {
        spdlog::warn("volume {}: removing temporary leftovers in {}: {}", name, dir,
                     n.status().ToString());
      } else if (*n > 0) {
        spdlog::info("volume {}: removed {} temporary objects a crashed write left in {}", name,
                     *n, dir);
      }
    }
  }
  v->Start();
  HBISS_RETURN_IF_ERROR(v->FinishOpen().WithContext("volume " + name + ": making recovery durable"));
  return std::unique_ptr<Volume>(std::move(v));
}

Status Volume::Remove(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  auto exists = store->Stat(MetaName(name));
  if (!exists.ok()) {
    if (exists.status().IsNotFound()) return Status::NotFound("volume " + name + " does not exist");
    return exists.status();
  }
  auto l = store->TryLock(LockName(name));
  if (!l.ok()) {
    if (l.status().IsBusy()) return Status::Busy("volume " + name + " is open");
    return l.status();
  }
  // Meta first: from here on the volume no longer exists for List/Open.
  HBISS_RETURN_IF_ERROR(store->Delete(MetaName(name)));
  return store->DeleteDir(VolDir(name));
}

Result<std::vector<std::string>> Volume::List(store::Store* store) {
  std::vector<std::string> names;
  auto list = store->List("volumes");
  if (!list.ok()) {
    if (list.status().IsNotFound()) return names;
    return list.status();
  }
  for (const auto& o : *list) {
    if (!o.is_dir || !ValidateName(o.name).ok()) continue;
    auto st = store->Stat(MetaName(o.name));
    if (st.ok()) names.push_back(o.name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

Result<VolumeInfo> Volume::Stat(store::Store* store, const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(Meta meta, ReadMeta(store, name));
  VolumeInfo v;
  v.name = name;
  v.id = meta.id;
  v.size = meta.size;
  v.segment_size = meta.segment_size;
  ExtentMap map(meta.size / kBlockSize);
  CheckpointInfo ck;
  bool found = false;
  HBISS_RETURN_IF_ERROR(LoadNewestCheckpoint(store, name, meta, &ck, &map, &found, nullptr));
  if (found) {
    v.checkpoint_seq = ck.seq;
    v.mapped_bytes = map.MappedBlocks() * kBlockSize;
    v.map_memory_bytes = map.MemoryUsage();
  }
  HBISS_ASSIGN_OR_RETURN(auto segs, ListIds(store, SegDir(name)));
  v.segment_count = segs.size();
  for (auto& [id, size] : segs) v.log_bytes += size;
  return v;
}

}  // namespace hbiss::volume
