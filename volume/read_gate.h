// ReadGate: lets a deleter wait until every read that began before it has
// ended, without ever blocking a reader (a reader-preferring rwlock would let
// a steady stream of reads starve the deleter).
//
// A reader holds a Pass from the moment it looks a location up in the extent
// map to the end of its read. The cleaner, after the map stops pointing into
// a segment, calls WaitForEarlierReads before deleting it: no read still
// holds an old location then.
//
// Threads: any number of Pass holders; WaitForEarlierReads one caller at a
// time (the volume's cleaning lock).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace hbiss::volume {

class ReadGate {
 public:
  class Pass {
   public:
    explicit Pass(ReadGate& g) : g_(g), i_(g.Enter()) {}
    ~Pass() { g_.in_[i_].fetch_sub(1); }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

   private:
    ReadGate& g_;
    int i_;
  };

  // Returns once every Pass made before the call is gone. REQUIRES: one
  // caller at a time.
  void WaitForEarlierReads() {
    const uint64_t g = gen_.fetch_add(1);
    while (in_[g & 1].load() != 0) std::this_thread::sleep_for(kPoll);
  }

 private:
  static constexpr auto kPoll = std::chrono::microseconds(200);

  int Enter() {
    for (;;) {
      const uint64_t g = gen_.load();
      in_[g & 1].fetch_add(1);
      if (gen_.load() == g) return int(g & 1);
      in_[g & 1].fetch_sub(1);  // a deleter moved on meanwhile: join the new generation
    }
  }

  std::atomic<uint64_t> gen_{0};
  std::atomic<int64_t> in_[2] = {0, 0};
};

}  // namespace hbiss::volume
