#include "volume/segment_cache.h"

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include "volume/layout.h"
#include "volume/memory_budget.h"

namespace hbiss::volume {

namespace {
// The chunk cache holds 64 KiB chunks; reads of 256 KiB or more go around
// it (sequential streams are cheap on HDFS and would only push out the
// small, hot data).
constexpr uint64_t kCacheChunkSlots = 16;
constexpr uint64_t kCacheBypassBytes = 256 << 10;
}  // namespace

uint64_t OpenReadersFor(uint64_t nofile_soft_limit) {
  return std::min(kMaxOpenReaders, std::max(kMinOpenReaders, nofile_soft_limit / 4));
}

uint64_t DefaultOpenReaders() {
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY) {
    return kMaxOpenReaders;
  }
  return OpenReadersFor(uint64_t(nofile.rlim_cur));
}

ReaderPool& DefaultReaderPool() {
  static ReaderPool* pool = new ReaderPool(DefaultOpenReaders());  // outlives every volume
  return *pool;
}

CrcTableCache& DefaultCrcTableCache() {
  static CrcTableCache* cache = new CrcTableCache(kDefaultMemoryLimit / 4);
  return *cache;
}

ReadCache& DefaultReadCache() {
  static ReadCache* cache = new ReadCache(kDefaultMemoryLimit / 8);
  return *cache;
}

SegmentCache::SegmentCache(store::Store* store, layout::LogDir dir, uint64_t volume_id,
                           uint32_t seg_slots, ReadCache* read_cache, ReaderPool* readers,
                           CrcTableCache* tables)
    : store_(store),
      name_(dir.volume()),
      dir_(std::move(dir)),
      volume_id_(volume_id),
      seg_slots_(seg_slots),
      readers_(readers),
      tables_(tables),
      chunks_(read_cache) {}

SegmentCache::~SegmentCache() {
  readers_->EraseOwner(this);
  tables_->EraseOwner(this);
  if (chunks_) chunks_->EraseOwner(this);
}

void SegmentCache::Insert(uint64_t seg, std::shared_ptr<const CrcTable> table) {
  const uint64_t charge = table->bytes();
  tables_->Insert(this, seg, std::move(table), charge);
}

void SegmentCache::Drop(uint64_t seg) {
  readers_->Erase(this, seg);
  tables_->Erase(this, seg);
  // Its cached chunks age out of the read cache (they are never found again:
  // segment ids are not reused).
}

void SegmentCache::SetDir(layout::LogDir dir) {
  MutexLock l(&dir_mu_);
  dir_ = std::move(dir);
}

layout::LogDir SegmentCache::dir() const {
  MutexLock l(&dir_mu_);
  return dir_;
}

void SegmentCache::DropAll() {
  readers_->EraseOwner(this);
  tables_->EraseOwner(this);
  if (chunks_ != nullptr) chunks_->EraseOwner(this);
}

Result<std::shared_ptr<store::SegmentReader>> SegmentCache::Reader(uint64_t seg) {
  if (auto r = readers_->Find(this, seg)) return r;
  HBISS_ASSIGN_OR_RETURN(auto reader, store_->Open(layout::SegName(dir(), seg)));
  std::shared_ptr<store::SegmentReader> r(std::move(reader));
  readers_->Insert(this, seg, r, 1);
  return r;
}

Result<std::shared_ptr<const CrcTable>> SegmentCache::Table(uint64_t seg,
                                                            store::SegmentReader* reader) {
  if (auto t = tables_->Find(this, seg)) return t;
  auto table = std::make_shared<CrcTable>();
  table->crcs = std::vector<uint32_t>(seg_slots_, 0);
  table->valid = std::vector<bool>(seg_slots_, false);
  const uint64_t size = reader->Size();
  // The summary, when there is a good one for exactly this object, is the
  // table; it only saves the scan below, which follows recovery's rules.
  auto sum_data = store_->Get(layout::SumName(dir(), seg), layout::kMaxSummaryBytes);
  bool have = false;
  if (sum_data.ok()) {
    auto sum = DecodeSegmentSummary(std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(sum_data->data()), sum_data->size()));
    if (sum.ok() && sum->volume_id == volume_id_ && sum->segment_id == seg &&
        sum->segment_bytes == size && sum->crcs.size() <= seg_slots_) {
      std::copy(sum->crcs.begin(), sum->crcs.end(), table->crcs.begin());
      std::copy(sum->valid.begin(), sum->valid.end(), table->valid.begin());
      have = true;
    } else {
      spdlog::warn("volume {}: ignoring the summary of segment {}: {}", name_, Hex16(seg),
                   sum.ok() ? "it describes another object" : sum.status().ToString());
    }
  }
  if (!have) {
    HBISS_RETURN_IF_ERROR(ScanBatchHeaders(reader, volume_id_, seg, seg_slots_,
                                           "volume " + name_ + " segment " + Hex16(seg),
                                           [&](uint64_t off, const BatchHeader& h) {
                                             const uint64_t first = off / kSlotSize + 1;
                                             for (size_t i = 0; i < h.data_crcs.size(); i++) {
                                               table->crcs[first + i] = h.data_crcs[i];
                                               table->valid[first + i] = true;
                                             }
                                           })
                              .status());
  }
  std::shared_ptr<const CrcTable> t = std::move(table);
  tables_->Insert(this, seg, t, t->bytes());
  return t;
}

Result<ScanEnd> SegmentCache::Scan(uint64_t seg,
                                   const std::function<void(uint64_t, const BatchHeader&)>& fn) {
  HBISS_ASSIGN_OR_RETURN(auto reader, Reader(seg));
  return ScanBatchHeaders(reader.get(), volume_id_, seg, seg_slots_,
                          "volume " + name_ + " segment " + Hex16(seg), fn);
}

Status SegmentCache::ReadSlots(uint64_t seg, store::SegmentReader* reader, uint32_t slot0,
                               uint64_t n, uint8_t* dst) {
  auto what = [&] { return "volume " + name_ + " segment " + Hex16(seg); };
  auto read = [&](uint64_t first_slot, uint64_t slots, uint8_t* to) {
    return ReadExact(reader, first_slot * kSlotSize,
                     std::span<uint8_t>(to, size_t(slots) * kSlotSize), what);
  };
  if (!chunks_ || n * kSlotSize >= kCacheBypassBytes) return read(slot0, n, dst);
  // The CRCs are checked by the caller on every read, cached or not, so a
  // chunk read from a bad replica is never served as good.
  const uint64_t seg_bytes = reader->Size();
  uint64_t s = slot0;
  const uint64_t end = slot0 + n;
  while (s < end) {
    const uint64_t c = s / kCacheChunkSlots;
    const uint64_t c_first = c * kCacheChunkSlots;
    const uint64_t key = seg << 16 | c;
    std::shared_ptr<const std::vector<uint8_t>> chunk = chunks_->Find(this, key);
    if (!chunk) {
      const uint64_t off = c_first * kSlotSize;
      const uint64_t slots =
          std::min(kCacheChunkSlots, seg_bytes > off ? (seg_bytes - off) / kSlotSize : 0);
      if (c_first + slots < std::min(end, c_first + kCacheChunkSlots)) {
        // The object is shorter than the slots asked for: let the plain path
        // say so.
        return read(s, end - s, dst + (s - slot0) * kSlotSize);
      }
      auto buf = std::make_shared<std::vector<uint8_t>>(slots * kSlotSize);
      HBISS_RETURN_IF_ERROR(read(c_first, slots, buf->data()));
      chunk = buf;
      chunks_->Insert(this, key, chunk, buf->size());
    }
    const uint64_t upto = std::min(end, c_first + kCacheChunkSlots);
    std::memcpy(dst + (s - slot0) * kSlotSize, chunk->data() + (s - c_first) * kSlotSize,
                (upto - s) * kSlotSize);
    s = upto;
  }
  return Status::OK();
}

Status SegmentCache::ReadRun(const MapRun& r, uint64_t offset, std::span<uint8_t> out) {
  HBISS_ASSIGN_OR_RETURN(auto reader, Reader(r.seg));
  HBISS_ASSIGN_OR_RETURN(auto table, Table(r.seg, reader.get()));
  const uint64_t end = offset + out.size();
  const uint64_t bs = std::max(r.lba * kSlotSize, offset);
  const uint64_t be = std::min((r.lba + r.count) * kSlotSize, end);
  const uint64_t b0 = bs / kSlotSize, b1 = (be + kSlotSize - 1) / kSlotSize;
  const uint64_t nblocks = b1 - b0;
  const uint32_t slot0 = uint32_t(r.slot + (b0 - r.lba));
  const bool direct = bs % kSlotSize == 0 && be % kSlotSize == 0;
  static thread_local std::vector<uint8_t> scratch;
  uint8_t* dst;
  if (direct) {
    dst = out.data() + (bs - offset);
  } else {
    if (scratch.size() < nblocks * kSlotSize) scratch.resize(nblocks * kSlotSize);
    dst = scratch.data();
  }
  auto where = [&] { return "volume " + name_ + " segment " + Hex16(r.seg); };
  HBISS_RETURN_IF_ERROR(ReadSlots(r.seg, reader.get(), slot0, nblocks, dst));
  for (uint64_t i = 0; i < nblocks; i++) {
    const uint32_t s = slot0 + uint32_t(i);
    if (s >= table->valid.size() || !table->valid[s]) {
      return Status::Corruption(where() + ": no valid batch header covers slot " +
                                std::to_string(s) + " (block " + std::to_string(b0 + i) + ")");
    }
    if (DataSlotCrc(dst + i * kSlotSize) != table->crcs[s]) {
      return Status::Corruption(where() + ": CRC mismatch in slot " + std::to_string(s) +
                                " (block " + std::to_string(b0 + i) + ")");
    }
  }
  if (!direct) std::memcpy(out.data() + (bs - offset), dst + (bs - b0 * kSlotSize), be - bs);
  return Status::OK();
}

}  // namespace hbiss::volume
