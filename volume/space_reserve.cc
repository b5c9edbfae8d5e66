#include "volume/space_reserve.h"

#include <cstdlib>
#include <memory>

#include <spdlog/spdlog.h>

namespace hbiss::volume {

namespace {

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

SpaceReserve::SpaceReserve(store::Store* store, std::string object, uint64_t bytes, bool enabled)
    : store_(store), object_(std::move(object)), bytes_(bytes), enabled_(enabled) {}

Status SpaceReserve::Ensure() {
  if (!enabled_) return Status::OK();
  MutexLock l(&mu_);
  return EnsureLocked();
}

Status SpaceReserve::EnsureLocked() {
  tried_ = true;
  last_try_ = std::chrono::steady_clock::now();
  auto size = store_->Stat(object_);
  if (size.ok() && *size == bytes_) {
    held_.store(true, std::memory_order_release);
    return Status::OK();
  }
  if (!size.ok() && !size.status().IsNotFound()) return size.status();
  // calloc: the zeros come from untouched pages, so the buffer costs no
  // resident memory while the store copies it out.
  std::unique_ptr<uint8_t, FreeDeleter> zeros(static_cast<uint8_t*>(std::calloc(bytes_, 1)));
  if (!zeros) return Status::NoSpace("out of memory for the space reserve " + object_);
  Status s = store_->Put(object_, std::span<const uint8_t>(zeros.get(), bytes_));
  if (!s.ok()) return s.WithContext("writing the space reserve");
  held_.store(true, std::memory_order_release);
  return Status::OK();
}

bool SpaceReserve::Release() {
  if (!enabled_) return false;
  MutexLock l(&mu_);
  Status s = store_->Delete(object_);
  held_.store(false, std::memory_order_release);
  last_try_ = std::chrono::steady_clock::now();  // no restore right away
  if (!s.ok()) {
    if (!s.IsNotFound()) spdlog::warn("deleting the space reserve: {}", s.ToString());
    return false;
  }
  spdlog::warn("{}: the device is full; the space reserve ({} bytes) is given up so that "
               "recovery and cleaning can go on",
               object_, bytes_);
  return true;
}

void SpaceReserve::MaybeRestore() {
  if (!enabled_ || held()) return;
  MutexLock l(&mu_);
  if (held() || (tried_ && std::chrono::steady_clock::now() - last_try_ < kRestoreEvery)) return;
  Status s = EnsureLocked();
  if (s.ok()) {
    spdlog::info("{}: space is back; the space reserve is in place again", object_);
  } else {
    spdlog::debug("{}: space reserve not restored yet: {}", object_, s.ToString());
  }
}

}  // namespace hbiss::volume
