// ExtentMap: where each 4 KiB block of a volume currently lives in the log,
// as (segment id, slot index). Unmapped blocks read as zeros.
//
// Memory bound (MemoryUsage(), checked by ExtentMapBudgetTest): at most
// 8 bytes per mapped block plus 64 bytes per group of kGroupBlocks blocks
// (256 MiB) of the volume's size, i.e. 256 KiB per TiB, whatever the pattern.
// The first term is the worst case -- every block its own extent -- down to
// about one block in 2048 mapped (7.0-7.3 B/block); sequential data costs far
// less. The second is the directory (8 bytes per group) and, in a group that
// holds only a few blocks, its leaf's header and size-class rounding: it is
// what a sparser fill pays above 8 B/block (9.3 at 1/4096, 17.6 at 1/16384,
// 39 at 1/65536 of 1 TiB), when the whole map is under 1 MiB per TiB.
// extent_map_bench measures the same by RSS in a fresh process.
//
// Representation:
//  * The block-address space is cut into groups of kGroupBlocks (65536)
//    blocks. A flat directory holds one pointer per group (8 bytes per
//    256 MiB of volume, allocated on the first Set); an empty group is freed.
//    A group of one leaf (a sparse group) is that leaf alone, tagged in its
//    directory slot, so it pays no group allocation.
//  * A group holds a sorted array of leaves that partition its 65536 blocks
//    (leaf i covers [key[i], key[i+1]); leaf 0 starts at 0). A leaf is one
//    allocation of at most kLeafMaxEntries entries; a leaf that would grow
//    past it is split, a small one is merged with a neighbour.
//  * An entry is 6 bytes: 16-bit offset in the group, 16-bit segment delta
//    from the leaf's base segment, 16-bit slot. A single-block extent is one
//    entry; a longer extent is a start entry followed by an end marker (the
//    offset of its last block). A leaf whose segment ids span 65535 or more
//    uses 8-byte entries with the full 32-bit segment id instead.
//  * Leaves live in a slab pool shared by a map and its snapshots: about 20
//    size classes (4..128 entries), each carved from pages of up to 4 KiB
//    that hold one class only, so space a leaf frees is reused by the next
//    leaf of its class. When free slots exceed ~3% of the pool's pages, the
//    map moves the leaves it owns alone out of the emptiest pages and frees
//    them (amortised O(1) per allocation), so the resident size stays close
//    to the live bytes however leaves grew and shrank.
//  * Edits that stay inside one leaf owned by this map alone (the common
//    single-block Set, trims) are spliced into it in place with a memmove;
//    the leaf moves to the next size class only when it is full.
// Hence segment ids are 1..2^32-1 and slot indexes < 2^16.
//
// Snapshots (copy-on-write): Snapshot() copies the directory and shares the
// groups; groups and leaves carry an atomic reference count (a one-leaf
// group's is its leaf's), and a map modifies a group or leaf in place only
// while it is its sole owner (count 1), otherwise it copies it first. So a
// snapshot never changes while the map it was taken from is mutated, and
// vice versa.
//
// Errors: no exception leaves this class. Allocation failure is returned as
// IOError("out of memory") and leaves the map unchanged; bad arguments are
// InvalidArgument (checked in every build) and leave it unchanged.
//
// Threads: an ExtentMap object is thread-compatible: the owner serialises
// calls on one object (Volume holds its mutex); const methods may run
// concurrently with each other. Distinct ExtentMap objects that share nodes
// through Snapshot() need no common lock: a snapshot may be read, mutated or
// destroyed on one thread while the map it came from is used on another.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "util/status.h"

namespace hbiss::volume {

namespace extent_map_internal {
class LeafPool;
struct Leaf;
struct Group;
struct Edit;
}  // namespace extent_map_internal

struct MapRun {
  uint64_t lba = 0;
  uint64_t count = 0;
  bool mapped = false;
  uint32_t seg = 0;   // valid when mapped
  uint32_t slot = 0;  // slot of the first block; block lba+i is at slot+i
};

class ExtentMap {
 public:
  static constexpr uint32_t kGroupBlocks = 65536;
  static constexpr uint32_t kLeafMaxEntries = 128;
  static constexpr uint64_t kMaxSlot = 65536;  // exclusive
  static constexpr uint64_t kMaxSeg = 0xffffffffull;

  // A map for a volume of `blocks` blocks, all unmapped. Allocates nothing
  // (the directory is allocated by the first Set), so it cannot fail.
  explicit ExtentMap(uint64_t blocks);
  // Drops this map's references; nodes still shared with a snapshot live on.
  ~ExtentMap();
  ExtentMap(const ExtentMap&) = delete;
  ExtentMap& operator=(const ExtentMap&) = delete;

  uint64_t blocks() const { return blocks_; }

  // Maps blocks [lba, lba+count) to slots [first_slot, first_slot+count) of
  // segment seg. count == 0 is a no-op.
  // InvalidArgument (map unchanged) unless lba+count <= blocks(),
  // first_slot+count <= kMaxSlot and seg != 0.
  // IOError("out of memory") if an allocation fails: the map is unchanged.
  Status Set(uint64_t lba, uint64_t count, uint32_t seg, uint32_t first_slot);

  // Unmaps blocks [lba, lba+count). count == 0 is a no-op.
  // InvalidArgument (map unchanged) unless lba+count <= blocks().
  // IOError("out of memory") if an allocation fails (clearing part of an
  // extent can split it): the map is unchanged.
  Status Clear(uint64_t lba, uint64_t count);

  // Replaces *out with runs covering [lba, lba+count) in order: maximal runs
  // of unmapped blocks, and of mapped blocks in consecutive slots of one
  // segment. Reuses out's capacity.
  // InvalidArgument unless lba+count <= blocks(); IOError("out of memory")
  // if growing *out fails. On error *out is empty.
  Status Lookup(uint64_t lba, uint64_t count, std::vector<MapRun>* out) const;

  // Calls fn for every maximal mapped run, in block order. Allocates nothing.
  // fn must not modify this map.
  void ForEach(const std::function<void(const MapRun&)>& fn) const;

  // Blocks currently mapped.
  uint64_t MappedBlocks() const { return mapped_; }

  // Heap bytes of this map: the object, its directory and every group it
  // references, each at its real allocation size (malloc_usable_size plus
  // the allocator's 8-byte chunk header), plus every page of the leaf pool
  // (and the pool's own bookkeeping). The pool is shared with snapshots, so
  // shared nodes are counted in full by both.
  uint64_t MemoryUsage() const;

  // Unmaps everything and drops this map's nodes and directory. Cannot fail.
  void Reset();

  // A copy-on-write snapshot: a new map with the same blocks() and mapping,
  // sharing all groups and leaves with this one. Costs one directory copy
  // (O(blocks() / kGroupBlocks)); afterwards each side copies a shared group
  // or leaf the first time it changes it. The snapshot is an ordinary,
  // independent ExtentMap (see Threads above); typical use is to take it
  // under the owner's lock, then encode it on another thread without a lock.
  // IOError("out of memory") if allocation fails (this map is unchanged).
  Result<std::unique_ptr<ExtentMap>> Snapshot() const;

  // Test only: the calling thread's next n allocations by any ExtentMap
  // succeed and all later ones fail, until called again; n < 0 (the
  // default) turns failure injection off.
  static void TEST_FailAllocationsAfter(int64_t n);

 private:
  using Leaf = extent_map_internal::Leaf;
  using Group = extent_map_internal::Group;
  using Edit = extent_map_internal::Edit;
  using LeafPool = extent_map_internal::LeafPool;

  Status Update(uint64_t lba, uint64_t count, bool clear, uint32_t seg, uint32_t slot);
  // The fast path: applies [s, e) of group gi in place if it stays inside
  // one leaf that this map owns alone. Returns false (map unchanged) if the
  // general path must run; otherwise *st is the result.
  bool TryInPlace(uint64_t gi, uint32_t s, uint32_t e, bool clear, uint32_t seg, uint32_t slot,
                  Status* st);
  Status PrepareEdit(Group* g, uint32_t s, uint32_t e, bool clear, uint32_t seg, uint32_t slot,
                     Edit* ed);
  void CommitEdit(Edit* ed);
  void UnrefGroup(Group* g);
  void UnrefLeaf(Leaf* l);

  uint64_t blocks_;
  uint64_t groups_;             // directory entries
  uint64_t mapped_ = 0;
  uint64_t group_bytes_ = 0;    // allocation bytes of all groups reachable
  Group** dir_ = nullptr;       // groups_ entries, or nullptr while empty;
                                // an entry may be a tagged Leaf* (IsLeafSlot)
  LeafPool* pool_ = nullptr;    // shared with snapshots; created by the first Set
};

}  // namespace hbiss::volume
