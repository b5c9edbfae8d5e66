// Progress on stderr for long commands (import, export, flatten): a bar
// redrawn now and then while stderr is a terminal, nothing otherwise. And
// FormatBytes, sizes for people ("1.5 GiB").
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

namespace hbiss::cli {

std::string FormatBytes(uint64_t n);

class Progress {
 public:
  Progress(std::string what, uint64_t total)
      : what_(std::move(what)), total_(total), enabled_(isatty(STDERR_FILENO) == 1) {
    start_ = last_ = std::chrono::steady_clock::now();
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void Update(uint64_t done, bool force = false) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double pct = total_ == 0 ? 100.0 : 100.0 * static_cast<double>(done) / total_;
    int filled = static_cast<int>(pct / 100.0 * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    std::fprintf(stderr, "\r\033[K%s %5.1f%% [%s] %s / %s  %s/s", what_.c_str(), pct,
                 bar.c_str(), FormatBytes(done).c_str(), FormatBytes(total_).c_str(),
                 FormatBytes(static_cast<uint64_t>(rate)).c_str());
    drawn_ = true;
  }

  // For a command that learns its total only once the work has begun (a
  // server's flatten): the rate still counts from construction.
  void SetTotal(uint64_t total) { total_ = total; }

  // Clears the bar so that a log line can be printed.
  void Clear() {
    if (enabled_ && drawn_) std::fprintf(stderr, "\r\033[K");
  }

  void Finish(uint64_t done) {
    if (!enabled_) return;
    Update(done, true);
    std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  static constexpr int kWidth = 30;
  std::string what_;
  uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace hbiss::cli
