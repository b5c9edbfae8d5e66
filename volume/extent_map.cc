#include "volume/extent_map.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>

namespace hbiss::volume {

namespace {

constexpr uint32_t kDenseLocBytes = 6;
constexpr size_t kBitmapBytes = ExtentMap::kChunkBlocks / 8;
constexpr size_t kDensePayload = kBitmapBytes + ExtentMap::kChunkBlocks * kDenseLocBytes;
// A sparse chunk with more extents than this is larger than a dense one.
constexpr uint32_t kMaxSparse = kDensePayload / 8;

// Bytes glibc malloc really uses for a request of n bytes: an 8-byte header,
// 16-byte rounding, 32 bytes at least.
uint64_t AllocBytes(uint64_t n) {
  uint64_t c = (n + 8 + 15) & ~uint64_t(15);
  return c < 32 ? 32 : c;
}

inline uint64_t Pack(uint32_t start, uint32_t len, uint32_t seg, uint32_t slot) {
  return (uint64_t(start) << 56) | (uint64_t(len - 1) << 48) | (uint64_t(seg) << 16) | slot;
}
inline uint32_t PStart(uint64_t e) { return uint32_t(e >> 56); }
inline uint32_t PLen(uint64_t e) { return uint32_t((e >> 48) & 0xff) + 1; }
inline uint32_t PSeg(uint64_t e) { return uint32_t(e >> 16); }
inline uint32_t PSlot(uint64_t e) { return uint32_t(e & 0xffff); }

}  // namespace

struct ExtentMap::Chunk {
  uint16_t n;       // sparse: extents in use
  uint16_t cap;     // sparse: capacity in extents
  uint16_t mapped;  // blocks mapped in this chunk
  uint8_t dense;
  uint8_t pad;

  uint64_t* ext() { return reinterpret_cast<uint64_t*>(this + 1); }
  const uint64_t* ext() const { return reinterpret_cast<const uint64_t*>(this + 1); }
  uint8_t* bitmap() { return reinterpret_cast<uint8_t*>(this + 1); }
  const uint8_t* bitmap() const { return reinterpret_cast<const uint8_t*>(this + 1); }
  uint8_t* locs() { return bitmap() + kBitmapBytes; }
  const uint8_t* locs() const { return bitmap() + kBitmapBytes; }

  bool Present(uint32_t i) const { return (bitmap()[i >> 3] >> (i & 7)) & 1; }
  void GetLoc(uint32_t i, uint32_t* seg, uint32_t* slot) const {
    const uint8_t* p = locs() + i * kDenseLocBytes;
    *seg = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
    *slot = uint32_t(p[4]) | uint32_t(p[5]) << 8;
  }
  void SetLoc(uint32_t i, uint32_t seg, uint32_t slot) {
    uint8_t* p = locs() + i * kDenseLocBytes;
    p[0] = uint8_t(seg);
    p[1] = uint8_t(seg >> 8);
    p[2] = uint8_t(seg >> 16);
    p[3] = uint8_t(seg >> 24);
    p[4] = uint8_t(slot);
    p[5] = uint8_t(slot >> 8);
  }
  size_t Bytes() const { return sizeof(Chunk) + (dense ? kDensePayload : size_t(cap) * 8); }
};

ExtentMap::ExtentMap(uint64_t blocks) : blocks_(blocks) {
  uint64_t chunks = (blocks + kChunkBlocks - 1) / kChunkBlocks;
  dir_.resize((chunks + kChunksPerPage - 1) / kChunksPerPage);
  dir_.shrink_to_fit();
}

ExtentMap::~ExtentMap() { Reset(); }

void ExtentMap::Reset() {
  for (auto& page : dir_) {
    if (!page) continue;
    for (uint32_t i = 0; i < kChunksPerPage; i++) {
      if (page[i]) std::free(page[i]);
    }
    page.reset();
  }
  mapped_ = 0;
  chunk_bytes_ = 0;
  pages_ = 0;
}

ExtentMap::Chunk*& ExtentMap::Slot(uint64_t ci) {
  auto& page = dir_[ci / kChunksPerPage];
  if (!page) {
    page.reset(new Chunk*[kChunksPerPage]());
    pages_++;
  }
  return page[ci % kChunksPerPage];
}

ExtentMap::Chunk* ExtentMap::Get(uint64_t ci) const {
  const auto& page = dir_[ci / kChunksPerPage];
  return page ? page[ci % kChunksPerPage] : nullptr;
}

void ExtentMap::FreeChunk(Chunk* c) {
  chunk_bytes_ -= AllocBytes(c->Bytes());
  std::free(c);
}

uint64_t ExtentMap::MemoryUsage() const {
  return sizeof(*this) + AllocBytes(dir_.capacity() * sizeof(dir_[0])) +
         pages_ * AllocBytes(kChunksPerPage * sizeof(Chunk*)) + chunk_bytes_;
}

void ExtentMap::Set(uint64_t lba, uint64_t count, uint32_t seg, uint32_t first_slot) {
  assert(lba + count <= blocks_ && first_slot + count <= kMaxSlot && seg != 0);
  while (count > 0) {
    uint64_t ci = lba / kChunkBlocks;
    uint32_t start = uint32_t(lba % kChunkBlocks);
    uint32_t len = uint32_t(std::min<uint64_t>(count, kChunkBlocks - start));
    SetInChunk(ci, start, len, seg, first_slot, false);
    lba += len;
    count -= len;
    first_slot += len;
  }
}

void ExtentMap::Clear(uint64_t lba, uint64_t count) {
  assert(lba + count <= blocks_);
  while (count > 0) {
    uint64_t ci = lba / kChunkBlocks;
    uint32_t start = uint32_t(lba % kChunkBlocks);
    uint32_t len = uint32_t(std::min<uint64_t>(count, kChunkBlocks - start));
    if (Get(ci) != nullptr) SetInChunk(ci, start, len, 0, 0, true);
    lba += len;
    count -= len;
  }
}

void ExtentMap::SetInChunk(uint64_t ci, uint32_t s, uint32_t len, uint32_t seg, uint32_t slot,
                           bool clear) {
  Chunk*& ref = Slot(ci);
  Chunk* c = ref;
  uint32_t e_end = s + len;

  if (c != nullptr && c->dense) {
    int delta = 0;
    uint8_t* bm = c->bitmap();
    for (uint32_t i = s; i < e_end; i++) {
      bool was = c->Present(i);
      if (clear) {
        if (was) {
          bm[i >> 3] &= uint8_t(~(1u << (i & 7)));
          delta--;
        }
      } else {
        if (!was) {
          bm[i >> 3] |= uint8_t(1u << (i & 7));
          delta++;
        }
        c->SetLoc(i, seg, slot + (i - s));
      }
    }
    c->mapped = uint16_t(c->mapped + delta);
    mapped_ += delta;
    if (c->mapped == 0) {
      FreeChunk(c);
      ref = nullptr;
      return;
    }
    if (!clear && len < 64) return;  // cheap path: stay dense
    // Count the runs the sparse form would need.
    uint64_t tmp[kChunkBlocks];
    uint32_t m = 0;
    uint32_t pseg = 0, pend = 0;
    for (uint32_t i = 0; i < kChunkBlocks; i++) {
      if (!c->Present(i)) continue;
      uint32_t g, l;
      c->GetLoc(i, &g, &l);
      if (m > 0 && pend == i && pseg == g && PSlot(tmp[m - 1]) + PLen(tmp[m - 1]) == l) {
        uint64_t e = tmp[m - 1];
        tmp[m - 1] = Pack(PStart(e), PLen(e) + 1, PSeg(e), PSlot(e));
      } else {
        if (m == kMaxSparse / 2) return;  // sparse would not be half the size: stay dense
        tmp[m++] = Pack(i, 1, g, l);
      }
      pseg = g;
      pend = i + 1;
    }
    size_t bytes = sizeof(Chunk) + size_t(m) * 8;
    Chunk* nc = static_cast<Chunk*>(std::malloc(bytes));
    if (nc == nullptr) throw std::bad_alloc();
    nc->n = uint16_t(m);
    nc->cap = uint16_t(m);
    nc->mapped = c->mapped;
    nc->dense = 0;
    nc->pad = 0;
    std::memcpy(nc->ext(), tmp, size_t(m) * 8);
    FreeChunk(c);
    chunk_bytes_ += AllocBytes(bytes);
    ref = nc;
    return;
  }

  // Sparse (or absent) chunk: rebuild the extent list in a scratch array.
  uint64_t tmp[kChunkBlocks + 2];
  uint32_t m = 0;
  bool placed = clear;
  int delta = clear ? 0 : int(len);
  uint32_t n = c ? c->n : 0;
  const uint64_t* ext = c ? c->ext() : nullptr;
  auto push = [&](uint64_t e) {
    if (m > 0) {
      uint64_t p = tmp[m - 1];
      if (PStart(p) + PLen(p) == PStart(e) && PSeg(p) == PSeg(e) &&
          PSlot(p) + PLen(p) == PSlot(e)) {
        tmp[m - 1] = Pack(PStart(p), PLen(p) + PLen(e), PSeg(p), PSlot(p));
        return;
      }
    }
    tmp[m++] = e;
  };
  for (uint32_t k = 0; k < n; k++) {
    uint64_t e = ext[k];
    uint32_t es = PStart(e), el = PLen(e), ee = es + el;
    if (ee <= s) {
      push(e);
    } else if (es >= e_end) {
      if (!placed) {
        push(Pack(s, len, seg, slot));
        placed = true;
      }
      push(e);
    } else {
      uint32_t lo = std::max(es, s), hi = std::min(ee, e_end);
      delta -= int(hi - lo);
      if (es < s) push(Pack(es, s - es, PSeg(e), PSlot(e)));
      if (ee > e_end) {
        if (!placed) {
          push(Pack(s, len, seg, slot));
          placed = true;
        }
        push(Pack(e_end, ee - e_end, PSeg(e), PSlot(e) + (e_end - es)));
      }
    }
  }
  if (!placed) push(Pack(s, len, seg, slot));
  mapped_ += delta;
  uint32_t new_mapped = (c ? c->mapped : 0) + delta;

  if (m == 0) {
    if (c) {
      FreeChunk(c);
      ref = nullptr;
    }
    return;
  }
  if (m > kMaxSparse) {
    // Convert to dense.
    size_t bytes = sizeof(Chunk) + kDensePayload;
    Chunk* nc = static_cast<Chunk*>(std::malloc(bytes));
    if (nc == nullptr) throw std::bad_alloc();
    std::memset(nc, 0, bytes);
    nc->dense = 1;
    nc->mapped = uint16_t(new_mapped);
    for (uint32_t k = 0; k < m; k++) {
      uint64_t e = tmp[k];
      for (uint32_t i = 0; i < PLen(e); i++) {
        uint32_t b = PStart(e) + i;
        nc->bitmap()[b >> 3] |= uint8_t(1u << (b & 7));
        nc->SetLoc(b, PSeg(e), PSlot(e) + i);
      }
    }
    if (c) FreeChunk(c);
    chunk_bytes_ += AllocBytes(bytes);
    ref = nc;
    return;
  }
  if (c == nullptr || m > c->cap) {
    uint32_t cap = m;
    if (c != nullptr) cap = std::max<uint32_t>(m, std::min<uint32_t>(c->cap + c->cap / 2, kMaxSparse));
    size_t bytes = sizeof(Chunk) + size_t(cap) * 8;
    Chunk* nc = static_cast<Chunk*>(std::malloc(bytes));
    if (nc == nullptr) throw std::bad_alloc();
    nc->cap = uint16_t(cap);
    nc->dense = 0;
    nc->pad = 0;
    if (c) FreeChunk(c);
    chunk_bytes_ += AllocBytes(bytes);
    ref = c = nc;
  }
  c->n = uint16_t(m);
  c->mapped = uint16_t(new_mapped);
  std::memcpy(c->ext(), tmp, size_t(m) * 8);
}

void ExtentMap::LookupChunk(const Chunk* c, uint64_t base, uint32_t s, uint32_t len,
                            std::vector<MapRun>* out) {
  auto emit = [out](uint64_t lba, uint64_t count, bool mapped, uint32_t seg, uint32_t slot) {
    if (!out->empty()) {
      MapRun& p = out->back();
      if (p.lba + p.count == lba && p.mapped == mapped &&
          (!mapped || (p.seg == seg && p.slot + p.count == slot))) {
        p.count += count;
        return;
      }
    }
    out->push_back(MapRun{lba, count, mapped, seg, slot});
  };
  uint32_t e_end = s + len;
  if (c == nullptr) {
    emit(base + s, len, false, 0, 0);
    return;
  }
  if (c->dense) {
    for (uint32_t i = s; i < e_end; i++) {
      if (c->Present(i)) {
        uint32_t g, l;
        c->GetLoc(i, &g, &l);
        emit(base + i, 1, true, g, l);
      } else {
        emit(base + i, 1, false, 0, 0);
      }
    }
    return;
  }
  uint32_t pos = s;
  const uint64_t* ext = c->ext();
  for (uint32_t k = 0; k < c->n && pos < e_end; k++) {
    uint64_t e = ext[k];
    uint32_t es = PStart(e), ee = es + PLen(e);
    if (ee <= pos) continue;
    if (es >= e_end) break;
    if (es > pos) {
      emit(base + pos, es - pos, false, 0, 0);
      pos = es;
    }
    uint32_t hi = std::min(ee, e_end);
    emit(base + pos, hi - pos, true, PSeg(e), PSlot(e) + (pos - es));
    pos = hi;
  }
  if (pos < e_end) emit(base + pos, e_end - pos, false, 0, 0);
}

void ExtentMap::Lookup(uint64_t lba, uint64_t count, std::vector<MapRun>* out) const {
  assert(lba + count <= blocks_);
  out->clear();
  while (count > 0) {
    uint64_t ci = lba / kChunkBlocks;
    uint32_t start = uint32_t(lba % kChunkBlocks);
    uint32_t len = uint32_t(std::min<uint64_t>(count, kChunkBlocks - start));
    LookupChunk(Get(ci), ci * kChunkBlocks, start, len, out);
    lba += len;
    count -= len;
  }
}

void ExtentMap::ForEach(const std::function<void(const MapRun&)>& fn) const {
  std::vector<MapRun> runs;
  MapRun pending;
  bool have = false;
  for (uint64_t pi = 0; pi < dir_.size(); pi++) {
    if (!dir_[pi]) continue;
    for (uint32_t k = 0; k < kChunksPerPage; k++) {
      const Chunk* c = dir_[pi][k];
      if (c == nullptr) continue;
      uint64_t ci = pi * kChunksPerPage + k;
      runs.clear();
      LookupChunk(c, ci * kChunkBlocks, 0, kChunkBlocks, &runs);
      for (const MapRun& r : runs) {
        if (!r.mapped) continue;
        if (have && pending.lba + pending.count == r.lba && pending.seg == r.seg &&
            pending.slot + pending.count == r.slot) {
          pending.count += r.count;
          continue;
        }
        if (have) fn(pending);
        pending = r;
        have = true;
      }
    }
  }
  if (have) fn(pending);
}

}  // namespace hbiss::volume
