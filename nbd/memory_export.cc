#include "nbd/memory_export.h"

#include <algorithm>
#include <cstring>

namespace hbiss::nbd {

MemoryExport::MemoryExport(std::string name, uint64_t size, bool read_only)
    : name_(std::move(name)),
      size_(size),
      read_only_(read_only),
      data_(size, 0),
      allocated_((size + kBlock - 1) / kBlock, false) {}

static Status CheckRange(uint64_t offset, uint64_t length, uint64_t size) {
  if (offset > size || length > size - offset) {
    return Status::InvalidArgument("range outside the export");
  }
  return Status::OK();
}

Status MemoryExport::Read(uint64_t offset, std::span<uint8_t> out) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, out.size(), size_));
  reads++;
  MutexLock l(&mu_);
  std::memcpy(out.data(), data_.data() + offset, out.size());
  return Status::OK();
}

Status MemoryExport::Write(uint64_t offset, std::span<const uint8_t> data) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, data.size(), size_));
  if (read_only_) return Status::InvalidArgument("read-only");
  writes++;
  MutexLock l(&mu_);
  MarkDirtyLocked(offset, data.size());
  std::memcpy(data_.data() + offset, data.data(), data.size());
  if (!data.empty()) {
    for (uint64_t b = offset / kBlock; b <= (offset + data.size() - 1) / kBlock; b++) {
      allocated_[b] = true;
    }
  }
  return Status::OK();
}

void MemoryExport::MarkDirtyLocked(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  for (auto& [name, bits] : dirty_) {
    for (uint64_t b = offset / kBlock; b <= (offset + length - 1) / kBlock; b++) bits[b] = true;
  }
}

void MemoryExport::ZeroLocked(uint64_t offset, uint64_t length, bool unmap) {
  MarkDirtyLocked(offset, length);
  std::memset(data_.data() + offset, 0, length);
  uint64_t end = offset + length;
  for (uint64_t b = offset / kBlock; b * kBlock < end; b++) {
    uint64_t bs = b * kBlock, be = std::min(bs + kBlock, size_);
    if (bs >= offset && be <= end) {
      allocated_[b] = !unmap;
    } else {
      allocated_[b] = true;  // a partial block is rewritten, so it holds data
    }
  }
}

Status MemoryExport::Trim(uint64_t offset, uint64_t length) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, length, size_));
  trims++;
  MutexLock l(&mu_);
  ZeroLocked(offset, length, true);
  return Status::OK();
}

Status MemoryExport::WriteZeroes(uint64_t offset, uint64_t length, bool may_trim) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, length, size_));
  zeroes++;
  if (!may_trim) no_hole_zeroes++;
  MutexLock l(&mu_);
  ZeroLocked(offset, length, may_trim);
  return Status::OK();
}

Status MemoryExport::Flush() {
  flushes++;
  return Status::OK();
}

Result<std::vector<Extent>> MemoryExport::BlockStatus(uint64_t offset, uint64_t length) {
  HBISS_RETURN_IF_ERROR(CheckRange(offset, length, size_));
  std::vector<Extent> out;
  MutexLock l(&mu_);
  uint64_t pos = offset, end = offset + length;
  while (pos < end) {
    uint64_t b = pos / kBlock;
    bool hole = !allocated_[b];
    uint64_t next = std::min((b + 1) * kBlock, end);
    if (!out.empty() && out.back().hole == hole) {
      out.back().length += next - pos;
    } else {
      out.push_back(Extent{pos, next - pos, hole, hole});
    }
    pos = next;
  }
  return out;
}

void MemoryExport::StartDirtyBitmap(const std::string& bitmap) {
  MutexLock l(&mu_);
  dirty_[bitmap].assign(allocated_.size(), false);
}

std::vector<std::string> MemoryExport::DirtyBitmapNames() {
  MutexLock l(&mu_);
  std::vector<std::string> names;
  for (auto& [n, bits] : dirty_) names.push_back(n);
  return names;
}

Result<std::shared_ptr<const DirtyMap>> MemoryExport::DirtyBitmap(const std::string& bitmap) {
  std::vector<DirtyMap::Run> runs;
  {
    MutexLock l(&mu_);
    auto it = dirty_.find(bitmap);
    if (it == dirty_.end()) return Export::DirtyBitmap(bitmap);
    const std::vector<bool>& bits = it->second;
    for (uint64_t b = 0; b < bits.size(); b++) {
      if (!bits[b]) continue;
      const uint64_t off = b * kBlock, len = std::min(kBlock, size_ - off);
      if (!runs.empty() && runs.back().offset + runs.back().length == off) {
        runs.back().length += len;
      } else {
        runs.push_back({off, len});
      }
    }
  }
  dirty_builds++;
  HBISS_ASSIGN_OR_RETURN(DirtyMap m,
                         DirtyMap::Build(size_, std::move(runs), kBlock, max_dirty_runs.load()));
  return std::make_shared<const DirtyMap>(std::move(m));
}

void MemoryProvider::Add(std::shared_ptr<MemoryExport> e) {
  MutexLock l(&mu_);
  exports_[e->name()] = std::move(e);
}

Result<std::vector<std::string>> MemoryProvider::List() {
  MutexLock l(&mu_);
  std::vector<std::string> names;
  for (auto& [n, e] : exports_) names.push_back(n);
  return names;
}

Result<ExportInfo> MemoryProvider::Describe(const std::string& name) {
  MutexLock l(&mu_);
  auto it = exports_.find(name);
  if (it == exports_.end() && name.empty() && exports_.size() == 1) it = exports_.begin();
  if (it == exports_.end()) return Status::NotFound("no export named '" + name + "'");
  return ExportInfo{it->first, it->second->size(), it->second->read_only(), "memory export"};
}

Result<std::shared_ptr<Export>> MemoryProvider::Open(const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(ExportInfo info, Describe(name));
  MutexLock l(&mu_);
  return std::shared_ptr<Export>(exports_.at(info.name));
}

Result<std::vector<std::string>> MemoryProvider::DirtyBitmaps(const std::string& name) {
  std::shared_ptr<MemoryExport> e;
  {
    MutexLock l(&mu_);
    auto it = exports_.find(name);
    if (it == exports_.end()) return Status::NotFound("no export named '" + name + "'");
    e = it->second;
  }
  return e->DirtyBitmapNames();
}

}  // namespace hbiss::nbd
