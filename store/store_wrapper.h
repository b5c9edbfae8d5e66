// StoreWrapper: a Store that forwards every call to a target Store.
//
// Decorators (fault injection, metrics, caching) derive from it and override
// only the calls they change, like leveldb's EnvWrapper. The target is either
// owned (unique_ptr constructor) or borrowed (raw pointer constructor; the
// caller keeps it alive longer than the wrapper and everything the wrapper
// handed out). Thread safety is the target's.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "store/store.h"

namespace hbiss::store {

class StoreWrapper : public Store {
 public:
  // Owns `target`. REQUIRES: target != nullptr.
  explicit StoreWrapper(std::unique_ptr<Store> target)
      : owned_(std::move(target)), target_(owned_.get()) {}
  // Borrows `target`, which must outlive this wrapper. REQUIRES: non-null.
  explicit StoreWrapper(Store* target) : target_(target) {}
  ~StoreWrapper() override = default;

  Store* target() const { return target_; }

  Result<std::unique_ptr<SegmentWriter>> Create(const std::string& name) override {
    return target_->Create(name);
  }
  Result<std::unique_ptr<SegmentReader>> Open(const std::string& name) override {
    return target_->Open(name);
  }
  Result<std::unique_ptr<SegmentReader>> OpenForTakeover(const std::string& name) override {
    return target_->OpenForTakeover(name);
  }
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    return target_->Put(name, data);
  }
  Result<std::string> Get(const std::string& name, uint64_t max_size = 64ull << 20) override {
    return target_->Get(name, max_size);
  }
  Result<std::vector<ObjectInfo>> List(const std::string& dir) override {
    return target_->List(dir);
  }
  Result<uint64_t> Stat(const std::string& name) override { return target_->Stat(name); }
  Status Delete(const std::string& name) override { return target_->Delete(name); }
  Status DeleteDir(const std::string& dir) override { return target_->DeleteDir(dir); }
  Status RenameDir(const std::string& from, const std::string& to) override {
    return target_->RenameDir(from, to);
  }
  Result<std::unique_ptr<Lock>> TryLock(const std::string& name) override {
    return target_->TryLock(name);
  }
  Status BreakLock(const std::string& name) override { return target_->BreakLock(name); }
  std::string Uri() const override { return target_->Uri(); }
  void DropCache(const std::string& name) override { target_->DropCache(name); }
  Result<uint64_t> RemoveTempLeftovers(const std::string& dir) override {
    return target_->RemoveTempLeftovers(dir);
  }
  bool CachesReadsLocally() const override { return target_->CachesReadsLocally(); }
  bool MayRunOutOfSpace() const override { return target_->MayRunOutOfSpace(); }

 private:
  std::unique_ptr<Store> owned_;  // null when borrowed
  Store* const target_;
};

// Forwards every call to a target SegmentWriter, which it owns.
class SegmentWriterWrapper : public SegmentWriter {
 public:
  explicit SegmentWriterWrapper(std::unique_ptr<SegmentWriter> target)
      : target_(std::move(target)) {}

  Status Append(std::span<const uint8_t> data) override { return target_->Append(data); }
  Status Flush() override { return target_->Flush(); }
  Status Sync() override { return target_->Sync(); }
  Status Close() override { return target_->Close(); }
  uint64_t Size() const override { return target_->Size(); }

 protected:
  SegmentWriter* target() const { return target_.get(); }

 private:
  std::unique_ptr<SegmentWriter> target_;
};

// Forwards every call to a target SegmentReader, which it owns.
class SegmentReaderWrapper : public SegmentReader {
 public:
  explicit SegmentReaderWrapper(std::unique_ptr<SegmentReader> target)
      : target_(std::move(target)) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    return target_->ReadAt(offset, out);
  }
  uint64_t Size() const override { return target_->Size(); }

 protected:
  SegmentReader* target() const { return target_.get(); }

 private:
  std::unique_ptr<SegmentReader> target_;
};

}  // namespace hbiss::store
