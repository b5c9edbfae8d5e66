// An LRU cache of fixed-size chunks of immutable objects (closed segments),
// bounded in bytes. Thread-safe.
//
// The volume puts it in front of stores whose reads are not cached on this
// host (HDFS): there a small random read costs a round trip to a DataNode, so
// the volume reads whole chunks and keeps the most recently used ones.
// Entries are never invalidated: a segment is immutable once closed and its
// id is never reused.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "util/mutex.h"
#include "util/thread_annotations.h"

namespace hbiss::volume {

class ChunkCache {
 public:
  using Chunk = std::shared_ptr<const std::vector<uint8_t>>;

  // Holds at most capacity_bytes of chunk data (0: holds nothing).
  explicit ChunkCache(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  // The chunk `index` of object `seg`, or null. A hit becomes most recent.
  Chunk Find(uint64_t seg, uint64_t index) EXCLUDES(mu_);

  // Adds (or replaces) a chunk, evicting least recently used ones to fit. A
  // chunk larger than the capacity is not kept.
  void Insert(uint64_t seg, uint64_t index, Chunk data) EXCLUDES(mu_);

  uint64_t bytes() const EXCLUDES(mu_);
  uint64_t hits() const EXCLUDES(mu_);
  uint64_t misses() const EXCLUDES(mu_);

 private:
  struct Key {
    uint64_t seg, index;
    bool operator==(const Key& o) const { return seg == o.seg && index == o.index; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<uint64_t>()(k.seg * 0x9e3779b97f4a7c15ull ^ k.index);
    }
  };
  struct Entry {
    Chunk data;
    std::list<Key>::iterator pos;
  };

  const uint64_t capacity_;
  mutable Mutex mu_;
  std::list<Key> lru_ GUARDED_BY(mu_);  // most recent first
  std::unordered_map<Key, Entry, KeyHash> map_ GUARDED_BY(mu_);
  uint64_t bytes_ GUARDED_BY(mu_) = 0;
  uint64_t hits_ GUARDED_BY(mu_) = 0;
  uint64_t misses_ GUARDED_BY(mu_) = 0;
};

}  // namespace hbiss::volume
