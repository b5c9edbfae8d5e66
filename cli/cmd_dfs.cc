// hbiss dfs ls|put|get|cat|rm|mkdir|stat: a small HDFS shell over hbiss's native client
// (hdfs/client.h), for users and for interop tests. Every path argument is a full
// hdfs://host:port/path URI.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "hdfs/client.h"

namespace hbiss::cli {

namespace {

constexpr size_t kIoChunk = 8u << 20;

int Fail(const std::string& what, const Status& st) {
  std::fprintf(stderr, "hbiss: %s: %s\n", what.c_str(), st.ToString().c_str());
  return 1;
}

struct Target {
  std::unique_ptr<hdfs::Client> client;
  std::string path;
};

Result<Target> Connect(const std::string& uri) {
  HBISS_ASSIGN_OR_RETURN(hdfs::HdfsUri u, hdfs::ParseHdfsUri(uri));
  hdfs::ClientOptions o;
  o.rpc_retry_deadline_ms = 30000;
  HBISS_ASSIGN_OR_RETURN(auto c, hdfs::Client::Connect(u.host, u.port, o));
  return Target{std::move(c), u.path};
}

std::string PermString(const hdfs::FileStatus& f) {
  std::string s = f.is_dir ? "d" : "-";
  const char* rwx = "rwx";
  for (int i = 8; i >= 0; i--) s += (f.permission >> i) & 1 ? rwx[(8 - i) % 3] : '-';
  return s;
}

std::string TimeString(uint64_t ms) {
  time_t t = time_t(ms / 1000);
  tm tmv{};
  gmtime_r(&t, &tmv);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M", &tmv);
  return buf;
}

Status WriteFd(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write", errno);
    }
    p += w;
    n -= size_t(w);
  }
  return Status::OK();
}

// Streams a whole HDFS file to fd.
Status CopyOut(hdfs::Client& c, const std::string& path, int fd) {
  HBISS_ASSIGN_OR_RETURN(auto r, c.Open(path));
  std::vector<uint8_t> buf(kIoChunk);
  uint64_t off = 0;
  while (off < r->length()) {
    HBISS_ASSIGN_OR_RETURN(size_t n, r->PRead(off, buf));
    if (n == 0) return Status::IOError(fmt::format("{}: ended early at {}", path, off));
    HBISS_RETURN_IF_ERROR(WriteFd(fd, buf.data(), n));
    off += n;
  }
  return Status::OK();
}

int DoLs(const std::string& uri) {
  auto t = Connect(uri);
  if (!t.ok()) return Fail("ls " + uri, t.status());
  auto info = t->client->GetFileInfo(t->path);
  if (!info.ok()) return Fail("ls " + uri, info.status());
  std::vector<hdfs::FileStatus> entries;
  std::string prefix = t->path == "/" ? "/" : t->path + "/";
  if (info->is_dir) {
    auto l = t->client->List(t->path);
    if (!l.ok()) return Fail("ls " + uri, l.status());
    entries = std::move(l).value();
  } else {
    entries.push_back(*info);
    prefix = t->path.substr(0, t->path.rfind('/') + 1);
  }
  for (const auto& e : entries) {
    std::printf("%s %3s %-10s %-10s %12llu %s %s%s\n", PermString(e).c_str(),
                e.is_dir ? "-" : std::to_string(e.replication).c_str(), e.owner.c_str(),
                e.group.c_str(), static_cast<unsigned long long>(e.length),
                TimeString(e.modification_time_ms).c_str(), prefix.c_str(), e.name.c_str());
  }
  return 0;
}

int DoStat(const std::string& uri) {
  auto t = Connect(uri);
  if (!t.ok()) return Fail("stat " + uri, t.status());
  auto f = t->client->GetFileInfo(t->path);
  if (!f.ok()) return Fail("stat " + uri, f.status());
  std::printf("path: %s\ntype: %s\nlength: %llu\nreplication: %u\nblocksize: %llu\n"
              "permission: %s (%o)\nowner: %s\ngroup: %s\nmodified: %s UTC\nfileid: %llu\n",
              t->path.c_str(), f->is_dir ? "directory" : "file",
              static_cast<unsigned long long>(f->length), f->replication,
              static_cast<unsigned long long>(f->block_size), PermString(*f).c_str(),
              f->permission, f->owner.c_str(), f->group.c_str(),
              TimeString(f->modification_time_ms).c_str(),
              static_cast<unsigned long long>(f->file_id));
  return 0;
}

int DoPut(const std::string& local, const std::string& uri, bool overwrite, uint64_t block_size,
          uint32_t replication) {
  int fd = local == "-" ? 0 : ::open(local.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Fail("put " + local, Status::FromErrno("open " + local, errno));
  struct Closer {
    int fd;
    ~Closer() {
      if (fd > 0) ::close(fd);
    }
  } closer{fd};
  auto t = Connect(uri);
  if (!t.ok()) return Fail("put " + uri, t.status());
  hdfs::CreateOptions co;
  co.overwrite = overwrite;
  co.block_size = block_size;
  co.replication = replication;
  auto w = t->client->Create(t->path, co);
  if (!w.ok()) return Fail("put " + uri, w.status());
  std::vector<uint8_t> buf(kIoChunk);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail("put " + local, Status::FromErrno("read " + local, errno));
    }
    if (n == 0) break;
    Status st = (*w)->Write(std::span<const uint8_t>(buf.data(), size_t(n)));
    if (!st.ok()) return Fail("put " + uri, st);
  }
  Status st = (*w)->Close();
  if (!st.ok()) return Fail("put " + uri, st);
  return 0;
}

int DoGet(const std::string& uri, const std::string& local) {
  auto t = Connect(uri);
  if (!t.ok()) return Fail("get " + uri, t.status());
  if (local == "-") {
    Status st = CopyOut(*t->client, t->path, 1);
    return st.ok() ? 0 : Fail("get " + uri, st);
  }
  std::string tmp = local + ".hbiss-get";
  int fd = ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return Fail("get " + uri, Status::FromErrno("create " + tmp, errno));
  Status st = CopyOut(*t->client, t->path, fd);
  if (::close(fd) != 0 && st.ok()) st = Status::FromErrno("close " + tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), local.c_str()) != 0) {
    st = Status::FromErrno("rename to " + local, errno);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return Fail("get " + uri, st);
  }
  return 0;
}

int DoCat(const std::vector<std::string>& uris) {
  for (const auto& uri : uris) {
    auto t = Connect(uri);
    if (!t.ok()) return Fail("cat " + uri, t.status());
    Status st = CopyOut(*t->client, t->path, 1);
    if (!st.ok()) return Fail("cat " + uri, st);
  }
  return 0;
}

int DoRm(const std::vector<std::string>& uris, bool recursive, bool force) {
  for (const auto& uri : uris) {
    auto t = Connect(uri);
    if (!t.ok()) return Fail("rm " + uri, t.status());
    auto d = t->client->Delete(t->path, recursive);
    if (!d.ok()) return Fail("rm " + uri, d.status());
    if (!*d && !force) return Fail("rm " + uri, Status::NotFound("no such file or directory"));
  }
  return 0;
}

int DoMkdir(const std::vector<std::string>& uris) {
  for (const auto& uri : uris) {
    auto t = Connect(uri);
    if (!t.ok()) return Fail("mkdir " + uri, t.status());
    Status st = t->client->Mkdirs(t->path);
    if (!st.ok()) return Fail("mkdir " + uri, st);
  }
  return 0;
}

}  // namespace

void AddDfsCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* dfs = app.add_subcommand(
      "dfs", "HDFS file commands over hbiss's native client (paths are hdfs://host:port/path)");
  dfs->require_subcommand(1);

  auto* ls = dfs->add_subcommand("ls", "List a directory (or show a file)");
  auto ls_uri = std::make_shared<std::string>();
  ls->add_option("uri", *ls_uri, "hdfs:// URI")->required();
  ls->callback([=] { *exit_code = DoLs(*ls_uri); });

  auto* stat = dfs->add_subcommand("stat", "Show a file's or directory's status");
  auto stat_uri = std::make_shared<std::string>();
  stat->add_option("uri", *stat_uri, "hdfs:// URI")->required();
  stat->callback([=] { *exit_code = DoStat(*stat_uri); });

  struct PutArgs {
    std::string local, uri;
    bool overwrite = false;
    uint64_t block_size = 0;
    uint32_t replication = 0;
  };
  auto pa = std::make_shared<PutArgs>();
  auto* put = dfs->add_subcommand("put", "Copy a local file ('-' for stdin) into HDFS");
  put->add_option("local", pa->local, "Local file, or - for stdin")->required();
  put->add_option("uri", pa->uri, "hdfs:// URI of the new file")->required();
  put->add_flag("-f,--force", pa->overwrite, "Overwrite an existing file");
  put->add_option("--blocksize", pa->block_size, "Block size in bytes (default: the server's)");
  put->add_option("--replication", pa->replication, "Replication (default: the server's)");
  put->callback([=] {
    *exit_code = DoPut(pa->local, pa->uri, pa->overwrite, pa->block_size, pa->replication);
  });

  auto ga = std::make_shared<std::pair<std::string, std::string>>();
  auto* get = dfs->add_subcommand("get", "Copy an HDFS file to a local file ('-' for stdout)");
  get->add_option("uri", ga->first, "hdfs:// URI")->required();
  get->add_option("local", ga->second, "Local file, or - for stdout")->required();
  get->callback([=] { *exit_code = DoGet(ga->first, ga->second); });

  auto cat_uris = std::make_shared<std::vector<std::string>>();
  auto* cat = dfs->add_subcommand("cat", "Write HDFS files to stdout");
  cat->add_option("uri", *cat_uris, "hdfs:// URIs")->required();
  cat->callback([=] { *exit_code = DoCat(*cat_uris); });

  struct RmArgs {
    std::vector<std::string> uris;
    bool recursive = false;
    bool force = false;
  };
  auto ra = std::make_shared<RmArgs>();
  auto* rm = dfs->add_subcommand("rm", "Delete files (and with -r, directories)");
  rm->add_option("uri", ra->uris, "hdfs:// URIs")->required();
  rm->add_flag("-r,--recursive", ra->recursive, "Delete directories and their contents");
  rm->add_flag("-f,--force", ra->force, "No error when a path does not exist");
  rm->callback([=] { *exit_code = DoRm(ra->uris, ra->recursive, ra->force); });

  auto mk_uris = std::make_shared<std::vector<std::string>>();
  auto* mkdir = dfs->add_subcommand("mkdir", "Create directories (with their parents)");
  mkdir->add_option("uri", *mk_uris, "hdfs:// URIs")->required();
  mkdir->callback([=] { *exit_code = DoMkdir(*mk_uris); });
  (void)g;
}

}  // namespace hbiss::cli
