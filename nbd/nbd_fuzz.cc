// libFuzzer target over the NBD handshake and request parser: the input is
// the byte stream a client sends (the layout and the mode byte are in
// fuzz_stream.h: bit 0 of the first byte prepends a valid handshake so the
// rest lands in the transmission phase). Requests run inline (no worker
// threads) against a 1 MiB MemoryExport. Also feeds the raw bytes to the
// option parsers. nbd_volume_fuzz.cc runs the same streams down to the engine.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "nbd/fuzz_stream.h"
#include "nbd/memory_export.h"
#include "nbd/protocol.h"

namespace {

using namespace hbiss::nbd;  // NOLINT

MemoryProvider* Provider() {
  static MemoryProvider* p = [] {
    auto* mp = new MemoryProvider;
    auto vm = std::make_shared<MemoryExport>(fuzz::kExportName, 1 << 20);
    vm->StartDirtyBitmap("s1");  // so SET_META_CONTEXT can select qemu:dirty-bitmap:s1
    mp->Add(vm);
    mp->Add(std::make_shared<MemoryExport>("ro", 1 << 16, true));
    return mp;
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  InfoRequest ir;
  (void)ParseInfoRequest(rest, &ir);
  MetaContextRequest mr;
  (void)ParseMetaContextRequest(rest, &mr);
  (void)fuzz::RunInput(data, size, Provider());
  return 0;
}
