// Access to the real HDFS cluster the tests run against (scripts/hdfs-cluster).
//
// HBISS_HDFS_URI names the NameNode (hdfs://127.0.0.1:PORT) and HBISS_HDFS_CLUSTER_DIR the
// cluster's directory, for kill-dn / restart-dn / restart-nn / dfs. When they are missing a
// test skips -- or fails, when HBISS_REQUIRE_HDFS=1 (the README's test command sets it).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/wait.h>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <chrono>

#include "hdfs/client.h"
#include "util/test_util.h"

namespace hbiss::hdfs::testing {

using ::hbiss::RandomBytes;

inline std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

inline bool RequireHdfs() { return Env("HBISS_REQUIRE_HDFS") == "1"; }

// Use at the top of a test: HBISS_NEED_CLUSTER(needs_dir);
#define HBISS_NEED_CLUSTER(needs_dir)                                                       \
  do {                                                                                      \
    std::string _why;                                                                       \
    if (::hbiss::hdfs::testing::Env("HBISS_HDFS_URI").empty()) {                            \
      _why = "HBISS_HDFS_URI is not set (start one with scripts/hdfs-cluster start and "    \
             "export what `scripts/hdfs-cluster env` prints)";                              \
    } else if ((needs_dir) && ::hbiss::hdfs::testing::Env("HBISS_HDFS_CLUSTER_DIR").empty()) { \
      _why = "HBISS_HDFS_CLUSTER_DIR is not set; this test kills and restarts nodes";       \
    }                                                                                       \
    if (!_why.empty()) {                                                                    \
      if (::hbiss::hdfs::testing::RequireHdfs()) FAIL() << "HBISS_REQUIRE_HDFS=1 but " << _why; \
      GTEST_SKIP() << _why;                                                                 \
    }                                                                                       \
  } while (0)

inline HdfsUri ClusterUri() {
  auto u = ParseHdfsUri(Env("HBISS_HDFS_URI"));
  EXPECT_TRUE(u.ok()) << u.status().ToString();
  return u.ok() ? *u : HdfsUri{};
}

inline std::unique_ptr<Client> ConnectClient(ClientOptions o = {}) {
  HdfsUri u = ClusterUri();
  auto c = Client::Connect(u.host, u.port, o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

// Runs a shell command; returns its exit status and (optionally) its stdout.
inline int Shell(const std::string& cmd, std::string* out = nullptr) {
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return -1;
  std::string s;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  int rc = ::pclose(f);
  if (out != nullptr) *out = std::move(s);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// `scripts/hdfs-cluster ARGS --dir $HBISS_HDFS_CLUSTER_DIR` (args before the dir option
// where the subcommand needs them).
inline int Cluster(const std::string& sub, const std::string& args, std::string* out = nullptr) {
  std::string cmd = std::string(HBISS_SOURCE_DIR) + "/scripts/hdfs-cluster " + sub + " --dir '" +
                    Env("HBISS_HDFS_CLUSTER_DIR") + "' " + args;
  return Shell(cmd, out);
}

// DataNode number (1-based) from its transfer port: ports are base + 10 * N.
inline int DataNodeIndex(uint32_t xfer_port) {
  return int((xfer_port - ClusterUri().port) / 10);
}

inline std::string UniqueDir(const std::string& what) {
  std::random_device rd;
  return "/hbiss-test/" + what + "-" + std::to_string(rd() % 1000000000);
}

// Reads a whole file with our client.
inline Result<std::string> ReadAll(Client& c, const std::string& path) {
  HBISS_ASSIGN_OR_RETURN(auto r, c.Open(path));
  std::string out(r->length(), '\0');
  uint64_t off = 0;
  while (off < out.size()) {
    HBISS_ASSIGN_OR_RETURN(size_t n, r->PRead(off, std::span<uint8_t>(
                                               reinterpret_cast<uint8_t*>(out.data()) + off,
                                               out.size() - off)));
    if (n == 0) return Status::IOError("short file");
    off += n;
  }
  return out;
}

inline Status WriteAll(Client& c, const std::string& path, const std::string& data,
                       uint64_t block_size, size_t piece = 100000) {
  CreateOptions o;
  o.block_size = block_size;
  HBISS_ASSIGN_OR_RETURN(auto w, c.Create(path, o));
  for (size_t off = 0; off < data.size(); off += piece) {
    HBISS_RETURN_IF_ERROR(w->Write(std::string_view(data).substr(off, piece)));
  }
  return w->Close();
}

// Waits until the NameNode lists `replicas` locations for every block of `path`.
// close() returns once the minimum replication is reached; the other DataNodes report
// their finalized replicas asynchronously, so a test that counts replicas right after a
// write must wait for those reports first. Returns false after `timeout_ms`.
inline bool WaitForReplicas(Client& c, const std::string& path, int replicas,
                            int timeout_ms = 20000) {
  for (int waited = 0; waited <= timeout_ms; waited += 200) {
    auto r = c.Open(path);
    if (r.ok()) {
      bool all = true;
      for (const auto& lb : (*r)->blocks()) all = all && lb.locs_size() >= replicas;
      if (all) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

}  // namespace hbiss::hdfs::testing
