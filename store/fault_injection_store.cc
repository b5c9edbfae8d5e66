#include "store/fault_injection_store.h"

#include <array>
#include <map>
#include <random>
#include <vector>

#include "util/mutex.h"
#include "util/thread_annotations.h"

namespace hbiss::store {

namespace {

using Op = FaultInjectionStore::Op;
using ObjectState = FaultInjectionStore::ObjectState;

bool IsMutating(Op op) {
  return (FaultInjectionStore::kMutatingOps & FaultInjectionStore::Bit(op)) != 0;
}

// A writer handed out by the wrapper. SimulateCrash takes the target away.
struct WriterSlot {
  explicit WriterSlot(std::unique_ptr<SegmentWriter> t) : target(std::move(t)) {}
  Mutex mu;
  std::unique_ptr<SegmentWriter> target GUARDED_BY(mu);
  bool revoked GUARDED_BY(mu) = false;
};

struct LockSlot {
  explicit LockSlot(std::unique_ptr<Lock> t) : target(std::move(t)) {}
  Mutex mu;
  std::unique_ptr<Lock> target GUARDED_BY(mu);
};

}  // namespace

struct FaultInjectionStore::Core {
  enum class Verdict {
    kGo,     // do the operation
    kDown,   // the store is down (or the handle is stale): fail, no effect
    kFail,   // injected error: fail, maybe with a partial effect
    kCrash,  // this is the crash point: fail, maybe with a partial effect
  };
  struct Decision {
    Verdict verdict = Verdict::kGo;
    Status status;     // the error to return unless kGo
    uint64_t rnd = 0;  // seeded randomness for partial effects
  };

  struct Entry {
    uint64_t id = 0;  // which creation of the name this is
    ObjectState st;
  };

  Core(Store* t, uint64_t seed) : target(t), rng(seed) {}

  Store* const target;

  mutable Mutex mu;
  std::mt19937_64 rng GUARDED_BY(mu);
  bool down GUARDED_BY(mu) = false;
  bool armed GUARDED_BY(mu) = false;
  uint64_t countdown GUARDED_BY(mu) = 0;
  uint64_t epoch GUARDED_BY(mu) = 0;  // bumped by SimulateCrash
  std::array<uint64_t, kNumOps> fail_next GUARDED_BY(mu){};
  uint32_t rate_mask GUARDED_BY(mu) = 0;
  double rate GUARDED_BY(mu) = 0;
  Counters counters GUARDED_BY(mu);
  std::map<std::string, Entry> tracked GUARDED_BY(mu);
  std::map<uint64_t, std::string> renamed GUARDED_BY(mu);  // creation id -> name now
  uint64_t next_id GUARDED_BY(mu) = 1;
  std::vector<std::weak_ptr<WriterSlot>> writers GUARDED_BY(mu);
  std::vector<std::weak_ptr<LockSlot>> locks GUARDED_BY(mu);

  // Decides the fate of one call. `handle_epoch` is the epoch a reader or
  // writer was made in (nullopt for Store calls).
  Decision Decide(Op op, const std::string& name, std::optional<uint64_t> handle_epoch = {}) {
    MutexLock lock(&mu);
    ++counters.ops;
    std::string what = std::string(OpName(op)) + " " + name;
    Decision d;
    if (down) {
      d.verdict = Verdict::kDown;
      d.status = Status::IOError("injected crash: store is down (" + what + ")");
      return d;
    }
    if (handle_epoch && *handle_epoch != epoch) {
      d.verdict = Verdict::kDown;
      d.status = Status::IOError("injected crash: handle from before a simulated crash (" + what +
                                 ")");
      return d;
    }
    const size_t i = static_cast<size_t>(op);
    if (IsMutating(op)) {
      ++counters.mutating_ops;
      if (armed) {
        if (countdown == 0) {
          armed = false;
          down = true;
          ++counters.crashes;
          d.verdict = Verdict::kCrash;
          d.status = Status::IOError("injected crash at " + what);
          d.rnd = rng();
          return d;
        }
        --countdown;
      }
    }
    bool fail = false;
    if (fail_next[i] > 0) {
      --fail_next[i];
      fail = true;
    } else if ((rate_mask & Bit(op)) && rate > 0) {
      fail = std::uniform_real_distribution<double>(0, 1)(rng) < rate;
    }
    if (fail) {
      ++counters.injected_errors;
      d.verdict = Verdict::kFail;
      d.status = Status::IOError("injected error: " + what);
      d.rnd = rng();
    }
    return d;
  }

  // Starts tracking a new object; returns its creation id.
  uint64_t Track(const std::string& name) {
    MutexLock lock(&mu);
    uint64_t id = next_id++;
    tracked[name] = Entry{id, ObjectState{}};
    return id;
  }

  void Untrack(const std::string& name) {
    MutexLock lock(&mu);
    tracked.erase(name);
  }

  void UntrackDir(const std::string& dir) {
    MutexLock lock(&mu);
    const std::string prefix = dir + "/";
    for (auto it = tracked.lower_bound(prefix);
         it != tracked.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
      it = tracked.erase(it);
    }
  }

  // Moves what is tracked under directory `from` to `to`.
  void MoveDir(const std::string& from, const std::string& to) {
    MutexLock lock(&mu);
    const std::string prefix = from + "/";
    std::map<std::string, Entry> moved;
    for (auto it = tracked.lower_bound(prefix);
         it != tracked.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
      std::string now = to + it->first.substr(from.size());
      renamed[it->second.id] = now;
      moved.emplace(std::move(now), it->second);
      it = tracked.erase(it);
    }
    tracked.merge(moved);
  }

  enum class Level { kAppended, kFlushed, kSynced };
  // Records that the writer with creation `id` (created as `name`, maybe
  // moved since) reached `size` at `level`.
  void Advance(const std::string& name, uint64_t id, uint64_t size, Level level) {
    MutexLock lock(&mu);
    auto it = tracked.find(name);
    if (it == tracked.end() || it->second.id != id) {
      auto r = renamed.find(id);
      if (r != renamed.end()) it = tracked.find(r->second);
    }
    if (it == tracked.end() || it->second.id != id) return;  // deleted or replaced
    ObjectState& st = it->second.st;
    st.appended = std::max(st.appended, size);
    if (level != Level::kAppended) st.flushed = std::max(st.flushed, size);
    if (level == Level::kSynced) st.synced = std::max(st.synced, size);
  }

  uint64_t Random() {
    MutexLock lock(&mu);
    return rng();
  }

  uint64_t Epoch() const {
    MutexLock lock(&mu);
    return epoch;
  }
};

const char* FaultInjectionStore::OpName(Op op) {
  switch (op) {
    case Op::kCreate: return "Create";
    case Op::kAppend: return "Append";
    case Op::kFlush: return "Flush";
    case Op::kSync: return "Sync";
    case Op::kClose: return "Close";
    case Op::kPut: return "Put";
    case Op::kDelete: return "Delete";
    case Op::kDeleteDir: return "DeleteDir";
    case Op::kRenameDir: return "RenameDir";
    case Op::kOpen: return "Open";
    case Op::kRead: return "Read";
    case Op::kList: return "List";
    case Op::kStat: return "Stat";
    case Op::kLock: return "TryLock";
  }
  return "?";
}

namespace {

using Core = FaultInjectionStore::Core;
using Verdict = Core::Verdict;

class FaultWriter final : public SegmentWriter {
 public:
  FaultWriter(std::shared_ptr<Core> core, std::shared_ptr<WriterSlot> slot, std::string name,
              uint64_t id, uint64_t epoch)
      : core_(std::move(core)), slot_(std::move(slot)), name_(std::move(name)), id_(id),
        epoch_(epoch) {}

  Status Append(std::span<const uint8_t> data) override {
    MutexLock lock(&slot_->mu);
    HBISS_RETURN_IF_ERROR(Check());
    Core::Decision d = core_->Decide(Op::kAppend, name_, epoch_);
    if (d.verdict == Verdict::kDown) return Break(d.status);
    if (d.verdict != Verdict::kGo) {
      // Torn append: some prefix reached the target before the failure.
      size_t prefix = static_cast<size_t>(d.rnd % (data.size() + 1));
      if (prefix > 0 && slot_->target->Append(data.first(prefix)).ok()) {
        size_ += prefix;
        core_->Advance(name_, id_, size_, Core::Level::kAppended);
      }
      return Break(d.status);
    }
    Status s = slot_->target->Append(data);
    if (!s.ok()) return Break(s);
    size_ += data.size();
    core_->Advance(name_, id_, size_, Core::Level::kAppended);
    return Status::OK();
  }

  Status Flush() override { return Durable(Op::kFlush); }
  Status Sync() override { return Durable(Op::kSync); }
  Status Close() override {
    HBISS_RETURN_IF_ERROR(Durable(Op::kClose));
    closed_ = true;
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }

 private:
  Status Check() const REQUIRES(slot_->mu) {
    if (slot_->revoked) {
      return Status::IOError("injected crash: writer for '" + name_ +
                             "' was lost in a simulated crash");
    }
    if (closed_) return Status::InvalidArgument("writer for '" + name_ + "' is closed");
    if (!broken_.ok()) return broken_.WithContext("writer failed earlier");
    return Status::OK();
  }
  Status Break(Status s) {
    broken_ = s;
    return s;
  }

  Status Durable(Op op) {
    MutexLock lock(&slot_->mu);
    HBISS_RETURN_IF_ERROR(Check());
    Core::Decision d = core_->Decide(op, name_, epoch_);
    if (d.verdict != Verdict::kGo) return Break(d.status);
    Status s = op == Op::kFlush  ? slot_->target->Flush()
               : op == Op::kSync ? slot_->target->Sync()
                                 : slot_->target->Close();
    if (!s.ok()) return Break(s);
    core_->Advance(name_, id_, size_,
                   op == Op::kFlush ? Core::Level::kFlushed : Core::Level::kSynced);
    return Status::OK();
  }

  const std::shared_ptr<Core> core_;
  const std::shared_ptr<WriterSlot> slot_;
  const std::string name_;
  const uint64_t id_;
  const uint64_t epoch_;
  uint64_t size_ = 0;
  bool closed_ = false;
  Status broken_;
};

class FaultReader final : public SegmentReaderWrapper {
 public:
  FaultReader(std::unique_ptr<SegmentReader> target, std::shared_ptr<Core> core, std::string name,
              uint64_t epoch)
      : SegmentReaderWrapper(std::move(target)), core_(std::move(core)), name_(std::move(name)),
        epoch_(epoch) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    Core::Decision d = core_->Decide(Op::kRead, name_, epoch_);
    if (d.verdict != Verdict::kGo) return d.status;
    return target()->ReadAt(offset, out);
  }

 private:
  const std::shared_ptr<Core> core_;
  const std::string name_;
  const uint64_t epoch_;
};

class FaultLock final : public Lock {
 public:
  explicit FaultLock(std::shared_ptr<LockSlot> slot) : slot_(std::move(slot)) {}
  ~FaultLock() override {
    MutexLock lock(&slot_->mu);
    slot_->target.reset();
  }
  // The target's; a lock a simulated crash released is lost.
  Status Check() const override {
    MutexLock lock(&slot_->mu);
    if (slot_->target == nullptr) return Status::IOError("lock released by a simulated crash");
    return slot_->target->Check();
  }

 private:
  const std::shared_ptr<LockSlot> slot_;
};

}  // namespace

FaultInjectionStore::FaultInjectionStore(std::unique_ptr<Store> target, uint64_t seed)
    : StoreWrapper(std::move(target)), core_(std::make_shared<Core>(this->target(), seed)) {}

FaultInjectionStore::FaultInjectionStore(Store* target, uint64_t seed)
    : StoreWrapper(target), core_(std::make_shared<Core>(target, seed)) {}

FaultInjectionStore::~FaultInjectionStore() = default;

void FaultInjectionStore::CrashAfter(uint64_t n) {
  MutexLock lock(&core_->mu);
  core_->armed = true;
  core_->countdown = n;
}

uint64_t FaultInjectionStore::CrashAtRandom(uint64_t max_ops) {
  MutexLock lock(&core_->mu);
  uint64_t n = max_ops == 0 ? 0 : core_->rng() % max_ops;
  core_->armed = true;
  core_->countdown = n;
  return n;
}

void FaultInjectionStore::Disarm() {
  MutexLock lock(&core_->mu);
  core_->armed = false;
}

bool FaultInjectionStore::crashed() const {
  MutexLock lock(&core_->mu);
  return core_->down;
}

void FaultInjectionStore::FailNext(Op op, uint64_t count) {
  MutexLock lock(&core_->mu);
  core_->fail_next[static_cast<size_t>(op)] += count;
}

void FaultInjectionStore::SetFailureRate(uint32_t op_mask, double p) {
  MutexLock lock(&core_->mu);
  core_->rate_mask = op_mask;
  core_->rate = p;
}

void FaultInjectionStore::ClearFailures() {
  MutexLock lock(&core_->mu);
  core_->fail_next.fill(0);
  core_->rate_mask = 0;
  core_->rate = 0;
}

FaultInjectionStore::Counters FaultInjectionStore::counters() const {
  MutexLock lock(&core_->mu);
  return core_->counters;
}

std::optional<FaultInjectionStore::ObjectState> FaultInjectionStore::Tracked(
    const std::string& name) const {
  MutexLock lock(&core_->mu);
  auto it = core_->tracked.find(name);
  if (it == core_->tracked.end()) return std::nullopt;
  return it->second.st;
}

Status FaultInjectionStore::SimulateCrash(CrashKind kind) {
  Core& c = *core_;
  std::vector<std::weak_ptr<WriterSlot>> writers;
  std::vector<std::weak_ptr<LockSlot>> locks;
  {
    MutexLock lock(&c.mu);
    c.down = true;  // calls racing with the crash fail
    c.armed = false;
    ++c.epoch;
    ++c.counters.simulated_crashes;
    writers.swap(c.writers);
    locks.swap(c.locks);
  }
  // The dead process's handles go away; in-flight calls finish first.
  for (auto& w : writers) {
    if (auto slot = w.lock()) {
      MutexLock lock(&slot->mu);
      slot->target.reset();
      slot->revoked = true;
    }
  }
  for (auto& l : locks) {
    if (auto slot = l.lock()) {
      MutexLock lock(&slot->mu);
      slot->target.reset();
    }
  }
  std::map<std::string, Core::Entry> objects;
  {
    MutexLock lock(&c.mu);
    objects.swap(c.tracked);
    c.renamed.clear();
  }
  Status first_error;
  uint64_t truncated = 0;
  uint64_t dropped = 0;
  for (const auto& [key, entry] : objects) {  // sorted: deterministic draws
    const std::string& name = key;  // a plain reference: lambdas below capture it
    const ObjectState& st = entry.st;
    uint64_t floor = kind == CrashKind::kPowerLoss ? st.synced : st.flushed;
    if (st.appended <= floor) continue;
    // A third of the time drop everything unsynced, a third keep it all,
    // a third cut at a uniform random byte in between.
    uint64_t r = c.Random();
    uint64_t keep = r % 3 == 0   ? floor
                    : r % 3 == 1 ? st.appended
                                 : floor + (r / 3) % (st.appended - floor + 1);
    if (keep >= st.appended) continue;
    // Rewrite the object with only its first `keep` bytes.
    Status s = [&]() -> Status {
      auto reader = c.target->Open(name);
      if (reader.status().IsNotFound()) return Status::OK();  // gone anyway
      if (!reader.ok()) return reader.status();
      uint64_t size = (*reader)->Size();
      if (size <= keep) return Status::OK();
      std::vector<uint8_t> buf(keep);
      uint64_t done = 0;
      while (done < keep) {
        HBISS_ASSIGN_OR_RETURN(size_t n, (*reader)->ReadAt(done, std::span(buf).subspan(done)));
        if (n == 0) return Status::IOError("short read of '" + name + "' while truncating");
        done += n;
      }
      reader->reset();
      HBISS_RETURN_IF_ERROR(c.target->Delete(name));
      HBISS_ASSIGN_OR_RETURN(std::unique_ptr<SegmentWriter> w, c.target->Create(name));
      HBISS_RETURN_IF_ERROR(w->Append(buf));
      HBISS_RETURN_IF_ERROR(w->Close());
      ++truncated;
      dropped += size - keep;
      return Status::OK();
    }();
    if (!s.ok() && first_error.ok()) {
      first_error = s.WithContext("SimulateCrash: truncating '" + name + "'");
    }
  }
  {
    MutexLock lock(&c.mu);
    c.down = false;
    c.counters.objects_truncated += truncated;
    c.counters.bytes_dropped += dropped;
  }
  return first_error;
}

Result<std::unique_ptr<SegmentWriter>> FaultInjectionStore::Create(const std::string& name) {
  Core::Decision d = core_->Decide(Op::kCreate, name);
  if (d.verdict == Verdict::kCrash && (d.rnd & 1)) {
    // The file was created just before the crash; its writer dies with it.
    if (target()->Create(name).ok()) core_->Track(name);
  }
  if (d.verdict != Verdict::kGo) return d.status;
  HBISS_ASSIGN_OR_RETURN(std::unique_ptr<SegmentWriter> w, target()->Create(name));
  auto slot = std::make_shared<WriterSlot>(std::move(w));
  uint64_t id = core_->Track(name);
  uint64_t epoch;
  {
    MutexLock lock(&core_->mu);
    core_->writers.push_back(slot);
    epoch = core_->epoch;
  }
  return std::unique_ptr<SegmentWriter>(
      std::make_unique<FaultWriter>(core_, std::move(slot), name, id, epoch));
}

Result<std::unique_ptr<SegmentReader>> FaultInjectionStore::Open(const std::string& name) {
  return OpenThrough(name, /*takeover=*/false);
}

Result<std::unique_ptr<SegmentReader>> FaultInjectionStore::OpenForTakeover(
    const std::string& name) {
  return OpenThrough(name, /*takeover=*/true);
}

Result<std::unique_ptr<SegmentReader>> FaultInjectionStore::OpenThrough(const std::string& name,
                                                                        bool takeover) {
  Core::Decision d = core_->Decide(Op::kOpen, name);
  if (d.verdict != Verdict::kGo) return d.status;
  uint64_t epoch = core_->Epoch();
  HBISS_ASSIGN_OR_RETURN(std::unique_ptr<SegmentReader> r,
                         takeover ? target()->OpenForTakeover(name) : target()->Open(name));
  return std::unique_ptr<SegmentReader>(
      std::make_unique<FaultReader>(std::move(r), core_, name, epoch));
}

Status FaultInjectionStore::Put(const std::string& name, std::span<const uint8_t> data) {
  Core::Decision d = core_->Decide(Op::kPut, name);
  if (d.verdict == Verdict::kDown) return d.status;
  if (d.verdict != Verdict::kGo) {
    // The atomic replace did or did not happen before the failure.
    if ((d.rnd & 1) && target()->Put(name, data).ok()) core_->Untrack(name);
    return d.status;
  }
  HBISS_RETURN_IF_ERROR(target()->Put(name, data));
  core_->Untrack(name);
  return Status::OK();
}

Result<std::string> FaultInjectionStore::Get(const std::string& name, uint64_t max_size) {
  return Store::Get(name, max_size);
}

Result<std::vector<ObjectInfo>> FaultInjectionStore::List(const std::string& dir) {
  Core::Decision d = core_->Decide(Op::kList, dir);
  if (d.verdict != Verdict::kGo) return d.status;
  return target()->List(dir);
}

Result<uint64_t> FaultInjectionStore::Stat(const std::string& name) {
  Core::Decision d = core_->Decide(Op::kStat, name);
  if (d.verdict != Verdict::kGo) return d.status;
  return target()->Stat(name);
}

Status FaultInjectionStore::Delete(const std::string& name) {
  Core::Decision d = core_->Decide(Op::kDelete, name);
  if (d.verdict == Verdict::kDown) return d.status;
  if (d.verdict != Verdict::kGo) {
    if ((d.rnd & 1) && target()->Delete(name).ok()) core_->Untrack(name);
    return d.status;
  }
  HBISS_RETURN_IF_ERROR(target()->Delete(name));
  core_->Untrack(name);
  return Status::OK();
}

Status FaultInjectionStore::DeleteDir(const std::string& dir) {
  Core::Decision d = core_->Decide(Op::kDeleteDir, dir);
  if (d.verdict == Verdict::kDown) return d.status;
  if (d.verdict != Verdict::kGo) {
    if ((d.rnd & 1) && target()->DeleteDir(dir).ok()) core_->UntrackDir(dir);
    return d.status;
  }
  HBISS_RETURN_IF_ERROR(target()->DeleteDir(dir));
  core_->UntrackDir(dir);
  return Status::OK();
}

Status FaultInjectionStore::RenameDir(const std::string& from, const std::string& to) {
  Core::Decision d = core_->Decide(Op::kRenameDir, from + " -> " + to);
  if (d.verdict == Verdict::kDown) return d.status;
  if (d.verdict != Verdict::kGo) {
    if ((d.rnd & 1) && target()->RenameDir(from, to).ok()) core_->MoveDir(from, to);
    return d.status;
  }
  HBISS_RETURN_IF_ERROR(target()->RenameDir(from, to));
  core_->MoveDir(from, to);
  return Status::OK();
}

Result<std::unique_ptr<Lock>> FaultInjectionStore::TryLock(const std::string& name) {
  Core::Decision d = core_->Decide(Op::kLock, name);
  if (d.verdict != Verdict::kGo) return d.status;
  HBISS_ASSIGN_OR_RETURN(std::unique_ptr<Lock> l, target()->TryLock(name));
  auto slot = std::make_shared<LockSlot>(std::move(l));
  {
    MutexLock lock(&core_->mu);
    core_->locks.push_back(slot);
  }
  return std::unique_ptr<Lock>(std::make_unique<FaultLock>(std::move(slot)));
}

}  // namespace hbiss::store
