// ExtentMap: where each 4 KiB block of a volume currently lives in the log,
// as (segment id, slot index). Unmapped blocks read as zeros.
//
// Compact by design (the budget is <= 8 bytes per mapped block when every
// block is its own extent, far less for sequential data):
//  * The block-address space is cut into chunks of 256 blocks. A two-level
//    directory (256 chunk pointers per second-level page) holds a pointer
//    per chunk, allocated on demand; an empty chunk is freed.
//  * A chunk is either sparse -- a sorted array of packed 64-bit extents
//    (start 8 bits | length-1 8 bits | segment id 32 bits | slot 16 bits) --
//    or dense -- 256 packed 6-byte locations plus a 256-bit present bitmap.
//    A chunk turns dense when its sparse form would be larger, and back to
//    sparse when that would be at most half the size.
// Hence segment ids are < 2^32 and slot indexes < 2^16.
//
// Not thread-safe: the owner serialises access (Volume holds its mutex).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace hbiss::volume {

struct MapRun {
  uint64_t lba = 0;
  uint64_t count = 0;
  bool mapped = false;
  uint32_t seg = 0;   // valid when mapped
  uint32_t slot = 0;  // slot of the first block; block lba+i is at slot+i
};

class ExtentMap {
 public:
  static constexpr uint32_t kChunkBlocks = 256;
  static constexpr uint32_t kChunksPerPage = 256;
  static constexpr uint64_t kMaxSlot = 65536;  // exclusive
  static constexpr uint64_t kMaxSeg = 0xffffffffull;

  // A map for a volume of `blocks` blocks, all unmapped.
  explicit ExtentMap(uint64_t blocks);
  ~ExtentMap();
  ExtentMap(const ExtentMap&) = delete;
  ExtentMap& operator=(const ExtentMap&) = delete;

  uint64_t blocks() const { return blocks_; }

  // Maps blocks [lba, lba+count) to slots [first_slot, first_slot+count) of
  // segment seg. REQUIRES: lba+count <= blocks(), first_slot+count <= kMaxSlot,
  // 0 < seg <= kMaxSeg.
  void Set(uint64_t lba, uint64_t count, uint32_t seg, uint32_t first_slot);

  // Unmaps blocks [lba, lba+count). REQUIRES: lba+count <= blocks().
  void Clear(uint64_t lba, uint64_t count);

  // Replaces *out with runs covering [lba, lba+count) in order: maximal runs
  // of unmapped blocks, and of mapped blocks in consecutive slots of one
  // segment. Reuses out's capacity. REQUIRES: lba+count <= blocks().
  void Lookup(uint64_t lba, uint64_t count, std::vector<MapRun>* out) const;

  // Calls fn for every maximal mapped run, in block order.
  void ForEach(const std::function<void(const MapRun&)>& fn) const;

  // Blocks currently mapped.
  uint64_t MappedBlocks() const { return mapped_; }

  // Heap bytes used, from the real allocation sizes (capacities, with the
  // allocator's per-allocation header and rounding).
  uint64_t MemoryUsage() const;

  // Unmaps everything and frees the chunks.
  void Reset();

 private:
  struct Chunk;
  Chunk*& Slot(uint64_t chunk_index);
  Chunk* Get(uint64_t chunk_index) const;
  void SetInChunk(uint64_t ci, uint32_t start, uint32_t len, uint32_t seg, uint32_t slot,
                  bool clear);
  void FreeChunk(Chunk* c);
  static void LookupChunk(const Chunk* c, uint64_t base, uint32_t start, uint32_t len,
                          std::vector<MapRun>* out);

  uint64_t blocks_;
  uint64_t mapped_ = 0;
  uint64_t chunk_bytes_ = 0;  // allocation bytes of all chunks
  uint64_t pages_ = 0;        // second-level pages allocated
  std::vector<std::unique_ptr<Chunk*[]>> dir_;
};

}  // namespace hbiss::volume
