#include "volume/batch_builder.h"

#include <algorithm>
#include <limits>
#include <string>

namespace hbiss::volume {

namespace {
constexpr uint64_t kMaxEntryCount = std::numeric_limits<uint32_t>::max();
}  // namespace

void BatchBuilder::Start(uint32_t header_slot, uint64_t seq) {
  active_ = true;
  header_slot_ = header_slot;
  data_slots_ = 0;
  seq_ = seq;
  entries_.clear();
  has_current_op_ = false;
}

void BatchBuilder::BeginOp() {
  op_in_progress_ = true;
  has_current_op_ = false;
}

bool BatchBuilder::Extends(EntryType type, uint64_t lba, uint64_t count, bool last_piece) const {
  if (entries_.empty()) return false;
  const BatchEntry& b = entries_.back();
  // The last entry belongs to the operation in progress exactly when this
  // batch holds one of its entries: they are added in order.
  const bool same_op = has_current_op_ && op_in_progress_;
  return b.type == type && b.lba + b.count == lba && uint64_t(b.count) + count <= kMaxEntryCount &&
         (same_op || last_piece);
}

uint32_t BatchBuilder::WriteRoom(uint64_t lba, uint64_t n, bool last_part,
                                 uint64_t free_slots) const {
  if (!active_ || n == 0) return 0;
  const uint64_t limit = std::min<uint64_t>(
      {n, kMaxBatchDataSlots - data_slots_, free_slots, kMaxEntryCount});
  // Room for k more CRCs with e entries: (slot - header bytes) / 4.
  auto room = [&](size_t e) -> uint64_t {
    if (!BatchFits(e, data_slots_)) return 0;
    return (kSlotSize - BatchHeaderBytes(e, data_slots_)) / 4;
  };
  const size_t e = entries_.size();
  // Extending needs no new entry, but when the last entry is of a finished
  // operation only the operation's last piece may extend it: all n blocks.
  if (Extends(EntryType::kWrite, lba, 1, /*last_piece=*/false)) {
    return uint32_t(std::min(limit, room(e)));
  }
  if (last_part && n <= limit && n <= room(e) && Extends(EntryType::kWrite, lba, n, true)) {
    return uint32_t(n);
  }
  return uint32_t(std::min(limit, room(e + 1)));
}

uint64_t BatchBuilder::UnmapRoom(EntryType type, uint64_t lba, uint64_t n, bool last_part) const {
  if (!active_ || n == 0) return 0;
  const uint64_t k = std::min(n, kMaxEntryCount);
  const bool last_piece = last_part && k == n;
  if (Extends(type, lba, k, last_piece)) return k;
  return BatchFits(entries_.size() + 1, data_slots_) ? k : 0;
}

Status BatchBuilder::AddWrite(uint64_t lba, uint32_t k, bool last_piece) {
  return Add(EntryType::kWrite, lba, k, k, last_piece);
}

Status BatchBuilder::AddUnmap(EntryType type, uint64_t lba, uint64_t k, bool last_piece) {
  if (type == EntryType::kWrite) return Status::InvalidArgument("AddUnmap of a WRITE entry");
  return Add(type, lba, k, 0, last_piece);
}

Status BatchBuilder::Add(EntryType type, uint64_t lba, uint64_t count, uint32_t slots,
                         bool last_piece) {
  if (!active_) return Status::InvalidArgument("batch: add to a sealed batch");
  if (count == 0 || count > kMaxEntryCount) {
    return Status::InvalidArgument("batch: entry of " + std::to_string(count) + " blocks");
  }
  if (uint64_t(data_slots_) + slots > kMaxBatchDataSlots) {
    return Status::InvalidArgument("batch: more than " + std::to_string(kMaxBatchDataSlots) +
                                   " data slots");
  }
  const bool extend = Extends(type, lba, count, last_piece);
  const size_t e = entries_.size() + (extend ? 0 : 1);
  if (!BatchFits(e, data_slots_ + slots)) {
    return Status::InvalidArgument("batch: header of " + std::to_string(e) + " entries and " +
                                   std::to_string(data_slots_ + slots) +
                                   " data slots does not fit its slot");
  }
  if (extend) {
    BatchEntry& b = entries_.back();
    b.count = uint32_t(b.count + count);
    b.continues = !last_piece;
  } else {
    entries_.push_back(BatchEntry{type, !last_piece, lba, uint32_t(count)});
  }
  data_slots_ += slots;
  has_current_op_ = true;
  return Status::OK();
}

SealedBatch BatchBuilder::Seal() {
  if (has_current_op_ && op_in_progress_ && !entries_.empty()) entries_.back().continues = true;
  SealedBatch b;
  b.header_slot = header_slot_;
  b.data_slots = data_slots_;
  b.seq = seq_;
  b.entries = std::move(entries_);
  entries_.clear();
  entries_.reserve(16);
  active_ = false;
  has_current_op_ = false;
  return b;
}

}  // namespace hbiss::volume
