#include "nbd/dirty_map.h"

#include <algorithm>
#include <string>

namespace hbiss::nbd {

namespace {

// Appends [offset, end) to `out`, merging it into the last run when they
// touch or overlap (callers append in offset order).
void Append(std::vector<DirtyMap::Run>* out, uint64_t offset, uint64_t end) {
  if (!out->empty()) {
    DirtyMap::Run& last = out->back();
    if (offset <= last.offset + last.length) {
      last.length = std::max(last.offset + last.length, end) - last.offset;
      return;
    }
  }
  out->push_back({offset, end - offset});
}

// Widens every run to multiples of `g` (the end clamped to `size`) and
// merges the runs that then touch. In place: the result never has more runs.
void Coarsen(std::vector<DirtyMap::Run>* runs, uint64_t g, uint64_t size) {
  std::vector<DirtyMap::Run> out;
  out.reserve(runs->size());
  for (const DirtyMap::Run& r : *runs) {
    const uint64_t start = r.offset / g * g;
    const uint64_t end = r.offset + r.length;
    // Round the end up to a multiple of g, or to size when that is less
    // (compared as a difference: end + g may not fit in 64 bits).
    const uint64_t up = end % g == 0 ? 0 : g - end % g;
    Append(&out, start, size - end < up ? size : end + up);
  }
  *runs = std::move(out);
}

}  // namespace

Result<DirtyMap> DirtyMap::Build(uint64_t size, std::vector<Run> runs, uint64_t granularity,
                                 size_t max_runs) {
  if (granularity == 0 || (granularity & (granularity - 1)) != 0) {
    return Status::InvalidArgument("granularity " + std::to_string(granularity) +
                                   " is not a power of two");
  }
  if (max_runs == 0) return Status::InvalidArgument("max_runs is 0");
  // Check and merge in place: `w` is the merged prefix's length.
  size_t w = 0;
  uint64_t prev_end = 0;
  for (size_t i = 0; i < runs.size(); i++) {
    const Run r = runs[i];
    if (r.length == 0 || r.offset > size || r.length > size - r.offset) {
      return Status::InvalidArgument("dirty run at " + std::to_string(r.offset) + " length " +
                                     std::to_string(r.length) + " is empty or outside " +
                                     std::to_string(size) + " bytes");
    }
    if (i > 0 && r.offset < prev_end) {
      return Status::InvalidArgument("dirty runs overlap or are not sorted at offset " +
                                     std::to_string(r.offset));
    }
    prev_end = r.offset + r.length;
    if (w > 0 && runs[w - 1].offset + runs[w - 1].length == r.offset) {
      runs[w - 1].length += r.length;
    } else {
      runs[w++] = r;
    }
  }
  runs.resize(w);
  uint64_t g = granularity;
  while (runs.size() > max_runs) {
    if (g > size / 2) {
      // Any coarser granularity covers everything in one run.
      runs.assign(1, Run{0, size});
      break;
    }
    g *= 2;
    Coarsen(&runs, g, size);
  }
  runs.shrink_to_fit();
  DirtyMap m;
  m.size_ = size;
  m.granularity_ = g;
  for (const Run& r : runs) m.dirty_bytes_ += r.length;
  m.runs_ = std::move(runs);
  return m;
}

std::vector<DirtyExtent> DirtyMap::Query(uint64_t offset, uint64_t length,
                                         size_t max_extents) const {
  std::vector<DirtyExtent> out;
  if (length == 0 || offset > size_ || length > size_ - offset) return out;
  max_extents = std::max<size_t>(max_extents, 1);
  const uint64_t end = offset + length;
  // The first run that ends after `offset`: runs are sorted and disjoint,
  // so their ends are sorted too.
  auto it = std::upper_bound(runs_.begin(), runs_.end(), offset,
                             [](uint64_t o, const Run& r) { return o < r.offset + r.length; });
  uint64_t pos = offset;
  while (pos < end && out.size() < max_extents) {
    if (it == runs_.end() || it->offset >= end) {
      out.push_back({pos, end - pos, false});
      break;
    }
    if (it->offset > pos) {
      out.push_back({pos, it->offset - pos, false});
      pos = it->offset;
      continue;
    }
    const uint64_t e = std::min(it->offset + it->length, end);
    out.push_back({pos, e - pos, true});
    pos = e;
    ++it;
  }
  return out;
}

}  // namespace hbiss::nbd
