#include "volume/chunk_cache.h"

namespace hbiss::volume {

ChunkCache::Chunk ChunkCache::Find(uint64_t seg, uint64_t index) {
  MutexLock g(&mu_);
  auto it = map_.find(Key{seg, index});
  if (it == map_.end()) {
    misses_++;
    return nullptr;
  }
  hits_++;
  lru_.splice(lru_.begin(), lru_, it->second.pos);
  return it->second.data;
}

void ChunkCache::Insert(uint64_t seg, uint64_t index, Chunk data) {
  if (!data || data->size() > capacity_) return;
  MutexLock g(&mu_);
  const Key key{seg, index};
  auto it = map_.find(key);
  if (it != map_.end()) {
    bytes_ -= it->second.data->size();
    lru_.erase(it->second.pos);
    map_.erase(it);
  }
  while (bytes_ + data->size() > capacity_ && !lru_.empty()) {
    auto victim = map_.find(lru_.back());
    bytes_ -= victim->second.data->size();
    map_.erase(victim);
    lru_.pop_back();
  }
  lru_.push_front(key);
  bytes_ += data->size();
  map_.emplace(key, Entry{std::move(data), lru_.begin()});
}

uint64_t ChunkCache::bytes() const {
  MutexLock g(&mu_);
  return bytes_;
}

uint64_t ChunkCache::hits() const {
  MutexLock g(&mu_);
  return hits_;
}

uint64_t ChunkCache::misses() const {
  MutexLock g(&mu_);
  return misses_;
}

}  // namespace hbiss::volume
