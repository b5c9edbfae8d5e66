#include "cli/progress.h"

#include <fmt/format.h>

namespace hbiss::cli {

std::string FormatBytes(uint64_t n) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", n);
  return fmt::format("{:.1f} {}", v, kUnits[u]);
}

}  // namespace hbiss::cli
