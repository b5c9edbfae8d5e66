// What the in-process engine benchmarks share: a fresh volume "bench" on a
// local store. Exits with a message on any failure (bench_util.h Die).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "bench/bench_util.h"
#include "store/store.h"
#include "volume/volume.h"

namespace hbiss::bench {

struct BenchVolume {
  std::unique_ptr<store::Store> store;
  std::unique_ptr<volume::Volume> vol;  // destroyed first: it uses the store
};

// Opens the local store in `store_dir`, creates volume "bench" of `size`
// bytes and `segment_size` segments in it, and opens it with `opts`.
inline BenchVolume CreateBenchVolumeOrDie(const std::string& store_dir, uint64_t size,
                                          uint64_t segment_size,
                                          const volume::OpenOptions& opts) {
  BenchVolume b;
  auto store_r = store::OpenStore("file://" + store_dir, true);
  if (!store_r.ok()) Die("open store", store_r.status());
  b.store = std::move(store_r).value();
  volume::CreateOptions copts;
  copts.size = size;
  copts.segment_size = segment_size;
  if (Status st = volume::Volume::Create(b.store.get(), "bench", copts); !st.ok()) {
    Die("create volume", st);
  }
  auto vol_r = volume::Volume::Open(b.store.get(), "bench", opts);
  if (!vol_r.ok()) Die("open volume", vol_r.status());
  b.vol = std::move(vol_r).value();
  return b;
}

}  // namespace hbiss::bench
