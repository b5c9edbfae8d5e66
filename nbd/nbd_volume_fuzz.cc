// libFuzzer target over the whole NBD path: handshake -> request validation
// -> VolumeExport -> the volume engine on a private memory store. The input
// is a client stream as for nbd_fuzz (fuzz_stream.h: bit 0 of the first byte
// prepends a valid handshake), so the two targets share corpora. The other
// bits of the first byte choose the volume: bits 1-2 its size (1, 2, 4,
// 8 MiB), bit 3 its segment size (256 KiB, else 4 MiB), bit 4
// clean_threshold 0.5 (else 0), bits 5-6 checkpoint_interval (64 KiB,
// 1 MiB, 16 MiB, 1 GiB).
//
// The same stream also runs against a MemoryExport of the same size, the
// model: afterwards (the volume was closed when the connection ended, and is
// opened again) both must hold the same bytes, and every hole BlockStatus
// reports must read as zeros. A difference prints where on stderr and
// aborts. HBISS_FUZZ_LOG=1 keeps the log output (off by default).
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "nbd/fuzz_stream.h"
#include "nbd/memory_export.h"
#include "nbd/volume_export.h"
#include "store/memory_store.h"
#include "volume/volume.h"

namespace {

using namespace hbiss;       // NOLINT
using namespace hbiss::nbd;  // NOLINT

[[noreturn]] void Fail(uint8_t mode, const char* what, const Status& s) {
  std::fprintf(stderr, "nbd_volume_fuzz: CHECK FAILED (mode 0x%02x): %s: %s\n", mode, what,
               s.ToString().c_str());
  std::abort();
}

// Reads all of `e`.
std::vector<uint8_t> ReadAll(Export* e, uint8_t mode, const char* which) {
  std::vector<uint8_t> out(e->size());
  Status s = e->Read(0, out);
  if (!s.ok()) Fail(mode, which, s);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (!std::getenv("HBISS_FUZZ_LOG")) spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  static constexpr uint64_t kCheckpoints[] = {64ull << 10, 1ull << 20, 16ull << 20, 1ull << 30};
  volume::CreateOptions co;
  co.size = (1ull << 20) << ((mode >> 1) & 3);
  co.segment_size = (mode & 8) ? 256ull << 10 : 4ull << 20;
  volume::OpenOptions oo;
  oo.clean_threshold = (mode & 16) ? 0.5 : 0;
  oo.checkpoint_interval = kCheckpoints[(mode >> 5) & 3];

  store::MemoryStore mem;
  Status s = volume::Volume::Create(&mem, fuzz::kExportName, co);
  if (!s.ok()) Fail(mode, "Volume::Create", s);
  VolumeProvider vp(&mem, false, oo);
  (void)fuzz::RunInput(data, size, &vp);

  MemoryProvider mp;
  mp.Add(std::make_shared<MemoryExport>(fuzz::kExportName, co.size));
  (void)fuzz::RunInput(data, size, &mp);

  auto ve = vp.Open(fuzz::kExportName);  // reopens the volume the connection closed
  if (!ve.ok()) Fail(mode, "reopening the volume", ve.status());
  auto me = mp.Open(fuzz::kExportName);
  if (!me.ok()) Fail(mode, "opening the memory export", me.status());
  std::vector<uint8_t> got = ReadAll(ve->get(), mode, "reading the volume");
  std::vector<uint8_t> want = ReadAll(me->get(), mode, "reading the memory export");
  if (got != want) {
    size_t i = 0;
    while (got[i] == want[i]) i++;
    std::fprintf(stderr,
                 "nbd_volume_fuzz: CHECK FAILED (mode 0x%02x): after the stream the volume "
                 "differs from the memory export at byte %zu (block %zu): 0x%02x, expected "
                 "0x%02x\n",
                 mode, i, i / 4096, got[i], want[i]);
    std::abort();
  }
  for (uint64_t pos = 0; pos < co.size;) {
    auto ext = (*ve)->BlockStatus(pos, co.size - pos);
    if (!ext.ok()) Fail(mode, "BlockStatus", ext.status());
    if (ext->empty() || ext->front().offset != pos) {
      Fail(mode, "BlockStatus", Status::Corruption("no extent starting at " + std::to_string(pos)));
    }
    for (const Extent& e : *ext) {
      if (e.offset != pos || e.length == 0 || e.length > co.size - pos) {
        Fail(mode, "BlockStatus", Status::Corruption("extents do not tile the volume"));
      }
      if (e.zero) {
        for (uint64_t b = e.offset; b < e.offset + e.length; b++) {
          if (want[b] != 0) {
            std::fprintf(stderr,
                         "nbd_volume_fuzz: CHECK FAILED (mode 0x%02x): BlockStatus reports "
                         "[%llu, +%llu) as zeros, but byte %llu holds 0x%02x\n",
                         mode, (unsigned long long)e.offset, (unsigned long long)e.length,
                         (unsigned long long)b, want[b]);
            std::abort();
          }
        }
      }
      pos += e.length;
    }
  }
  ve->reset();
  s = vp.CloseAll();
  if (!s.ok()) Fail(mode, "closing the volume", s);
  return 0;
}
