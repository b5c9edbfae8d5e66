// A second process for the reader/writer tests (hdfs_reader_writer_test.cc): opens an object
// of a store the way `hbiss export` does (store::OpenStore, then Store::Open) and copies it
// whole to a local file.
//
//   hdfs_store_read open|takeover STORE_URI NAME OUT_FILE
//   hdfs_store_read write STORE_URI NAME
//
// "takeover" opens with Store::OpenForTakeover instead, as a writable volume open does.
// Exit status 0 when the copy is complete, 1 with a message on stderr otherwise.
// "write" creates NAME and appends PatternByte(i) for i = 0, 1, ... in 64 KiB appends, with a
// Flush (hflush) every 1 MiB after which it prints "flushed N" (N bytes) on stdout, until it
// is killed or 256 MiB are written; the test kills it with SIGKILL mid-write.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "hdfs/hdfs_store.h"
#include "store/store.h"

#include "tests/hdfs/pattern.h"

namespace {

int Write(hbiss::store::Store* store, const char* name) {
  auto w = store->Create(name);
  if (!w.ok()) {
    std::fprintf(stderr, "creating %s: %s\n", name, w.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> buf(64 << 10);
  for (uint64_t off = 0; off < (256u << 20); off += buf.size()) {
    for (size_t i = 0; i < buf.size(); i++) buf[i] = hbiss::hdfs::testing::PatternByte(off + i);
    hbiss::Status st = (*w)->Append(buf);
    if (st.ok() && (off + buf.size()) % (1 << 20) == 0) {
      st = (*w)->Flush();
      if (st.ok()) std::printf("flushed %llu\n", (unsigned long long)(off + buf.size()));
      std::fflush(stdout);
    }
    if (!st.ok()) {
      std::fprintf(stderr, "writing %s: %s\n", name, st.ToString().c_str());
      return 1;
    }
  }
  return (*w)->Close().ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((argc == 5 && (mode == "open" || mode == "takeover")) || (argc == 4 && mode == "write"))) {
    std::fprintf(stderr, "usage: %s open|takeover STORE_URI NAME OUT_FILE\n"
                 "       %s write STORE_URI NAME\n", argv[0], argv[0]);
    return 2;
  }
  const bool takeover = std::string(argv[1]) == "takeover";
  hbiss::hdfs::RegisterStoreScheme();
  auto store = hbiss::store::OpenStore(argv[2], false);
  if (!store.ok()) {
    std::fprintf(stderr, "opening %s: %s\n", argv[2], store.status().ToString().c_str());
    return 1;
  }
  if (mode == "write") return Write(store->get(), argv[3]);
  auto r = takeover ? (*store)->OpenForTakeover(argv[3]) : (*store)->Open(argv[3]);
  if (!r.ok()) {
    std::fprintf(stderr, "opening %s: %s\n", argv[3], r.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> buf((*r)->Size());
  uint64_t off = 0;
  while (off < buf.size()) {
    auto n = (*r)->ReadAt(off, std::span<uint8_t>(buf).subspan(off));
    if (!n.ok() || *n == 0) {
      std::fprintf(stderr, "reading %s at %llu: %s\n", argv[3], (unsigned long long)off,
                   n.ok() ? "short object" : n.status().ToString().c_str());
      return 1;
    }
    off += *n;
  }
  std::ofstream out(argv[4], std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "writing %s failed\n", argv[4]);
    return 1;
  }
  return 0;
}
