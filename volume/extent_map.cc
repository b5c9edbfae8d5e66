#include "volume/extent_map.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

namespace hbiss::volume {

namespace {

thread_local int64_t fail_allocations_after = -1;

// Every node allocation goes through here, so that tests can make it fail.
void* Alloc(size_t n) {
  if (fail_allocations_after == 0) return nullptr;
  if (fail_allocations_after > 0) fail_allocations_after--;
  return std::malloc(n);
}

bool AllowAlloc() {
  if (fail_allocations_after == 0) return false;
  if (fail_allocations_after > 0) fail_allocations_after--;
  return true;
}

// The bytes an allocation really takes: its usable size plus the chunk header.
uint64_t AllocBytes(const void* p) {
  return malloc_usable_size(const_cast<void*>(p)) + sizeof(size_t);
}

Status OutOfMemory() { return Status::IOError("out of memory"); }

constexpr uint16_t kNarrowEnd = 0xffff;         // segment delta of an end marker
constexpr uint32_t kNarrowSegSpan = kNarrowEnd;  // deltas 0..0xfffe
constexpr uint32_t kScratch = 3 * ExtentMap::kLeafMaxEntries + 8;

}  // namespace

namespace extent_map_internal {

// An extent inside one group: offsets are relative to the group's first block.
struct Ext {
  uint32_t start, len, seg, slot;
};

// A leaf: header, then n entries of 3 (narrow) or 4 (wide) uint16 units.
// Narrow: {offset, seg - seg_base (kNarrowEnd: end marker), slot}.
// Wide:   {offset, slot, seg low 16, seg high 16} (seg 0: end marker).
struct Leaf {
  std::atomic<uint32_t> refs;
  uint32_t seg_base;
  uint32_t mapped;     // blocks mapped by this leaf
  uint16_t n;          // entries
  uint16_t cap_units;  // uint16 units available for entries
  uint8_t wide;

  uint16_t* units() { return reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(this) + sizeof(Leaf)); }
  const uint16_t* units() const {
    return reinterpret_cast<const uint16_t*>(reinterpret_cast<const char*>(this) + sizeof(Leaf));
  }
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
  // (n if none).
  uint32_t FirstEndingAfter(uint32_t x) const {
    // Last entry with offset <= x.
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
      uint32_t mid = (lo + hi) / 2;
      if (Off(mid) <= x) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (lo == 0) return 0;
    uint32_t k = lo - 1;
    if (IsEnd(k)) return Off(k) == x ? k - 1 : k + 1;
    return k;  // a start entry at or before x: the extent may cover x
  }
};

// A group: header, then cap leaf pointers, then cap uint16 keys.
struct Group {
  std::atomic<uint32_t> refs;
  uint32_t n;           // leaves
  uint32_t cap;
  uint32_t mapped;      // blocks mapped in this group
  uint64_t tree_bytes;  // allocation bytes of this group and its leaves

  Leaf** leaves() { return reinterpret_cast<Leaf**>(this + 1); }
  Leaf* const* leaves() const { return reinterpret_cast<Leaf* const*>(this + 1); }
  uint16_t* keys() { return reinterpret_cast<uint16_t*>(leaves() + cap); }
  const uint16_t* keys() const { return reinterpret_cast<const uint16_t*>(leaves() + cap); }
  uint32_t SpanStart(uint32_t i) const { return i == 0 ? 0 : keys()[i]; }
  // The leaf whose span holds offset x. REQUIRES: n > 0.
  uint32_t Find(uint32_t x) const {
    const uint16_t* k = keys();
    return uint32_t(std::upper_bound(k + 1, k + n, x) - k) - 1;
  }
};
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
  Group* old = nullptr;     // the group now in the directory (may be null)
  uint32_t lo = 0, hi = 0;  // old leaves [lo, hi) are replaced
  Ext ext[kScratch];        // the replacement extents, in order
  uint32_t m = 0;
  int64_t mapped_delta = 0;
  Leaf* in_place = nullptr;  // rewrite this exclusively owned leaf, or:
  Leaf* fresh[kScratch];     // new leaves replacing [lo, hi)
  uint16_t fresh_keys[kScratch];
  uint32_t nfresh = 0;
  Group* new_group = nullptr;  // a new group buffer to move into, if needed
  bool drop = false;           // the group becomes empty

  void Discard() {
    for (uint32_t i = 0; i < nfresh; i++) std::free(fresh[i]);
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

// Writes v[0..m) into l (which has room).
void EncodeLeaf(Leaf* l, const Ext* v, uint32_t m, bool wide, uint32_t base) {
  l->wide = wide ? 1 : 0;
  l->seg_base = wide ? 0 : base;
  uint16_t* u = l->units();
  uint32_t n = 0, mapped = 0;
  for (uint32_t i = 0; i < m; i++) {
    const Ext& x = v[i];
    mapped += x.len;
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
  l->n = uint16_t(n);
  l->mapped = mapped;
}

// A new leaf holding v[0..m), with a little room to grow; nullptr on failure.
Leaf* NewLeaf(const Ext* v, uint32_t m) {
  uint32_t base;
  bool wide = !NarrowFits(v, m, &base);
  uint32_t unit = wide ? 4 : 3;
  uint32_t entries = CountEntries(v, m);
  size_t want = sizeof(Leaf) + size_t(entries + 2) * unit * 2;
  void* p = Alloc(want);
  if (p == nullptr) return nullptr;
  auto* l = new (p) Leaf;
  l->refs.store(1, std::memory_order_relaxed);
  size_t usable = malloc_usable_size(p) - sizeof(Leaf);
  l->cap_units = uint16_t(std::min<size_t>(usable / 2, 0xffff));
  EncodeLeaf(l, v, m, wide, base);
  return l;
}

// Whether v[0..m) can be rewritten into l in place.
bool FitsIn(const Leaf* l, const Ext* v, uint32_t m, bool* wide, uint32_t* base) {
  *wide = !NarrowFits(v, m, base);
  return CountEntries(v, m) * (*wide ? 4 : 3) <= l->cap_units;
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

ExtentMap::~ExtentMap() { Reset(); }

void ExtentMap::UnrefLeaf(Leaf* l) {
  if (l->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    l->~Leaf();
    std::free(l);
  }
}

void ExtentMap::UnrefGroup(Group* g) {
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
  tree_bytes_ = 0;
}

uint64_t ExtentMap::MemoryUsage() const {
  return sizeof(*this) + (dir_ != nullptr ? AllocBytes(dir_) : 0) + tree_bytes_;
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
      if (g != nullptr) g->refs.fetch_add(1, std::memory_order_relaxed);
      snap->dir_[i] = g;
    }
  }
  snap->mapped_ = mapped_;
  snap->tree_bytes_ = tree_bytes_;
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
  const uint64_t end = lba + count;
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
      for (uint32_t i = 0; i < nedits; i++) edits[i].Discard();
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
      mapped_ -= g->mapped;
      tree_bytes_ -= g->tree_bytes;
      dir_[gi] = nullptr;
      UnrefGroup(g);
    }
  }
  return Status::OK();
}

Status ExtentMap::PrepareEdit(Group* g, uint32_t s, uint32_t e, bool clear, uint32_t seg,
                              uint32_t slot, Edit* ed) {
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
    for (uint32_t k = i + 1; k < j; k++) removed += lv[k]->mapped;
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
    Leaf* l = NewLeaf(ed->ext + from, k - from);
    if (l == nullptr) {
      ed->Discard();
      return OutOfMemory();
    }
    ed->fresh_keys[ed->nfresh] =
        uint16_t(ed->nfresh == 0 ? (g == nullptr ? 0 : g->SpanStart(ed->lo)) : ed->ext[from].start);
    ed->fresh[ed->nfresh++] = l;
  }
  uint32_t old_n = g == nullptr ? 0 : g->n;
  uint32_t new_n = old_n - (ed->hi - ed->lo) + ed->nfresh;
  ed->drop = new_n == 0;
  if (!ed->drop && (!group_owned || new_n > g->cap)) {
    uint32_t cap = new_n + new_n / 8 + 1;
    size_t bytes = sizeof(Group) + size_t(cap) * (sizeof(Leaf*) + sizeof(uint16_t));
    void* p = Alloc(bytes);
    if (p == nullptr) {
      ed->Discard();
      return OutOfMemory();
    }
    auto* ng = new (p) Group;
    ng->refs.store(1, std::memory_order_relaxed);
    ng->n = 0;
    ng->cap = cap;
    ng->mapped = 0;
    ng->tree_bytes = 0;
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
  uint64_t fresh_bytes = 0;
  for (uint32_t k = 0; k < ed->nfresh; k++) fresh_bytes += AllocBytes(ed->fresh[k]);
  uint64_t old_group_tree = g == nullptr ? 0 : g->tree_bytes;
  uint64_t removed_bytes = 0;
  if (g != nullptr) {
    for (uint32_t k = ed->lo; k < ed->hi; k++) removed_bytes += AllocBytes(g->leaves()[k]);
  }
  uint32_t old_n = g == nullptr ? 0 : g->n;
  uint32_t new_mapped = uint32_t(int64_t(g == nullptr ? 0 : g->mapped) + ed->mapped_delta);

  if (ed->drop) {
    // The edit removed every leaf: the group goes.
    tree_bytes_ -= old_group_tree;
    dir_[ed->gi] = nullptr;
    if (g != nullptr) UnrefGroup(g);
    return;
  }
  Group* target = ed->new_group != nullptr ? ed->new_group : g;
  uint32_t tail = old_n - ed->hi;
  uint32_t new_n = ed->lo + ed->nfresh + tail;
  if (target != g) {
    bool shared = g != nullptr && g->refs.load(std::memory_order_acquire) != 1;
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
    uint64_t old_group_bytes = g == nullptr ? 0 : AllocBytes(g);
    target->tree_bytes =
        old_group_tree - old_group_bytes - removed_bytes + fresh_bytes + AllocBytes(target);
    if (g != nullptr) {
      if (shared) {
        // The snapshot keeps g and all its leaves; the kept ones gain a
        // reference from target.
        for (uint32_t k = 0; k < ed->lo; k++) dl[k]->refs.fetch_add(1, std::memory_order_relaxed);
        for (uint32_t k = 0; k < tail; k++) {
          dl[ed->lo + ed->nfresh + k]->refs.fetch_add(1, std::memory_order_relaxed);
        }
        UnrefGroup(g);
      } else {
        for (uint32_t k = ed->lo; k < ed->hi; k++) UnrefLeaf(g->leaves()[k]);
        g->~Group();
        std::free(g);  // its other leaves moved to target
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
    g->tree_bytes = old_group_tree - removed_bytes + fresh_bytes;
  }
  tree_bytes_ = tree_bytes_ - old_group_tree + target->tree_bytes;
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
