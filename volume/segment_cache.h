// SegmentCache: the read side of a volume's closed segments. For each one it
// keeps the CRC of every data slot (from the segment's summary object, or a
// scan of its batch headers), reads slots through an open reader (and through
// a process-wide cache of 64 KiB chunks on stores that do not cache reads),
// and
// checks every block against its CRC before returning it: data that fails is
// never returned (Corruption).
//
// Bounds, per process rather than per volume:
//  * open readers (one file descriptor each on the local store, a DataNode
//    stream on HDFS) are kept in a ReaderPool shared by every volume: at most
//    its capacity stay open, least recently used closed first;
//  * CRC tables, and the cached chunks, are kept in process-wide LRUs bounded
//    in bytes (their shares of the memory limit, memory_budget.h).
// A closed segment never changes and its id is never reused, so nothing
// cached can go stale; Drop forgets a deleted segment. (A volume that
// follows a log another process writes sees that process's open segment
// grow: it drops what it cached of it after each catch-up, and keeps no
// read cache.)
//
// Thread-safe; no lock is held across store I/O.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/store.h"
#include "util/mutex.h"
#include "util/status.h"
#include "volume/extent_map.h"
#include "volume/layout.h"
#include "volume/log_reader.h"

namespace hbiss::volume {

// A process-wide LRU of shared values keyed by (owner, id), bounded by the
// sum of the values' charges. Values in use stay alive (shared_ptr) after
// eviction. Counts the hits and misses of Find (for metrics). Thread-safe.
template <typename V>
class SharedLru {
 public:
  explicit SharedLru(uint64_t capacity) : capacity_(capacity) {}
  SharedLru(const SharedLru&) = delete;
  SharedLru& operator=(const SharedLru&) = delete;

  std::shared_ptr<V> Find(const void* owner, uint64_t id) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    auto it = map_.find(Key{owner, id});
    if (it == map_.end()) {
      misses_.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    hits_.fetch_add(1, std::memory_order_relaxed);
    lru_.splice(lru_.begin(), lru_, it->second.pos);
    return it->second.value;
  }
  void Insert(const void* owner, uint64_t id, std::shared_ptr<V> v, uint64_t charge)
      EXCLUDES(mu_) {
    std::vector<std::shared_ptr<V>> evicted;  // released after the lock
    MutexLock l(&mu_);
    EraseLocked(Key{owner, id}, &evicted);
    lru_.push_front(Key{owner, id});
    map_[Key{owner, id}] = Entry{std::move(v), charge, lru_.begin()};
    used_ += charge;
    while (used_ > capacity_ && !lru_.empty()) EraseLocked(lru_.back(), &evicted);
    l.Unlock();
  }
  void Erase(const void* owner, uint64_t id) EXCLUDES(mu_) {
    std::vector<std::shared_ptr<V>> evicted;
    MutexLock l(&mu_);
    EraseLocked(Key{owner, id}, &evicted);
    l.Unlock();
  }
  void EraseOwner(const void* owner) EXCLUDES(mu_) {
    std::vector<std::shared_ptr<V>> evicted;
    MutexLock l(&mu_);
    for (auto it = lru_.begin(); it != lru_.end();) {
      auto next = std::next(it);
      if (it->owner == owner) EraseLocked(*it, &evicted);
      it = next;
    }
    l.Unlock();
  }
  void SetCapacity(uint64_t capacity) EXCLUDES(mu_) {
    std::vector<std::shared_ptr<V>> evicted;
    MutexLock l(&mu_);
    capacity_ = capacity;
    while (used_ > capacity_ && !lru_.empty()) EraseLocked(lru_.back(), &evicted);
    l.Unlock();
  }
  uint64_t used() const EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return used_;
  }
  uint64_t capacity() const EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return capacity_;
  }
  // Finds that found a value, and that found none, since the process began.
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }

 private:
  struct Key {
    const void* owner;
    uint64_t id;
    bool operator==(const Key& o) const { return owner == o.owner && id == o.id; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<const void*>()(k.owner) ^ std::hash<uint64_t>()(k.id * 0x9e3779b97f4a7c15ull);
    }
  };
  struct Entry {
    std::shared_ptr<V> value;
    uint64_t charge = 0;
    typename std::list<Key>::iterator pos;
  };

  void EraseLocked(const Key& k, std::vector<std::shared_ptr<V>>* evicted) REQUIRES(mu_) {
    auto it = map_.find(k);
    if (it == map_.end()) return;
    used_ -= it->second.charge;
    evicted->push_back(std::move(it->second.value));
    lru_.erase(it->second.pos);
    map_.erase(it);
  }

  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  mutable Mutex mu_;
  uint64_t capacity_ GUARDED_BY(mu_);
  uint64_t used_ GUARDED_BY(mu_) = 0;
  std::list<Key> lru_ GUARDED_BY(mu_);  // most recent first
  std::unordered_map<Key, Entry, KeyHash> map_ GUARDED_BY(mu_);
};

// The open segment readers of the process: at most capacity() of them are
// kept open. The process-wide pool's capacity is DefaultOpenReaders() when
// it is first used: a quarter of the soft RLIMIT_NOFILE, so that readers
// leave the other three quarters to volume locks, open segments and client
// sockets, between kMinOpenReaders and kMaxOpenReaders (hbiss serve raises
// its soft limit to the hard one before, so it gets kMaxOpenReaders under
// any usual hard limit). SetCapacity changes it later.
using ReaderPool = SharedLru<store::SegmentReader>;
inline constexpr uint64_t kMaxOpenReaders = 256;
inline constexpr uint64_t kMinOpenReaders = 4;
// min(kMaxOpenReaders, max(kMinOpenReaders, nofile_soft_limit / 4)).
uint64_t OpenReadersFor(uint64_t nofile_soft_limit);
// OpenReadersFor(the process's soft RLIMIT_NOFILE now); kMaxOpenReaders if
// it is unlimited or getrlimit fails.
uint64_t DefaultOpenReaders();
ReaderPool& DefaultReaderPool();

// The CRC tables of closed segments of every volume of the process, bounded
// in bytes (default a quarter of kDefaultMemoryLimit: 8,192 tables of 64 MiB
// segments).
struct CrcTable {
  std::vector<uint32_t> crcs;
  std::vector<bool> valid;  // slot has a CRC from a valid batch header
  uint64_t bytes() const { return crcs.size() * 4 + valid.size() / 8 + 64; }
};
using CrcTableCache = SharedLru<const CrcTable>;
CrcTableCache& DefaultCrcTableCache();

// 64 KiB chunks of closed segments of every volume of the process, read from
// stores that do not cache reads, bounded in bytes (default a quarter of
// kDefaultMemoryLimit). Keyed by (volume, segment << 16 | chunk index).
using ReadCache = SharedLru<const std::vector<uint8_t>>;
ReadCache& DefaultReadCache();

class SegmentCache {
 public:
  // `read_cache` (null: none) caches small reads; use it on stores that do
  // not cache reads. The pools default to the process-wide ones.
  // Reads the segments of log directory `dir` (layout.h).
  SegmentCache(store::Store* store, layout::LogDir dir, uint64_t volume_id, uint32_t seg_slots,
               ReadCache* read_cache, ReaderPool* readers = &DefaultReaderPool(),
               CrcTableCache* tables = &DefaultCrcTableCache());
  ~SegmentCache();
  SegmentCache(const SegmentCache&) = delete;
  SegmentCache& operator=(const SegmentCache&) = delete;

  // The CRC table of a segment that was just closed (saves a summary Get).
  void Insert(uint64_t seg, std::shared_ptr<const CrcTable> table);
  // Forgets segment `seg` (it is being deleted, or, for a volume that follows
  // another process's log, it grew since it was read: its reader and CRC
  // table are stale; such a volume has no read cache).
  void Drop(uint64_t seg);
  // Forgets every segment of this volume.
  void DropAll();
  // The volume's log moved to `dir` (a new epoch, doc/ownership.md): objects
  // are opened there from now on. Readers already open keep reading (segment
  // ids carry over between epochs, so nothing cached goes stale).
  void SetDir(layout::LogDir dir) EXCLUDES(dir_mu_);
  layout::LogDir dir() const EXCLUDES(dir_mu_);

  // Reads the blocks of run `r` (mapped into closed segment r.seg) that
  // overlap [offset, offset + out.size()) into the matching bytes of out,
  // checking their CRCs. REQUIRES: r.count <= kMaxRunBlocks.
  static constexpr uint64_t kMaxRunBlocks = 1024;
  Status ReadRun(const MapRun& r, uint64_t offset, std::span<uint8_t> out);

  // Calls fn(offset, header) for each valid batch header of closed segment
  // `seg` (see ScanBatchHeaders).
  Result<ScanEnd> Scan(uint64_t seg, const std::function<void(uint64_t, const BatchHeader&)>& fn);


 private:
  Result<std::shared_ptr<store::SegmentReader>> Reader(uint64_t seg);
  Result<std::shared_ptr<const CrcTable>> Table(uint64_t seg, store::SegmentReader* reader);
  Status ReadSlots(uint64_t seg, store::SegmentReader* reader, uint32_t slot0, uint64_t n,
                   uint8_t* dst);

  store::Store* const store_;
  const std::string name_;  // the volume's, for messages
  mutable Mutex dir_mu_;
  layout::LogDir dir_ GUARDED_BY(dir_mu_);
  const uint64_t volume_id_;
  const uint32_t seg_slots_;
  ReaderPool* const readers_;
  CrcTableCache* const tables_;
  ReadCache* const chunks_;
};

}  // namespace hbiss::volume
