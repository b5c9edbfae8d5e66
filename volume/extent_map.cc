#include "volume/extent_map.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

namespace hbiss::volume {

namespace {

thread_local int64_t fail_allocations_after = -1;

// Every node allocation consults this, so that tests can make it fail.
bool AllowAlloc() {
  if (fail_allocations_after == 0) return false;
  if (fail_allocations_after > 0) fail_allocations_after--;
  return true;
}

void* Alloc(size_t n) { return AllowAlloc() ? std::malloc(n) : nullptr; }

// The bytes an allocation really takes: its usable size plus the chunk header.
uint64_t AllocBytes(const void* p) {
  return malloc_usable_size(const_cast<void*>(p)) + sizeof(size_t);
}

Status OutOfMemory() { return Status::IOError("out of memory"); }

constexpr uint16_t kNarrowEnd = 0xffff;         // segment delta of an end marker
constexpr uint32_t kNarrowSegSpan = kNarrowEnd;  // deltas 0..0xfffe
constexpr uint32_t kScratch = 3 * ExtentMap::kLeafMaxEntries + 8;

// Leaf size classes, in bytes: a 16-byte header plus 4..128 narrow (6-byte)
// entries, and one class for 128 wide (8-byte) entries. Each is the largest
// multiple of 4 of which n fit in a 4 KiB page, for some n, so that pages
// waste little.
constexpr uint32_t kLeafHeader = 16;
constexpr uint32_t kNumClasses = 21;
constexpr uint16_t kClassBytes[kNumClasses] = {40,  56,  80,  100, 128, 144, 168,
                                               204, 224, 256, 292, 312, 340, 372,
                                               408, 448, 512, 584, 680, 816, 1360};

// The smallest class of at least `bytes` bytes. REQUIRES: bytes <= 1360.
uint32_t ClassFor(uint32_t bytes) {
  uint32_t c = 0;
  while (kClassBytes[c] < bytes) c++;
  return c;
}

// Entries a leaf of class cls holds.
uint32_t CapFor(uint32_t cls, bool wide) {
  return std::min<uint32_t>(ExtentMap::kLeafMaxEntries,
                            (kClassBytes[cls] - kLeafHeader) / (wide ? 8 : 6));
}

// Number of elements of the strided array a[0], a[w], ... a[(n-1)*w]
// (sorted) that are <= x. Branch-free, so that a lookup does not pay a
// mispredicted branch per step.
inline uint32_t CountLE(const uint16_t* a, uint32_t n, uint32_t w, uint32_t x) {
  if (n == 0) return 0;
  const uint16_t* base = a;
  while (n > 1) {
    uint32_t half = n / 2;
    base = base[half * w] <= x ? base + half * w : base;
    n -= half;
  }
  return uint32_t(base - a) / w + (base[0] <= x ? 1 : 0);
}

}  // namespace

namespace extent_map_internal {

// An extent inside one group: offsets are relative to the group's first block.
struct Ext {
  uint32_t start, len, seg, slot;
};

// A leaf: header, then n entries of 3 (narrow) or 4 (wide) uint16 units.
// Narrow: {offset, seg - seg_base (kNarrowEnd: end marker), slot}.
// Wide:   {offset, slot, seg low 16, seg high 16} (seg 0: end marker).
// A leaf is never empty. Its storage is a slot of its class in a LeafPool.
struct Leaf {
  std::atomic<uint32_t> refs;
  uint32_t seg_base;
  uint32_t page : 26;  // LeafPool page index
  uint32_t cls : 5;    // size class
  uint32_t wide : 1;
  uint16_t mapped_m1;  // blocks mapped by this leaf, minus one
  uint8_t n;           // entries
  uint8_t cap;         // entries that fit

  uint32_t mapped() const { return uint32_t(mapped_m1) + 1; }
  uint16_t* units() { return reinterpret_cast<uint16_t*>(this + 1); }
  const uint16_t* units() const { return reinterpret_cast<const uint16_t*>(this + 1); }
  uint32_t unit() const { return wide ? 4 : 3; }
  const uint16_t* entry(uint32_t k) const { return units() + k * unit(); }
  uint32_t Off(uint32_t k) const { return entry(k)[0]; }
  bool IsEnd(uint32_t k) const {
    const uint16_t* e = entry(k);
    return wide ? (e[2] == 0 && e[3] == 0) : e[1] == kNarrowEnd;
  }
  uint32_t Seg(uint32_t k) const {
    const uint16_t* e = entry(k);
    return wide ? (uint32_t(e[2]) | uint32_t(e[3]) << 16) : seg_base + e[1];
  }
  uint32_t Slot(uint32_t k) const {
    const uint16_t* e = entry(k);
    return wide ? e[1] : e[2];
  }
  // The extent whose start entry is k; *next is the entry after it.
  Ext At(uint32_t k, uint32_t* next) const {
    Ext x{Off(k), 1, Seg(k), Slot(k)};
    if (k + 1 < n && IsEnd(k + 1)) {
      x.len = Off(k + 1) - x.start + 1;
      *next = k + 2;
    } else {
      *next = k + 1;
    }
    return x;
  }
  // Index of the start entry of the first extent that ends after offset x
  // (n if none), or of a single-block extent just before it.
  uint32_t FirstEndingAfter(uint32_t x) const {
    uint32_t lo = CountLE(units(), n, unit(), x);  // entries with offset <= x
    if (lo == 0) return 0;
    uint32_t k = lo - 1;
    if (IsEnd(k)) return Off(k) == x ? k - 1 : k + 1;
    return k;  // a start entry at or before x: the extent may cover x
  }
};
static_assert(sizeof(Leaf) == kLeafHeader, "leaf header size");

// A group: header, then cap leaf pointers, then cap uint16 keys.
struct Group {
  std::atomic<uint32_t> refs;
  uint32_t n;       // leaves
  uint32_t cap;
  uint32_t mapped;  // blocks mapped in this group

  Leaf** leaves() { return reinterpret_cast<Leaf**>(this + 1); }
  Leaf* const* leaves() const { return reinterpret_cast<Leaf* const*>(this + 1); }
  uint16_t* keys() { return reinterpret_cast<uint16_t*>(leaves() + cap); }
  const uint16_t* keys() const { return reinterpret_cast<const uint16_t*>(leaves() + cap); }
  uint32_t SpanStart(uint32_t i) const { return i == 0 ? 0 : keys()[i]; }
  // The leaf whose span holds offset x. REQUIRES: n > 0.
  uint32_t Find(uint32_t x) const { return CountLE(keys() + 1, n - 1, 1, x); }
};

// A directory slot is nullptr (an empty group), a Group*, or a Leaf* with
// its low bit set: a group of one leaf, stored as that leaf alone so that a
// sparse group pays no group allocation. The leaf's reference count is then
// the group's, and its mapped count the group's. (Leaves are 4-aligned.)
inline bool IsLeafSlot(const Group* p) { return (reinterpret_cast<uintptr_t>(p) & 1) != 0; }
inline Leaf* SlotLeaf(const Group* p) {
  return reinterpret_cast<Leaf*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t(1));
}
inline Group* LeafSlot(Leaf* l) {
  return reinterpret_cast<Group*>(reinterpret_cast<uintptr_t>(l) | 1);
}
// Heap bytes of a non-empty slot's group allocation (a one-leaf slot has none).
inline uint64_t SlotBytes(const Group* p) { return IsLeafSlot(p) ? 0 : AllocBytes(p); }
inline uint32_t SlotMapped(const Group* p) {
  return IsLeafSlot(p) ? SlotLeaf(p)->mapped() : p->mapped;
}

// A one-leaf slot seen as a Group with n = cap = 1, so that the code that
// reads or edits groups handles it too. Its refs are a copy of the leaf's,
// taken by Make; writing to the view changes nothing in the map.
class GroupView {
 public:
  GroupView() = default;
  GroupView(const GroupView&) = delete;
  GroupView& operator=(const GroupView&) = delete;
  Group* Make(Leaf* l) {
    auto* g = new (buf_) Group;
    g->refs.store(l->refs.load(std::memory_order_acquire), std::memory_order_relaxed);
    g->n = 1;
    g->cap = 1;
    g->mapped = l->mapped();
    g->leaves()[0] = l;
    g->keys()[0] = 0;
    return g;
  }
  // The group of slot p: p itself or, for a one-leaf slot, this view of it.
  const Group* Of(const Group* p) { return IsLeafSlot(p) ? Make(SlotLeaf(p)) : p; }

 private:
  alignas(Group) alignas(Leaf*) unsigned char buf_[sizeof(Group) + sizeof(Leaf*) + 8];
};

// The slab pool that holds the leaves of a map and of its snapshots.
//
// Each page holds slots of one size class; a class's pages with a free slot
// are on its avail list. A page whose last slot is freed goes back to
// malloc. Compact() moves the leaves a map owns alone out of the emptiest
// pages of each class, so pages left sparse by leaves that grew into the
// next class (or shrank, or went away) are freed.
//
// Thread-safe: a map and its snapshots may allocate and free on different
// threads (mu_). Destroyed when the last map that shares it drops it.
class LeafPool {
 public:
  LeafPool() = default;
  LeafPool(const LeafPool&) = delete;
  LeafPool& operator=(const LeafPool&) = delete;
  ~LeafPool() {
    for (Page& p : pages_) std::free(p.mem);
  }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      this->~LeafPool();
      std::free(this);
    }
  }

  // A slot of class cls, as a Leaf with refs 1 and page/cls set (other
  // fields unset); nullptr if an allocation fails (or the test hook says so).
  Leaf* New(uint32_t cls) {
    if (!AllowAlloc()) return nullptr;
    std::lock_guard<std::mutex> l(mu_);
    return AllocLocked(cls, true);
  }

  // Returns l's slot. REQUIRES: nothing references l.
  void Delete(Leaf* l) {
    std::lock_guard<std::mutex> g(mu_);
    FreeLocked(l);
  }

  // Bytes of the pool's pages and bookkeeping, as malloc accounts them.
  uint64_t Bytes() const { return bytes_.load(std::memory_order_relaxed); }

  // If free slots exceed the threshold, moves the leaves that dir[0..n)
  // alone owns out of the emptiest pages (see the class comment). Makes no
  // allocation that can fail the caller; gives up quietly if one fails.
  void MaybeCompact(Group** dir, uint64_t n);

 private:
  struct Page {
    char* mem = nullptr;  // nullptr: the id is free
    uint16_t free_head = 0;
    uint16_t used = 0;
    uint16_t slots = 0;
    uint8_t cls = 0;
    bool evac = false;    // being emptied by Compact: not on avail
    int32_t avail_pos = -1;
  };
  static constexpr uint16_t kNoSlot = 0xffff;
  static constexpr uint32_t kMaxPages = 1u << 26;
  static constexpr uint64_t kMinGarbage = 32 << 10;

  Leaf* AllocLocked(uint32_t cls, bool may_grow);
  void FreeLocked(Leaf* l);
  bool NewPageLocked(uint32_t cls);
  void AvailAdd(uint32_t id) {
    Page& p = pages_[id];
    p.avail_pos = int32_t(avail_[p.cls].size());
    avail_[p.cls].push_back(id);  // capacity reserved by NewPageLocked
  }
  void AvailRemove(uint32_t id) {
    Page& p = pages_[id];
    std::vector<uint32_t>& v = avail_[p.cls];
    uint32_t last = v.back();
    v[size_t(p.avail_pos)] = last;
    pages_[last].avail_pos = p.avail_pos;
    v.pop_back();
    p.avail_pos = -1;
  }
  static uint64_t VecBytes(const void* p) { return p == nullptr ? 0 : AllocBytes(p); }
  void RecountLocked() {
    uint64_t b = AllocBytes(this) + page_bytes_ + VecBytes(pages_.data()) +
                 VecBytes(free_ids_.data());
    for (const auto& v : avail_) b += VecBytes(v.data());
    bytes_.store(b, std::memory_order_relaxed);
  }

  std::atomic<uint32_t> refs_{1};
  std::atomic<uint64_t> bytes_{0};
  std::mutex mu_;
  std::vector<Page> pages_;        // GUARDED_BY(mu_)
  std::vector<uint32_t> free_ids_; // GUARDED_BY(mu_); capacity >= pages_.size()
  std::vector<uint32_t> avail_[kNumClasses];  // GUARDED_BY(mu_)
  uint32_t class_pages_[kNumClasses] = {};    // GUARDED_BY(mu_)
  uint64_t page_bytes_ = 0;     // GUARDED_BY(mu_): AllocBytes of all pages
  uint64_t slot_bytes_ = 0;     // GUARDED_BY(mu_): bytes of all slots
  uint64_t live_bytes_ = 0;     // GUARDED_BY(mu_): bytes of slots in use
  uint64_t next_compact_ = kMinGarbage;  // GUARDED_BY(mu_): free-slot bytes
};

bool LeafPool::NewPageLocked(uint32_t cls) {
  const uint32_t bytes = kClassBytes[cls];
  // Pages have one size, so that malloc reuses the chunk of a freed page for
  // the next page exactly; while the pool is small (128 KiB), pages hold
  // 256 bytes of slots (or one slot) and no more, so that a small map does not
  // pay a partly used 4 KiB page per class.
  const bool small = slot_bytes_ < (128 << 10);
  const uint32_t page = small ? 256 : 4096;
  uint32_t slots = std::max<uint32_t>(1, page / bytes);
  const size_t alloc = small ? size_t(slots) * bytes : page;
  uint32_t id;
  bool appended = false;
  try {
    if (free_ids_.empty()) {
      if (pages_.size() >= kMaxPages) return false;
      pages_.emplace_back();
      appended = true;
      free_ids_.reserve(pages_.size());
      id = uint32_t(pages_.size() - 1);
    } else {
      id = free_ids_.back();
      free_ids_.pop_back();
    }
  } catch (const std::bad_alloc&) {
    if (appended) pages_.pop_back();
    return false;
  }
  char* mem = nullptr;
  try {
    avail_[cls].reserve(class_pages_[cls] + 1);
    mem = static_cast<char*>(std::malloc(std::max<size_t>(alloc, size_t(slots) * bytes)));
  } catch (const std::bad_alloc&) {
  }
  if (mem == nullptr) {
    free_ids_.push_back(id);  // capacity >= pages_.size()
    return false;
  }
  Page& p = pages_[id];
  p = Page{};
  p.mem = mem;
  p.slots = uint16_t(slots);
  p.cls = uint8_t(cls);
  for (uint32_t i = 0; i < slots; i++) {
    uint16_t next = i + 1 < slots ? uint16_t(i + 1) : kNoSlot;
    std::memcpy(mem + size_t(i) * bytes, &next, sizeof(next));
  }
  p.free_head = 0;
  class_pages_[cls]++;
  page_bytes_ += AllocBytes(mem);
  slot_bytes_ += uint64_t(slots) * bytes;
  AvailAdd(id);
  RecountLocked();
  return true;
}

Leaf* LeafPool::AllocLocked(uint32_t cls, bool may_grow) {
  if (avail_[cls].empty() && (!may_grow || !NewPageLocked(cls))) return nullptr;
  uint32_t id = avail_[cls].back();
  Page& p = pages_[id];
  const uint32_t bytes = kClassBytes[cls];
  char* slot = p.mem + size_t(p.free_head) * bytes;
  uint16_t next;
  std::memcpy(&next, slot, sizeof(next));
  p.free_head = next;
  p.used++;
  if (next == kNoSlot) AvailRemove(id);
  live_bytes_ += bytes;
  auto* l = new (slot) Leaf;
  l->refs.store(1, std::memory_order_relaxed);
  l->page = id;
  l->cls = cls;
  return l;
}

void LeafPool::FreeLocked(Leaf* l) {
  uint32_t id = l->page;
  Page& p = pages_[id];
  const uint32_t bytes = kClassBytes[p.cls];
  uint32_t idx = uint32_t((reinterpret_cast<char*>(l) - p.mem) / bytes);
  l->~Leaf();
  live_bytes_ -= bytes;
  if (--p.used == 0) {
    if (p.avail_pos >= 0) AvailRemove(id);
    class_pages_[p.cls]--;
    page_bytes_ -= AllocBytes(p.mem);
    slot_bytes_ -= uint64_t(p.slots) * bytes;
    std::free(p.mem);
    p = Page{};
    free_ids_.push_back(id);  // capacity >= pages_.size()
    RecountLocked();
    return;
  }
  uint16_t next = p.free_head;
  std::memcpy(reinterpret_cast<char*>(l), &next, sizeof(next));
  p.free_head = uint16_t(idx);
  if (p.avail_pos < 0 && !p.evac) AvailAdd(id);
}

void LeafPool::MaybeCompact(Group** dir, uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t garbage = slot_bytes_ - live_bytes_;
  if (garbage < next_compact_ || garbage * 64 < slot_bytes_) return;
  // Per class: keep the fullest pages that can take every leaf of the
  // class, and empty the rest.
  bool any = false;
  try {
    std::vector<uint32_t> ids[kNumClasses];
    for (uint32_t id = 0; id < pages_.size(); id++) {
      if (pages_[id].mem != nullptr) ids[pages_[id].cls].push_back(id);
    }
    for (auto& v : ids) {
      std::sort(v.begin(), v.end(),
                [&](uint32_t a, uint32_t b) { return pages_[a].used > pages_[b].used; });
      uint64_t rest = 0, kept_free = 0;
      for (uint32_t id : v) rest += pages_[id].used;
      for (size_t j = 0; j < v.size(); j++) {
        Page& p = pages_[v[j]];
        if (kept_free >= rest) {
          p.evac = true;
          if (p.avail_pos >= 0) AvailRemove(v[j]);
          any = true;
          continue;
        }
        kept_free += p.slots - p.used;
        rest -= p.used;
      }
    }
  } catch (const std::bad_alloc&) {
    // Leave whatever was marked; it is unmarked below.
  }
  if (any) {
    // l's replacement outside the pages being emptied: l itself if it is
    // shared or need not (or cannot) move.
    auto move = [&](Leaf* l) -> Leaf* {
      if (!pages_[l->page].evac || l->refs.load(std::memory_order_acquire) != 1) return l;
      Leaf* nl = AllocLocked(l->cls, false);
      if (nl == nullptr) return l;
      nl->seg_base = l->seg_base;
      nl->wide = l->wide;
      nl->mapped_m1 = l->mapped_m1;
      nl->n = l->n;
      nl->cap = l->cap;
      std::memcpy(nl->units(), l->units(), size_t(l->n) * l->unit() * 2);
      FreeLocked(l);
      return nl;
    };
    for (uint64_t gi = 0; gi < n; gi++) {
      Group* g = dir[gi];
      if (g == nullptr) continue;
      if (IsLeafSlot(g)) {
        dir[gi] = LeafSlot(move(SlotLeaf(g)));
        continue;
      }
      if (g->refs.load(std::memory_order_acquire) != 1) continue;
      for (uint32_t i = 0; i < g->n; i++) g->leaves()[i] = move(g->leaves()[i]);
    }
    for (uint32_t id = 0; id < pages_.size(); id++) {
      Page& p = pages_[id];
      if (p.mem == nullptr || !p.evac) continue;
      p.evac = false;
      if (p.used < p.slots) AvailAdd(id);
    }
  }
  next_compact_ = (slot_bytes_ - live_bytes_) + std::max(kMinGarbage, slot_bytes_ / 64);
}

namespace {

// Appends x to v[0..*m), merging it into the last extent when contiguous.
inline void Push(Ext* v, uint32_t* m, const Ext& x) {
  if (*m > 0) {
    Ext& p = v[*m - 1];
    if (p.start + p.len == x.start && p.seg == x.seg && p.slot + p.len == x.slot) {
      p.len += x.len;
      return;
    }
  }
  v[(*m)++] = x;
}

inline uint32_t Entries(const Ext& x) { return x.len > 1 ? 2 : 1; }

}  // namespace

// A change to one group, prepared (all allocation done) but not yet visible.
struct Edit {
  uint64_t gi = 0;          // directory index
  Group* slot = nullptr;    // the directory slot's value (see IsLeafSlot)
  Group* old = nullptr;     // the group now in the directory (may be null):
                            // slot, or view for a one-leaf slot
  GroupView view;
  uint32_t lo = 0, hi = 0;  // old leaves [lo, hi) are replaced
  Ext ext[kScratch];        // the replacement extents, in order
  uint32_t m = 0;
  int64_t mapped_delta = 0;
  Leaf* in_place = nullptr;  // rewrite this exclusively owned leaf, or:
  Leaf* fresh[kScratch];     // new leaves replacing [lo, hi)
  uint16_t fresh_keys[kScratch];
  uint32_t nfresh = 0;
  Group* new_group = nullptr;  // a new group buffer to move into, if needed
                               // (never for a result of one leaf)
  bool drop = false;           // the group becomes empty

  void Discard(LeafPool* pool) {
    for (uint32_t i = 0; i < nfresh; i++) pool->Delete(fresh[i]);
    nfresh = 0;
    std::free(new_group);
    new_group = nullptr;
  }
};

namespace {

// Whether extents v[0..m) fit narrow entries, and their base segment.
bool NarrowFits(const Ext* v, uint32_t m, uint32_t* base) {
  uint32_t lo = UINT32_MAX, hi = 0;
  for (uint32_t i = 0; i < m; i++) {
    lo = std::min(lo, v[i].seg);
    hi = std::max(hi, v[i].seg);
  }
  *base = lo;
  return m == 0 || hi - lo < kNarrowSegSpan;
}

uint32_t CountEntries(const Ext* v, uint32_t m) {
  uint32_t e = 0;
  for (uint32_t i = 0; i < m; i++) e += Entries(v[i]);
  return e;
}

// Writes the entries of v[0..m) at u; returns the number of entries.
uint32_t EncodeExts(uint16_t* u, const Ext* v, uint32_t m, bool wide, uint32_t base) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < m; i++) {
    const Ext& x = v[i];
    if (wide) {
      u[0] = uint16_t(x.start);
      u[1] = uint16_t(x.slot);
      u[2] = uint16_t(x.seg);
      u[3] = uint16_t(x.seg >> 16);
      u += 4;
      if (x.len > 1) {
        u[0] = uint16_t(x.start + x.len - 1);
        u[1] = u[2] = u[3] = 0;
        u += 4;
        n++;
      }
    } else {
      u[0] = uint16_t(x.start);
      u[1] = uint16_t(x.seg - base);
      u[2] = uint16_t(x.slot);
      u += 3;
      if (x.len > 1) {
        u[0] = uint16_t(x.start + x.len - 1);
        u[1] = kNarrowEnd;
        u[2] = 0;
        u += 3;
        n++;
      }
    }
    n++;
  }
  return n;
}

// Writes v[0..m) (m > 0, mapping at least one block) into l, which has room.
void EncodeLeaf(Leaf* l, const Ext* v, uint32_t m, bool wide, uint32_t base) {
  l->wide = wide ? 1 : 0;
  l->seg_base = wide ? 0 : base;
  l->cap = uint8_t(CapFor(l->cls, wide));
  uint32_t mapped = 0;
  for (uint32_t i = 0; i < m; i++) mapped += v[i].len;
  l->n = uint8_t(EncodeExts(l->units(), v, m, wide, base));
  l->mapped_m1 = uint16_t(mapped - 1);
}

// The class of a leaf for `entries` entries.
uint32_t LeafClass(uint32_t entries, bool wide) {
  return ClassFor(kLeafHeader + entries * (wide ? 8 : 6));
}

// A new leaf holding v[0..m) (m > 0), in the smallest class that fits;
// nullptr on failure.
Leaf* NewLeaf(LeafPool* pool, const Ext* v, uint32_t m) {
  uint32_t base;
  bool wide = !NarrowFits(v, m, &base);
  Leaf* l = pool->New(LeafClass(CountEntries(v, m), wide));
  if (l == nullptr) return nullptr;
  EncodeLeaf(l, v, m, wide, base);
  return l;
}

// Whether v[0..m) can be rewritten into l in place.
bool FitsIn(const Leaf* l, const Ext* v, uint32_t m, bool* wide, uint32_t* base) {
  *wide = !NarrowFits(v, m, base);
  return CountEntries(v, m) <= CapFor(l->cls, *wide);
}

// Appends the parts of leaf l's extents outside [s, e) to v; returns the
// blocks of l inside [s, e) through *inside.
void KeepOutside(const Leaf* l, uint32_t s, uint32_t e, Ext* v, uint32_t* m,
                 uint32_t* inside) {
  for (uint32_t k = 0; k < l->n;) {
    Ext x = l->At(k, &k);
    uint32_t xe = x.start + x.len;
    if (xe <= s || x.start >= e) {
      Push(v, m, x);
      continue;
    }
    uint32_t lo = std::max(x.start, s), hi = std::min(xe, e);
    *inside += hi - lo;
    if (x.start < s) Push(v, m, Ext{x.start, s - x.start, x.seg, x.slot});
    if (xe > e) Push(v, m, Ext{e, xe - e, x.seg, x.slot + (e - x.start)});
  }
}

}  // namespace

}  // namespace extent_map_internal

using namespace extent_map_internal;  // NOLINT: this file implements it

void ExtentMap::TEST_FailAllocationsAfter(int64_t n) { fail_allocations_after = n; }

ExtentMap::ExtentMap(uint64_t blocks)
    : blocks_(blocks), groups_((blocks + kGroupBlocks - 1) / kGroupBlocks) {}

ExtentMap::~ExtentMap() {
  Reset();
  if (pool_ != nullptr) pool_->Unref();
}

void ExtentMap::UnrefLeaf(Leaf* l) {
  if (l->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) pool_->Delete(l);
}

void ExtentMap::UnrefGroup(Group* g) {
  if (IsLeafSlot(g)) {
    UnrefLeaf(SlotLeaf(g));
    return;
  }
  if (g->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    for (uint32_t i = 0; i < g->n; i++) UnrefLeaf(g->leaves()[i]);
    g->~Group();
    std::free(g);
  }
}

void ExtentMap::Reset() {
  if (dir_ != nullptr) {
    for (uint64_t i = 0; i < groups_; i++) {
      if (dir_[i] != nullptr) UnrefGroup(dir_[i]);
    }
    std::free(dir_);
    dir_ = nullptr;
  }
  mapped_ = 0;
  group_bytes_ = 0;
}

uint64_t ExtentMap::MemoryUsage() const {
  return sizeof(*this) + (dir_ != nullptr ? AllocBytes(dir_) : 0) + group_bytes_ +
         (pool_ != nullptr ? pool_->Bytes() : 0);
}

Result<std::unique_ptr<ExtentMap>> ExtentMap::Snapshot() const {
  if (!AllowAlloc()) return OutOfMemory();
  std::unique_ptr<ExtentMap> snap(new (std::nothrow) ExtentMap(blocks_));
  if (snap == nullptr) return OutOfMemory();
  if (dir_ != nullptr) {
    snap->dir_ = static_cast<Group**>(Alloc(groups_ * sizeof(Group*)));
    if (snap->dir_ == nullptr) return OutOfMemory();
    for (uint64_t i = 0; i < groups_; i++) {
      Group* g = dir_[i];
      // Relaxed is enough: the new reference comes from one we hold.
      if (g != nullptr) {
        std::atomic<uint32_t>& refs = IsLeafSlot(g) ? SlotLeaf(g)->refs : g->refs;
        refs.fetch_add(1, std::memory_order_relaxed);
      }
      snap->dir_[i] = g;
    }
  }
  if (pool_ != nullptr) {
    pool_->Ref();
    snap->pool_ = pool_;
  }
  snap->mapped_ = mapped_;
  snap->group_bytes_ = group_bytes_;
  return snap;
}

Status ExtentMap::Set(uint64_t lba, uint64_t count, uint32_t seg, uint32_t first_slot) {
  if (lba > blocks_ || count > blocks_ - lba) {
    return Status::InvalidArgument("ExtentMap::Set: blocks beyond the volume's end");
  }
  if (seg == 0) return Status::InvalidArgument("ExtentMap::Set: segment id 0");
  if (first_slot > kMaxSlot || count > kMaxSlot - first_slot) {
    return Status::InvalidArgument("ExtentMap::Set: slot out of range");
  }
  return Update(lba, count, false, seg, first_slot);
}

Status ExtentMap::Clear(uint64_t lba, uint64_t count) {
  if (lba > blocks_ || count > blocks_ - lba) {
    return Status::InvalidArgument("ExtentMap::Clear: blocks beyond the volume's end");
  }
  return Update(lba, count, true, 0, 0);
}

Status ExtentMap::Update(uint64_t lba, uint64_t count, bool clear, uint32_t seg, uint32_t slot) {
  if (count == 0) return Status::OK();
  if (dir_ == nullptr) {
    if (clear) return Status::OK();
    void* p = Alloc(groups_ * sizeof(Group*));
    if (p == nullptr) return OutOfMemory();
    std::memset(p, 0, groups_ * sizeof(Group*));
    dir_ = static_cast<Group**>(p);
  }
  if (pool_ == nullptr) {
    void* p = Alloc(sizeof(LeafPool));
    if (p == nullptr) return OutOfMemory();
    pool_ = new (p) LeafPool;
  }
  const uint64_t end = lba + count;
  {
    // The fast path: an edit inside one leaf.
    const uint64_t gi = lba / kGroupBlocks, base = gi * kGroupBlocks;
    Status st;
    if (end <= base + kGroupBlocks &&
        TryInPlace(gi, uint32_t(lba - base), uint32_t(end - base), clear, seg, slot, &st)) {
      return st;
    }
  }
  const uint64_t g0 = lba / kGroupBlocks, g1 = (end - 1) / kGroupBlocks;
  // A Set covers at most kMaxSlot blocks, so at most two groups; a Clear
  // drops the groups it covers whole and edits at most the two at its ends.
  Edit edits[2];
  uint32_t nedits = 0;
  for (uint64_t gi = g0; gi <= g1; gi += std::max<uint64_t>(1, g1 - g0)) {
    uint64_t base = gi * kGroupBlocks;
    uint32_t s = uint32_t(std::max(lba, base) - base);
    uint32_t e = uint32_t(std::min(end, base + kGroupBlocks) - base);
    Group* g = dir_[gi];
    bool whole = s == 0 && e == kGroupBlocks;
    if (clear && (g == nullptr || whole)) continue;  // handled at commit
    Edit* ed = &edits[nedits];
    ed->gi = gi;
    uint32_t first_slot = clear ? 0 : uint32_t(slot + (base + s - lba));
    Status st = PrepareEdit(g, s, e, clear, seg, first_slot, ed);
    if (!st.ok()) {
      for (uint32_t i = 0; i < nedits; i++) edits[i].Discard(pool_);
      return st;
    }
    nedits++;
  }
  // Nothing below can fail.
  for (uint32_t i = 0; i < nedits; i++) CommitEdit(&edits[i]);
  if (clear) {
    for (uint64_t gi = g0; gi <= g1; gi++) {
      Group* g = dir_[gi];
      uint64_t base = gi * kGroupBlocks;
      if (g == nullptr || lba > base || end < base + kGroupBlocks) continue;
      mapped_ -= SlotMapped(g);
      group_bytes_ -= SlotBytes(g);
      dir_[gi] = nullptr;
      UnrefGroup(g);
    }
  }
  pool_->MaybeCompact(dir_, groups_);
  return Status::OK();
}

bool ExtentMap::TryInPlace(uint64_t gi, uint32_t s, uint32_t e, bool clear, uint32_t seg,
                           uint32_t slot, Status* st) {
  Group* g = dir_[gi];
  if (g == nullptr) return false;
  const bool one = IsLeafSlot(g);  // then g is not a Group: see IsLeafSlot
  uint32_t i = 0;
  Leaf* l;
  if (one) {
    l = SlotLeaf(g);
  } else {
    if (g->refs.load(std::memory_order_acquire) != 1) return false;
    i = g->Find(s);
    if (i + 1 < g->n && g->keys()[i + 1] < e) return false;  // reaches the next leaf
    l = g->leaves()[i];
  }
  if (l->refs.load(std::memory_order_acquire) != 1) return false;
  const bool wide = l->wide;
  if (!clear && !wide && (seg < l->seg_base || seg - l->seg_base >= kNarrowSegSpan)) {
    return false;  // the leaf must change its encoding
  }
  // Entries [k0, k1) hold every extent that overlaps [s, e) or touches it
  // (and so may merge with the new one); out[0..m) replaces them. At most:
  // one extent before s-1 (see FirstEndingAfter), the one ending at s-1, the
  // head of the first overlapped extent, the new one, the tail of the last
  // overlapped extent, and the one starting at e.
  const uint32_t k0 = s == 0 ? 0 : l->FirstEndingAfter(s - 1);
  Ext out[8];
  uint32_t m = 0, removed = 0, k = k0;
  bool placed = clear;
  const Ext fresh{s, e - s, seg, slot};
  while (k < l->n) {
    uint32_t next;
    Ext x = l->At(k, &next);
    if (x.start > e) break;
    k = next;
    uint32_t xe = x.start + x.len;
    if (xe <= s) {
      Push(out, &m, x);
      continue;
    }
    if (x.start < e) {  // overlaps [s, e)
      removed += std::min(xe, e) - std::max(x.start, s);
      if (x.start < s) Push(out, &m, Ext{x.start, s - x.start, x.seg, x.slot});
      x = Ext{e, xe > e ? xe - e : 0, x.seg, x.slot + (e - x.start)};
    }
    if (!placed) {
      Push(out, &m, fresh);
      placed = true;
    }
    if (x.len > 0) Push(out, &m, x);
  }
  if (!placed) Push(out, &m, fresh);
  const uint32_t k1 = k;
  const uint32_t r = CountEntries(out, m);
  const uint32_t old_n = l->n;
  const uint32_t new_n = old_n - (k1 - k0) + r;
  if (new_n == 0 || new_n > kLeafMaxEntries) return false;
  // A small leaf that shrinks is merged with a neighbour by the general path.
  if (new_n < kLeafMaxEntries / 4 && new_n < old_n && !one && g->n > 1) return false;
  const uint32_t added = clear ? 0 : e - s;
  const uint32_t unit = l->unit();
  uint16_t rep[8 * 2 * 4];
  EncodeExts(rep, out, m, wide, l->seg_base);
  bool moved = false;
  if (new_n <= l->cap) {
    uint16_t* u = l->units();
    std::memmove(u + (k0 + r) * unit, u + k1 * unit, (old_n - k1) * unit * 2);
    std::memcpy(u + k0 * unit, rep, r * unit * 2);
  } else {
    // Full: move to the class that fits.
    Leaf* nl = pool_->New(LeafClass(new_n, wide));
    if (nl == nullptr) {
      *st = OutOfMemory();
      return true;
    }
    nl->seg_base = l->seg_base;
    nl->wide = wide;
    nl->cap = uint8_t(CapFor(nl->cls, wide));
    uint16_t* d = nl->units();
    const uint16_t* u = l->units();
    std::memcpy(d, u, k0 * unit * 2);
    std::memcpy(d + k0 * unit, rep, r * unit * 2);
    std::memcpy(d + (k0 + r) * unit, u + k1 * unit, (old_n - k1) * unit * 2);
    nl->mapped_m1 = l->mapped_m1;
    if (one) {
      dir_[gi] = LeafSlot(nl);
    } else {
      g->leaves()[i] = nl;
    }
    pool_->Delete(l);
    l = nl;
    moved = true;
  }
  l->n = uint8_t(new_n);
  l->mapped_m1 = uint16_t(l->mapped() + added - removed - 1);
  if (!one) g->mapped = g->mapped + added - removed;
  mapped_ = mapped_ + added - removed;
  if (moved) pool_->MaybeCompact(dir_, groups_);
  *st = Status::OK();
  return true;
}

Status ExtentMap::PrepareEdit(Group* g, uint32_t s, uint32_t e, bool clear, uint32_t seg,
                              uint32_t slot, Edit* ed) {
  ed->slot = g;
  if (g != nullptr && IsLeafSlot(g)) g = ed->view.Make(SlotLeaf(g));
  ed->old = g;
  ed->m = 0;
  uint32_t removed = 0;
  if (g == nullptr) {
    ed->lo = ed->hi = 0;
  } else {
    uint32_t i = g->Find(s), j = g->Find(e - 1);
    ed->lo = i;
    ed->hi = j + 1;
    // Extents of leaf i before s, the new extent, extents of leaf j after e.
    Leaf* const* lv = g->leaves();
    uint32_t inside = 0;
    for (uint32_t k = i + 1; k < j; k++) removed += lv[k]->mapped();
    KeepOutside(lv[i], s, e, ed->ext, &ed->m, &inside);
    if (!clear) {
      // Insert the new extent in order: extents kept from leaf i are all
      // before s or after e; those after e come last.
      uint32_t before = 0;
      while (before < ed->m && ed->ext[before].start < s) before++;
      Ext tail[kLeafMaxEntries + 2];
      uint32_t nt = ed->m - before;
      std::memcpy(tail, ed->ext + before, nt * sizeof(Ext));
      ed->m = before;
      Push(ed->ext, &ed->m, Ext{s, e - s, seg, slot});
      for (uint32_t k = 0; k < nt; k++) Push(ed->ext, &ed->m, tail[k]);
    }
    if (j != i) KeepOutside(lv[j], s, e, ed->ext, &ed->m, &inside);
    removed += inside;
    // A small result absorbs a neighbour, so that leaves do not dwindle.
    uint32_t entries = CountEntries(ed->ext, ed->m);
    if (entries < kLeafMaxEntries / 4) {
      if (ed->lo > 0 && lv[ed->lo - 1]->n + entries <= kLeafMaxEntries / 2) {
        Ext mine[kScratch];
        uint32_t nm = ed->m;
        std::memcpy(mine, ed->ext, nm * sizeof(Ext));
        ed->m = 0;
        ed->lo--;
        const Leaf* l = lv[ed->lo];
        for (uint32_t k = 0; k < l->n;) Push(ed->ext, &ed->m, l->At(k, &k));
        for (uint32_t k = 0; k < nm; k++) Push(ed->ext, &ed->m, mine[k]);
      } else if (ed->hi < g->n && lv[ed->hi]->n + entries <= kLeafMaxEntries / 2) {
        const Leaf* l = lv[ed->hi];
        for (uint32_t k = 0; k < l->n;) Push(ed->ext, &ed->m, l->At(k, &k));
        ed->hi++;
      }
    }
  }
  if (g == nullptr) {
    // Only a Set reaches an empty group.
    Push(ed->ext, &ed->m, Ext{s, e - s, seg, slot});
  }
  uint32_t added = clear ? 0 : e - s;
  ed->mapped_delta = int64_t(added) - int64_t(removed);

  // Leaves: rewrite one exclusively owned leaf in place, or build new ones.
  ed->in_place = nullptr;
  ed->nfresh = 0;
  ed->new_group = nullptr;
  bool group_owned = g != nullptr && g->refs.load(std::memory_order_acquire) == 1;
  if (ed->m > 0 && group_owned && ed->hi == ed->lo + 1) {
    Leaf* l = g->leaves()[ed->lo];
    bool wide;
    uint32_t base;
    if (l->refs.load(std::memory_order_acquire) == 1 &&
        CountEntries(ed->ext, ed->m) <= kLeafMaxEntries && FitsIn(l, ed->ext, ed->m, &wide, &base)) {
      ed->in_place = l;
      ed->drop = false;
      return Status::OK();
    }
  }
  uint32_t total = CountEntries(ed->ext, ed->m);
  uint32_t parts = (total + kLeafMaxEntries - 1) / kLeafMaxEntries;
  uint32_t per = parts == 0 ? 0 : (total + parts - 1) / parts;
  for (uint32_t k = 0; k < ed->m;) {
    uint32_t from = k, n = 0;
    while (k < ed->m && n + Entries(ed->ext[k]) <= per) n += Entries(ed->ext[k++]);
    if (k == from) n += Entries(ed->ext[k++]);  // cannot happen; keeps progress
    Leaf* l = NewLeaf(pool_, ed->ext + from, k - from);
    if (l == nullptr) {
      ed->Discard(pool_);
      return OutOfMemory();
    }
    ed->fresh_keys[ed->nfresh] =
        uint16_t(ed->nfresh == 0 ? (g == nullptr ? 0 : g->SpanStart(ed->lo)) : ed->ext[from].start);
    ed->fresh[ed->nfresh++] = l;
  }
  uint32_t old_n = g == nullptr ? 0 : g->n;
  uint32_t new_n = old_n - (ed->hi - ed->lo) + ed->nfresh;
  ed->drop = new_n == 0;
  if (!ed->drop && new_n > 1 && (!group_owned || new_n > g->cap)) {
    uint32_t cap = new_n + new_n / 8 + 1;
    size_t bytes = sizeof(Group) + size_t(cap) * (sizeof(Leaf*) + sizeof(uint16_t));
    void* p = Alloc(bytes);
    if (p == nullptr) {
      ed->Discard(pool_);
      return OutOfMemory();
    }
    auto* ng = new (p) Group;
    ng->refs.store(1, std::memory_order_relaxed);
    ng->n = 0;
    ng->cap = cap;
    ng->mapped = 0;
    ed->new_group = ng;
  }
  return Status::OK();
}

void ExtentMap::CommitEdit(Edit* ed) {
  Group* g = ed->old;
  mapped_ += ed->mapped_delta;
  if (ed->in_place != nullptr) {
    Leaf* l = ed->in_place;
    bool wide;
    uint32_t base;
    FitsIn(l, ed->ext, ed->m, &wide, &base);
    EncodeLeaf(l, ed->ext, ed->m, wide, base);
    g->mapped = uint32_t(int64_t(g->mapped) + ed->mapped_delta);
    return;
  }
  // g is ed->view when the slot holds one leaf: then there is no group
  // allocation to free, and releasing the slot releases that leaf.
  const bool one = g != nullptr && IsLeafSlot(ed->slot);
  uint64_t old_group_bytes = g == nullptr || one ? 0 : AllocBytes(g);
  uint32_t old_n = g == nullptr ? 0 : g->n;
  uint32_t new_mapped = uint32_t(int64_t(g == nullptr ? 0 : g->mapped) + ed->mapped_delta);

  if (ed->drop) {
    // The edit removed every leaf: the group goes.
    group_bytes_ -= old_group_bytes;
    dir_[ed->gi] = nullptr;
    if (g != nullptr) UnrefGroup(ed->slot);
    return;
  }
  uint32_t tail = old_n - ed->hi;
  uint32_t new_n = ed->lo + ed->nfresh + tail;
  const bool shared = g != nullptr && g->refs.load(std::memory_order_acquire) != 1;
  if (new_n == 1) {
    // One leaf left: the slot holds it alone (PrepareEdit allocated no group).
    Leaf* only = ed->nfresh == 1 ? ed->fresh[0] : g->leaves()[ed->lo == 1 ? 0 : ed->hi];
    if (one) {
      UnrefLeaf(SlotLeaf(ed->slot));  // the one leaf [lo, hi) replaced
    } else if (g != nullptr) {
      if (shared) {
        // The snapshot keeps g and its leaves; a kept leaf gains our slot's
        // reference.
        if (ed->nfresh == 0) only->refs.fetch_add(1, std::memory_order_relaxed);
        UnrefGroup(g);
      } else {
        for (uint32_t k = ed->lo; k < ed->hi; k++) UnrefLeaf(g->leaves()[k]);
        g->~Group();
        std::free(g);  // its kept leaf moved to the slot
      }
    }
    group_bytes_ -= old_group_bytes;
    dir_[ed->gi] = LeafSlot(only);
    ed->nfresh = 0;
    return;
  }
  Group* target = ed->new_group != nullptr ? ed->new_group : g;
  if (target != g) {
    Leaf** dl = target->leaves();
    uint16_t* dk = target->keys();
    if (g != nullptr) {
      std::memcpy(dl, g->leaves(), ed->lo * sizeof(Leaf*));
      std::memcpy(dk, g->keys(), ed->lo * sizeof(uint16_t));
      std::memcpy(dl + ed->lo + ed->nfresh, g->leaves() + ed->hi, tail * sizeof(Leaf*));
      std::memcpy(dk + ed->lo + ed->nfresh, g->keys() + ed->hi, tail * sizeof(uint16_t));
    }
    std::memcpy(dl + ed->lo, ed->fresh, ed->nfresh * sizeof(Leaf*));
    std::memcpy(dk + ed->lo, ed->fresh_keys, ed->nfresh * sizeof(uint16_t));
    target->n = new_n;
    target->mapped = new_mapped;
    group_bytes_ = group_bytes_ - old_group_bytes + AllocBytes(target);
    if (g != nullptr) {
      if (shared) {
        // The snapshot keeps g and all its leaves; the kept ones gain a
        // reference from target.
        for (uint32_t k = 0; k < ed->lo; k++) dl[k]->refs.fetch_add(1, std::memory_order_relaxed);
        for (uint32_t k = 0; k < tail; k++) {
          dl[ed->lo + ed->nfresh + k]->refs.fetch_add(1, std::memory_order_relaxed);
        }
        UnrefGroup(ed->slot);
      } else {
        for (uint32_t k = ed->lo; k < ed->hi; k++) UnrefLeaf(g->leaves()[k]);
        if (!one) {
          g->~Group();
          std::free(g);  // its other leaves moved to target
        }
      }
    }
    dir_[ed->gi] = target;
  } else {
    // Exclusively owned and large enough: splice in place.
    for (uint32_t k = ed->lo; k < ed->hi; k++) UnrefLeaf(g->leaves()[k]);
    Leaf** lv = g->leaves();
    uint16_t* kv = g->keys();
    std::memmove(lv + ed->lo + ed->nfresh, lv + ed->hi, tail * sizeof(Leaf*));
    std::memmove(kv + ed->lo + ed->nfresh, kv + ed->hi, tail * sizeof(uint16_t));
    std::memcpy(lv + ed->lo, ed->fresh, ed->nfresh * sizeof(Leaf*));
    std::memcpy(kv + ed->lo, ed->fresh_keys, ed->nfresh * sizeof(uint16_t));
    g->n = new_n;
    g->mapped = new_mapped;
  }
  ed->nfresh = 0;
  ed->new_group = nullptr;
}

namespace {

// Appends a run to out, merging it into the last one when contiguous.
// May throw std::bad_alloc (caught by Lookup).
inline void Emit(std::vector<MapRun>* out, uint64_t lba, uint64_t count, bool mapped,
                 uint32_t seg, uint32_t slot) {
  if (!out->empty()) {
    MapRun& p = out->back();
    if (p.lba + p.count == lba && p.mapped == mapped &&
        (!mapped || (p.seg == seg && p.slot + p.count == slot))) {
      p.count += count;
      return;
    }
  }
  out->push_back(MapRun{lba, count, mapped, seg, slot});
}

}  // namespace

Status ExtentMap::Lookup(uint64_t lba, uint64_t count, std::vector<MapRun>* out) const {
  out->clear();
  if (lba > blocks_ || count > blocks_ - lba) {
    return Status::InvalidArgument("ExtentMap::Lookup: blocks beyond the volume's end");
  }
  try {
    const uint64_t end = lba + count;
    uint64_t pos = lba;
    while (pos < end) {
      uint64_t gi = pos / kGroupBlocks;
      uint64_t base = gi * kGroupBlocks;
      uint32_t s = uint32_t(pos - base);
      uint32_t e = uint32_t(std::min(end, base + kGroupBlocks) - base);
      const Group* g = dir_ != nullptr ? dir_[gi] : nullptr;
      if (g == nullptr) {
        Emit(out, pos, e - s, false, 0, 0);
        pos = base + e;
        continue;
      }
      GroupView view;
      g = view.Of(g);
      uint32_t at = s;  // next offset to emit
      for (uint32_t i = g->Find(s); i < g->n && g->SpanStart(i) < e; i++) {
        const Leaf* l = g->leaves()[i];
        uint32_t k = l->FirstEndingAfter(at);
        while (k < l->n) {
          Ext x = l->At(k, &k);
          if (x.start >= e) break;
          uint32_t xe = x.start + x.len;
          if (xe <= at) continue;
          if (x.start > at) {
            Emit(out, base + at, x.start - at, false, 0, 0);
            at = x.start;
          }
          uint32_t hi = std::min(xe, e);
          Emit(out, base + at, hi - at, true, x.seg, x.slot + (at - x.start));
          at = hi;
        }
      }
      if (at < e) Emit(out, base + at, e - at, false, 0, 0);
      pos = base + e;
    }
  } catch (const std::bad_alloc&) {
    out->clear();
    return OutOfMemory();
  }
  return Status::OK();
}

void ExtentMap::ForEach(const std::function<void(const MapRun&)>& fn) const {
  if (dir_ == nullptr) return;
  MapRun pending;
  bool have = false;
  for (uint64_t gi = 0; gi < groups_; gi++) {
    const Group* g = dir_[gi];
    if (g == nullptr) continue;
    GroupView view;
    g = view.Of(g);
    uint64_t base = gi * kGroupBlocks;
    for (uint32_t i = 0; i < g->n; i++) {
      const Leaf* l = g->leaves()[i];
      for (uint32_t k = 0; k < l->n;) {
        Ext x = l->At(k, &k);
        uint64_t lba = base + x.start;
        if (have && pending.lba + pending.count == lba && pending.seg == x.seg &&
            pending.slot + pending.count == x.slot) {
          pending.count += x.len;
          continue;
        }
        if (have) fn(pending);
        pending = MapRun{lba, x.len, true, x.seg, x.slot};
        have = true;
      }
    }
  }
  if (have) fn(pending);
}

}  // namespace hbiss::volume
