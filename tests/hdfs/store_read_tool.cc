// A second process for the reader/writer tests (hdfs_reader_writer_test.cc): opens an object
// of a store the way `hbiss export` does (store::OpenStore, then Store::Open) and copies it
// whole to a local file.
//
//   hdfs_store_read open|takeover STORE_URI NAME OUT_FILE
//
// "takeover" opens with Store::OpenForTakeover instead, as a writable volume open does.
// Exit status 0 when the copy is complete, 1 with a message on stderr otherwise.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "hdfs/hdfs_store.h"
#include "store/store.h"

int main(int argc, char** argv) {
  if (argc != 5 || (std::string(argv[1]) != "open" && std::string(argv[1]) != "takeover")) {
    std::fprintf(stderr, "usage: %s open|takeover STORE_URI NAME OUT_FILE\n", argv[0]);
    return 2;
  }
  const bool takeover = std::string(argv[1]) == "takeover";
  hbiss::hdfs::RegisterStoreScheme();
  auto store = hbiss::store::OpenStore(argv[2], false);
  if (!store.ok()) {
    std::fprintf(stderr, "opening %s: %s\n", argv[2], store.status().ToString().c_str());
    return 1;
  }
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
