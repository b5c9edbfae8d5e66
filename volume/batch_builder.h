// BatchBuilder: the open batch at the head of a volume's log, as entries and
// a count of data slots, before it is sealed and handed to the log writer.
//
// It is the one place that decides whether a piece of an operation fits the
// batch, whether it extends the last entry or needs a new one, and when the
// batch must be sealed. Its invariant, checked on every Add: the batch header
// the entries describe fits its 4 KiB slot (BatchFits). An Add that would
// break it is refused with a Status and changes nothing.
//
// Operations and entries (doc/log_format.md, "Operations"): one volume
// operation (a Write, a Trim, a cleaner copy) becomes one or more entries,
// possibly over several batches; every entry but the operation's last has
// kEntryContinues set. An entry is extended in place only when that keeps
// those boundaries: the last entry belongs to the operation in progress, or
// the piece being added is the operation's last (then the merged entry ends
// the operation, and the finished one it extends ends there too, which
// recovery treats the same way, as both are applied together).
//
// Pure bookkeeping: no I/O, no locks. Thread-compatible; the volume calls it
// under its mutex.
#pragma once

#include <cstdint>
#include <vector>

#include "util/status.h"
#include "volume/log_format.h"

namespace hbiss::volume {

// Data slots per batch at most: 1 MiB of data.
inline constexpr uint32_t kMaxBatchDataSlots = 256;

// A batch taken out of the builder by Seal.
struct SealedBatch {
  uint32_t header_slot = 0;  // slot of its header in the segment
  uint32_t data_slots = 0;   // data slots after the header
  uint64_t seq = 0;
  std::vector<BatchEntry> entries;
};

class BatchBuilder {
 public:
  BatchBuilder() = default;
  BatchBuilder(const BatchBuilder&) = delete;
  BatchBuilder& operator=(const BatchBuilder&) = delete;

  // Starts an empty batch whose header goes in `header_slot`, with sequence
  // number `seq`. REQUIRES: !active().
  void Start(uint32_t header_slot, uint64_t seq);
  bool active() const { return active_; }
  uint32_t header_slot() const { return header_slot_; }
  uint32_t data_slots() const { return data_slots_; }
  uint64_t seq() const { return seq_; }
  const std::vector<BatchEntry>& entries() const { return entries_; }

  // The operation protocol. BeginOp: an operation starts; the entries already
  // in the batch belong to finished ones. EndOp: it is over (its last piece
  // was added, or it failed). Checkpoints and seals by the log writer wait
  // while an operation is in progress.
  void BeginOp();
  void EndOp() { op_in_progress_ = false; }
  bool op_in_progress() const { return op_in_progress_; }

  // How many of the next `n` blocks of a WRITE at `lba` go into this batch,
  // given `free_slots` free slots left in the segment; `last_part`: the
  // operation ends with these n blocks. 0 means: seal the batch first (or
  // roll the segment when free_slots is 0). REQUIRES: active().
  uint32_t WriteRoom(uint64_t lba, uint64_t n, bool last_part, uint64_t free_slots) const;

  // Adds the next `k` blocks of a WRITE at `lba`, occupying the next k data
  // slots; `last_piece`: they end the operation. InvalidArgument (and no
  // change) when they do not fit: k above WriteRoom(lba, k, last_piece, k).
  Status AddWrite(uint64_t lba, uint32_t k, bool last_piece);

  // The same for TRIM/ZERO entries, which use no data slots: how many of `n`
  // blocks at `lba` fit (0: seal first), and adding them.
  uint64_t UnmapRoom(EntryType type, uint64_t lba, uint64_t n, bool last_part) const;
  Status AddUnmap(EntryType type, uint64_t lba, uint64_t k, bool last_piece);

  // Takes the batch out (empty entries are allowed) and leaves the builder
  // inactive. When an operation is still in progress, its entry in this
  // batch is marked as continuing. REQUIRES: active().
  SealedBatch Seal();

 private:
  // Whether a piece of `type` at `lba` extends the last entry; `last_piece`
  // says whether it ends its operation.
  bool Extends(EntryType type, uint64_t lba, uint64_t count, bool last_piece) const;
  Status Add(EntryType type, uint64_t lba, uint64_t count, uint32_t slots, bool last_piece);

  bool active_ = false;
  uint32_t header_slot_ = 0;
  uint32_t data_slots_ = 0;
  uint64_t seq_ = 0;
  std::vector<BatchEntry> entries_;
  bool op_in_progress_ = false;
  bool has_current_op_ = false;  // this batch holds an entry of the operation in progress
};

}  // namespace hbiss::volume
