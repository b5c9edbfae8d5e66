#include "volume/batch_builder.h"

#include <gtest/gtest.h>

#include <array>
#include <random>

namespace hbiss::volume {
namespace {

// Drives a BatchBuilder the way the volume's write path does (sized by
// WriteRoom/UnmapRoom, sealing when there is no room), and checks what comes
// out: every batch encodes, and the operation boundaries survive, i.e. an
// entry ends an operation (continues clear) exactly when the operation whose
// blocks it ends with is complete.
class Packer {
 public:
  explicit Packer(uint32_t segment_slots = 16384)
      : segment_slots_(segment_slots), free_slots_(segment_slots - 1) {}

  // One operation of pieces (type, lba, blocks), in order.
  struct Piece {
    EntryType type;
    uint64_t lba;
    uint64_t n;
  };
  void Op(const std::vector<Piece>& pieces) {
    const uint64_t op = ++ops_;
    uint64_t total = 0;
    for (const Piece& p : pieces) total += p.n;
    op_blocks_.push_back(total);
    emitted_.push_back(0);
    b_.BeginOp();
    for (size_t i = 0; i < pieces.size(); i++) {
      Piece p = pieces[i];
      const bool last_part = i + 1 == pieces.size();
      while (p.n > 0) {
        if (!b_.active()) Start();
        uint64_t k;
        Status s;
        if (p.type == EntryType::kWrite) {
          k = b_.WriteRoom(p.lba, p.n, last_part, free_slots_);
          if (k > 0) s = b_.AddWrite(p.lba, uint32_t(k), last_part && k == p.n);
        } else {
          k = b_.UnmapRoom(p.type, p.lba, p.n, last_part);
          if (k > 0) s = b_.AddUnmap(p.type, p.lba, k, last_part && k == p.n);
        }
        if (k == 0) {
          ASSERT_FALSE(b_.entries().empty() && b_.data_slots() == 0 && free_slots_ > 0)
              << "no room in an empty batch";
          Seal();
          continue;
        }
        ASSERT_TRUE(s.ok()) << s.ToString();
        ASSERT_TRUE(BatchFits(b_.entries().size(), b_.data_slots()));
        if (p.type == EntryType::kWrite) free_slots_ -= k;
        // Owner of the entry the blocks went into: this operation.
        owners_.resize(b_.entries().size());
        owners_.back() = op;
        emitted_[op - 1] += k;
        done_after_.resize(b_.entries().size());
        done_after_.back() = emitted_[op - 1] == op_blocks_[op - 1];
        p.lba += k;
        p.n -= k;
      }
    }
    b_.EndOp();
  }

  // Seals the open batch (if any) and checks everything sealed so far.
  void Finish() {
    if (b_.active()) Seal();
  }

  size_t batches() const { return batches_; }
  size_t max_entries() const { return max_entries_; }

 private:
  void Start() {
    if (free_slots_ < 2) free_slots_ = segment_slots_ - 1;  // the segment rolls
    free_slots_--;  // the header
    b_.Start(header_slot_++, ++seq_);
    owners_.clear();
    done_after_.clear();
  }

  void Seal() {
    const size_t n = b_.entries().size();
    SealedBatch s = b_.Seal();
    ASSERT_EQ(s.entries.size(), n);
    // The header encodes (it fits) and decodes to the same entries.
    BatchHeader h;
    h.volume_id = 1;
    h.segment_id = 1;
    h.seq = s.seq;
    h.entries = s.entries;
    h.data_crcs.assign(s.data_slots, 7);
    std::array<uint8_t, kSlotSize> slot;
    ASSERT_TRUE(EncodeBatchHeader(h, slot).ok());
    BatchHeader d;
    ASSERT_TRUE(DecodeBatchHeader(slot, &d).ok());
    ASSERT_EQ(d.entries.size(), n);
    for (size_t i = 0; i < n; i++) {
      // An entry ends an operation exactly when its owner is complete there.
      ASSERT_EQ(d.entries[i].continues, !done_after_[i])
          << "batch " << s.seq << " entry " << i << " of op " << owners_[i];
    }
    batches_++;
    max_entries_ = std::max(max_entries_, n);
  }

  BatchBuilder b_;
  const uint32_t segment_slots_;
  uint64_t free_slots_;
  uint32_t header_slot_ = 1;
  uint64_t seq_ = 0;
  uint64_t ops_ = 0;
  std::vector<uint64_t> op_blocks_, emitted_;
  std::vector<uint64_t> owners_;
  std::vector<bool> done_after_;
  size_t batches_ = 0;
  size_t max_entries_ = 0;
};

using P = Packer::Piece;
constexpr EntryType W = EntryType::kWrite;
constexpr EntryType T = EntryType::kTrim;

// Regression (issue 8, C1): about 230 scattered 4 KiB writes, then a 4 KiB
// write at block X, then a write of 104 KiB or more at block X+1. The old
// packer sized the piece assuming it extended X's entry, pushed an entry it
// had not counted, and the header outgrew its slot.
TEST(BatchBuilderTest, ScatteredWritesThenContiguousLongWrite) {
  for (uint64_t scattered = 200; scattered <= 260; scattered++) {
    for (uint64_t long_blocks : {26, 27, 32, 64, 256, 1024}) {
      Packer p;
      for (uint64_t i = 0; i < scattered; i++) p.Op({P{W, 10 * i, 1}});
      const uint64_t x = 100000;
      p.Op({P{W, x, 1}});
      p.Op({P{W, x + 1, long_blocks}});
      p.Finish();
      if (HasFatalFailure()) return;
    }
  }
}

// The same with trims: 300 scattered 4 KiB trims, a write at X, then 128
// KiB at X+1 (entry 302 pushed, header 4106 bytes, in the old code).
TEST(BatchBuilderTest, ScatteredTrimsThenContiguousWrites) {
  for (uint64_t scattered = 280; scattered <= 312; scattered++) {
    Packer p;
    for (uint64_t i = 0; i < scattered; i++) p.Op({P{T, 10 * i, 1}});
    p.Op({P{W, 100000, 1}});
    p.Op({P{W, 100001, 32}});
    p.Finish();
    if (HasFatalFailure()) return;
  }
}

// Unmaps: a trim contiguous with a finished one but followed by more pieces
// of its operation (a partial tail block written by read-modify-write) must
// not extend the finished entry when the header is full.
TEST(BatchBuilderTest, ContiguousUnmapThatIsNotTheLastPiece) {
  for (uint64_t scattered = 295; scattered <= 305; scattered++) {
    Packer p;
    for (uint64_t i = 0; i < scattered; i++) p.Op({P{T, 10 * i, 1}});
    p.Op({P{T, 10 * scattered, 5}, P{W, 10 * scattered + 5, 1}});
    p.Op({P{T, 10 * scattered + 6, 3}, P{W, 10 * scattered + 9, 1}});
    p.Finish();
    if (HasFatalFailure()) return;
  }
}

// Cleaner copies are one operation per run, often contiguous with the
// previous copy.
TEST(BatchBuilderTest, ContiguousCopies) {
  Packer p;
  for (uint64_t i = 0; i < 240; i++) p.Op({P{W, 3 * i, 1}});
  for (uint64_t i = 0; i < 50; i++) p.Op({P{W, 5000 + 40 * i, 40}});
  p.Finish();
}

TEST(BatchBuilderTest, AddThatDoesNotFitIsRefusedAndChangesNothing) {
  BatchBuilder b;
  b.Start(1, 1);
  for (uint64_t i = 0; i < 310; i++) {
    b.BeginOp();
    ASSERT_TRUE(b.AddUnmap(T, 2 * i, 1, true).ok());
    b.EndOp();
  }
  ASSERT_FALSE(BatchFits(311, 0));
  b.BeginOp();
  EXPECT_EQ(b.UnmapRoom(T, 10000, 1, true), 0u);
  EXPECT_TRUE(b.AddUnmap(T, 10000, 1, true).IsInvalidArgument());
  EXPECT_EQ(b.WriteRoom(10000, 1, true, 100), 0u);
  EXPECT_TRUE(b.AddWrite(10000, 1, true).IsInvalidArgument());
  EXPECT_EQ(b.entries().size(), 310u);
  EXPECT_EQ(b.data_slots(), 0u);
  // Extending the last entry with the operation's last piece still fits.
  EXPECT_EQ(b.UnmapRoom(T, 2 * 309 + 1, 1, true), 1u);
  EXPECT_TRUE(b.AddUnmap(T, 2 * 309 + 1, 1, true).ok());
  EXPECT_EQ(b.entries().size(), 310u);
  EXPECT_EQ(b.entries().back().count, 2u);
  EXPECT_FALSE(b.entries().back().continues);
}

TEST(BatchBuilderTest, SealMarksTheOperationInProgress) {
  BatchBuilder b;
  b.Start(1, 7);
  b.BeginOp();
  ASSERT_TRUE(b.AddWrite(0, 4, true).ok());
  b.EndOp();
  b.BeginOp();
  ASSERT_TRUE(b.AddWrite(100, 8, false).ok());
  SealedBatch s = b.Seal();
  EXPECT_FALSE(b.active());
  ASSERT_EQ(s.entries.size(), 2u);
  EXPECT_FALSE(s.entries[0].continues);
  EXPECT_TRUE(s.entries[1].continues);
  EXPECT_EQ(s.data_slots, 12u);
  EXPECT_EQ(s.seq, 7u);
  // The rest of the operation goes on in the next batch, in a new entry.
  b.Start(14, 8);
  EXPECT_EQ(b.WriteRoom(108, 4, true, 100), 4u);
  ASSERT_TRUE(b.AddWrite(108, 4, true).ok());
  b.EndOp();
  EXPECT_EQ(b.entries().size(), 1u);
  EXPECT_FALSE(b.entries()[0].continues);
}

TEST(BatchBuilderTest, RoomIsLimitedBySegmentAndBatchSlots) {
  BatchBuilder b;
  b.Start(1, 1);
  b.BeginOp();
  EXPECT_EQ(b.WriteRoom(0, 1000, true, 10), 10u);
  EXPECT_EQ(b.WriteRoom(0, 1000, true, 0), 0u);
  EXPECT_EQ(b.WriteRoom(0, 1000, true, 100000), kMaxBatchDataSlots);
  ASSERT_TRUE(b.AddWrite(0, kMaxBatchDataSlots, false).ok());
  EXPECT_EQ(b.WriteRoom(kMaxBatchDataSlots, 1, true, 100), 0u);
  EXPECT_TRUE(b.AddWrite(kMaxBatchDataSlots, 1, true).IsInvalidArgument());
}

// Random operations of every shape: scattered, contiguous with the last
// one, multi-piece (head and tail blocks around a middle), long and short.
TEST(BatchBuilderTest, RandomOperationsKeepHeadersInSlotsAndBoundariesIntact) {
  for (uint32_t seed = 1; seed <= 200; seed++) {
    std::mt19937_64 rng(seed);
    Packer p(uint32_t(1) << 16);
    uint64_t next = 0;
    for (int op = 0; op < 400; op++) {
      const uint64_t lba = rng() % 4 == 0 ? next : rng() % 1000000;
      const int shape = int(rng() % 6);
      std::vector<P> pieces;
      auto len = [&] { return rng() % 3 == 0 ? 1 + rng() % 300 : 1 + rng() % 4; };
      uint64_t at = lba;
      if (shape == 0 || shape == 1) {
        pieces.push_back(P{shape == 0 ? W : T, at, len()});
      } else if (shape == 2) {  // head write, middle unmap, tail write
        pieces.push_back(P{W, at, 1});
        pieces.push_back(P{EntryType::kZero, at + 1, len()});
        pieces.push_back(P{W, at + 1 + pieces.back().n, 1});
      } else if (shape == 3) {  // middle write then tail
        pieces.push_back(P{W, at, len()});
        pieces.push_back(P{W, at + pieces.back().n, 1});
      } else {
        pieces.push_back(P{rng() % 2 ? W : T, at, len()});
      }
      for (const P& q : pieces) next = q.lba + q.n;
      p.Op(pieces);
      if (HasFatalFailure()) {
        ADD_FAILURE() << "seed " << seed << " op " << op;
        return;
      }
    }
    p.Finish();
    ASSERT_FALSE(HasFatalFailure()) << "seed " << seed;
  }
}

}  // namespace
}  // namespace hbiss::volume
