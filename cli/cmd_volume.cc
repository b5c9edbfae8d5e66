// Volume subcommands: create, ls, info, rm, import, export.
//
// Every command checks its arguments (name, size, file) before it touches the
// store, so bad input changes nothing. Errors are one line on stderr,
// "hbiss: <command> <what>: <why>", with exit code 1 (2 for usage errors).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "store/store.h"
#include "util/status.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::cli {
std::string OneLine(const Status& st) {
  std::string msg = st.ToString();
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  return msg;
}

int Fail(const std::string& context, const Status& st) {
  std::fprintf(stderr, "hbiss: %s: %s\n", context.c_str(), OneLine(st).c_str());
  return 1;
}

std::string JoinNames(const std::vector<std::string>& names, const char* sep) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : sep) + n;
  return out;
}

std::string UtcTime(int64_t t, const char* unset) {
  if (t <= 0) return unset;
  char buf[64];
  time_t tt = time_t(t);
  tm tmv{};
  gmtime_r(&tt, &tmv);
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tmv);
  return buf;
}

namespace {

using volume::kBlockSize;
using volume::Volume;

constexpr size_t kChunk = 1 << 20;  // bytes per read/write call in import and export

int FailMsg(const std::string& context, const std::string& msg) {
  std::fprintf(stderr, "hbiss: %s: %s\n", context.c_str(), msg.c_str());
  return 1;
}

}  // namespace

// Parses "4096", "512K", "10G", "1T" (binary units; "KiB" style also
// accepted). Rejects zero, junk, overflow and sizes above `max`.
Result<uint64_t> ParseSize(const std::string& text, uint64_t max) {
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (n > (std::numeric_limits<uint64_t>::max() - d) / 10) {
      return Status::InvalidArgument(fmt::format("size \"{}\" is too large", text));
    }
    n = n * 10 + d;
    ++i;
  }
  if (i == 0) {
    return Status::InvalidArgument(
        fmt::format("cannot parse size \"{}\" (expected e.g. 4096, 512K, 10G, 2T)", text));
  }
  int shift = 0;
  std::string suffix = text.substr(i);
  if (!suffix.empty()) {
    char c = static_cast<char>(suffix[0] & ~0x20);  // upper case
    std::string rest = suffix.substr(1);
    bool unit_ok = rest.empty() || rest == "iB" || rest == "ib" || rest == "B" || rest == "b";
    if (c == 'K') shift = 10;
    else if (c == 'M') shift = 20;
    else if (c == 'G') shift = 30;
    else if (c == 'T') shift = 40;
    else if (c == 'B' && rest.empty()) shift = 0;
    else unit_ok = false;
    if (!unit_ok) {
      return Status::InvalidArgument(fmt::format(
          "cannot parse size \"{}\" (suffixes: K, M, G, T, binary units)", text));
    }
  }
  if (shift > 0 && n > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return Status::InvalidArgument(fmt::format("size \"{}\" is too large", text));
  }
  n <<= shift;
  if (n == 0) return Status::InvalidArgument("size must be greater than zero");
  if (n > max) {
    return Status::InvalidArgument(
        fmt::format("size \"{}\" is larger than the maximum of {}", text, FormatBytes(max)));
  }
  return n;
}

Result<std::unique_ptr<store::Store>> OpenStoreFor(const GlobalOptions& g, bool writing) {
  if (g.store_uri.empty()) {
    std::string uri = DefaultStoreUri();
    auto r = store::OpenStore(uri, writing);
    if (!r.ok()) return r.status().WithContext("store " + uri);
    return r;
  }
  auto r = store::OpenStore(g.store_uri, false);
  if (!r.ok()) return r.status().WithContext("store " + g.store_uri);
  return r;
}

namespace {

// A one-line progress bar on stderr, drawn only when stderr is a terminal.
bool IsZero(const uint8_t* p, size_t n) {
  if (n == 0) return true;
  return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
}

Status PreadFull(int fd, uint8_t* buf, size_t n, uint64_t off, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, buf + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read " + path, errno);
    }
    if (r == 0) return Status::IOError(fmt::format("{} shrank while being read", path));
    done += static_cast<size_t>(r);
  }
  return Status::OK();
}

Status WriteFull(int fd, const uint8_t* buf, size_t n, int64_t off, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = off >= 0 ? pwrite(fd, buf + done, n - done, static_cast<off_t>(off + done))
                         : write(fd, buf + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write " + path, errno);
    }
    done += static_cast<size_t>(r);
  }
  return Status::OK();
}

// Calls fn(offset_in_buf, length, is_zero) for each maximal run of whole
// 4 KiB blocks (the last one possibly partial) that are all zero or all not.
template <typename Fn>
Status ForEachRun(const uint8_t* buf, size_t n, Fn&& fn) {
  size_t run_start = 0;
  bool run_zero = false;
  for (size_t off = 0; off < n; off += kBlockSize) {
    size_t len = std::min<size_t>(kBlockSize, n - off);
    bool z = IsZero(buf + off, len);
    if (off == 0) {
      run_zero = z;
    } else if (z != run_zero) {
      HBISS_RETURN_IF_ERROR(fn(run_start, off - run_start, run_zero));
      run_start = off;
      run_zero = z;
    }
  }
  if (n > 0) HBISS_RETURN_IF_ERROR(fn(run_start, n - run_start, run_zero));
  return Status::OK();
}

// ---- create ----------------------------------------------------------------

struct CreateArgs {
  std::string name;
  std::string size;
  std::string segment_size;
};

int RunCreate(const GlobalOptions& g, const CreateArgs& a) {
  const std::string ctx = "create " + a.name;
  if (Status st = Volume::ValidateName(a.name); !st.ok()) return Fail(ctx, st);
  auto size = ParseSize(a.size, volume::kMaxVolumeSize);
  if (!size.ok()) return Fail(ctx, size.status());
  volume::CreateOptions opts;
  opts.size = *size;
  if (!a.segment_size.empty()) {
    auto seg = ParseSize(a.segment_size, 256ull << 20);
    if (!seg.ok()) return Fail(ctx + " --segment-size", seg.status());
    opts.segment_size = *seg;
  }
  auto store = OpenStoreFor(g, /*writing=*/true);
  if (!store.ok()) return Fail(ctx, store.status());
  if (Status st = Volume::Create(store->get(), a.name, opts); !st.ok()) return Fail(ctx, st);
  if (g.verbose) {
    std::fprintf(stderr, "created %s (%s) in %s\n", a.name.c_str(), FormatBytes(*size).c_str(),
                 (*store)->Uri().c_str());
  }
  return 0;
}

// ---- ls ----------------------------------------------------------------------

int RunLs(const GlobalOptions& g, bool long_format) {
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Fail("ls", store.status());
  auto names = Volume::List(store->get());
  if (!names.ok()) return Fail("ls", names.status());
  for (const std::string& n : *names) {
    if (!long_format) {
      std::printf("%s\n", n.c_str());
      continue;
    }
    auto info = Volume::Stat(store->get(), n);
    if (!info.ok()) return Fail("ls " + n, info.status());
    std::printf("%-32s %12s %12s\n", n.c_str(), FormatBytes(info->size).c_str(),
                FormatBytes(info->mapped_bytes).c_str());
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ---- info ------------------------------------------------------------------

int RunInfo(const GlobalOptions& g, const std::string& name, bool json) {
  const std::string ctx = "info " + name;
  if (Status st = Volume::ValidateName(name); !st.ok()) return Fail(ctx, st);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Fail(ctx, store.status());
  auto info = Volume::Stat(store->get(), name);
  if (!info.ok()) return Fail(ctx, info.status());
  const volume::VolumeInfo& i = *info;
  if (json) {
    nlohmann::ordered_json j;
    j["name"] = i.name;
    j["id"] = fmt::format("{:016x}", i.id);
    j["size"] = i.size;
    j["block_size"] = kBlockSize;
    j["segment_size"] = i.segment_size;
    j["mapped_bytes"] = i.mapped_bytes;
    j["segment_count"] = i.segment_count;
    j["log_bytes"] = i.log_bytes;
    j["checkpoint_seq"] = i.checkpoint_seq;
    j["map_memory_bytes"] = i.map_memory_bytes;
    j["store"] = (*store)->Uri();
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("name:           %s\n", i.name.c_str());
    std::printf("id:             %016llx\n", static_cast<unsigned long long>(i.id));
    std::printf("size:           %llu (%s)\n", static_cast<unsigned long long>(i.size),
                FormatBytes(i.size).c_str());
    std::printf("mapped:         %llu (%s)\n", static_cast<unsigned long long>(i.mapped_bytes),
                FormatBytes(i.mapped_bytes).c_str());
    std::printf("segment size:   %s\n", FormatBytes(i.segment_size).c_str());
    std::printf("segments:       %llu (%s of log)\n",
                static_cast<unsigned long long>(i.segment_count), FormatBytes(i.log_bytes).c_str());
    std::printf("checkpoint seq: %llu\n", static_cast<unsigned long long>(i.checkpoint_seq));
    std::printf("store:          %s\n", (*store)->Uri().c_str());
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ---- rm ----------------------------------------------------------------------

// rm --trash (volume/trash.h TrashVolume): prints what went where.
int RunRmTrash(store::Store* store, const std::string& ctx, const std::string& name) {
  auto r = volume::TrashVolume(store, name);
  if (!r.ok()) return Fail(ctx, r.status());
  if (!r->removed_snaps.empty()) {
    std::printf("removed snapshots of %s: %s\n", name.c_str(), JoinNames(r->removed_snaps).c_str());
  }
  if (!r->trashed) {
    std::printf("removed volume %s\n", name.c_str());
    return 0;
  }
  if (!r->trashed_snaps.empty()) {
    std::printf("moved snapshots of %s to the trash: %s\n", name.c_str(),
                JoinNames(r->trashed_snaps).c_str());
  }
  std::printf("moved volume %s to the trash: it is deleted with the last of its clones (%s); "
              "hbiss trash ls lists what waits\n",
              name.c_str(), JoinNames(r->children).c_str());
  return 0;
}

int RunRm(const GlobalOptions& g, const std::string& name, bool trash) {
  const std::string ctx = "rm " + name;
  if (Status st = Volume::ValidateName(name); !st.ok()) return Fail(ctx, st);
  if (!g.verbose) spdlog::set_level(spdlog::level::warn);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Fail(ctx, store.status());
  // A clone's parent may wait in the trash for it (doc/snapshots.md "Trash").
  auto meta = volume::ReadMeta(store->get(), name);
  const std::string parent =
      meta.ok() && !meta->parents.empty() ? meta->parents.front().volume : "";
  if (trash) {
    if (int rc = RunRmTrash(store->get(), ctx, name); rc != 0) return rc;
  } else if (Status st = Volume::Remove(store->get(), name); !st.ok()) {
    return Fail(ctx, st);
  }
  // Unless it went to the trash itself (then it still uses its parent).
  auto in_trash = volume::InTrash(store->get(), name);
  if (!parent.empty() && in_trash.ok() && !*in_trash) PurgeTrashAfter(store->get(), parent);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ---- clean -------------------------------------------------------------------

int RunClean(const GlobalOptions& g, const std::string& name, double threshold) {
  const std::string ctx = "clean " + name;
  if (Status st = Volume::ValidateName(name); !st.ok()) return Fail(ctx, st);
  if (!(threshold > 0 && threshold <= 1)) {
    return Fail(ctx, Status::InvalidArgument("--threshold must be in (0, 1]"));
  }
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Fail(ctx, store.status());
  volume::OpenOptions oo;
  oo.clean_threshold = 0;  // only the pass asked for
  auto vol = Volume::Open(store->get(), name, oo);
  if (!vol.ok()) return Fail(ctx, vol.status());
  const uint64_t before = (*vol)->Info().log_bytes;
  auto c = (*vol)->Clean(threshold);
  Status cs = (*vol)->Close();
  if (!c.ok()) return Fail(ctx, c.status());
  if (!cs.ok()) return Fail(ctx, cs);
  auto after = Volume::Stat(store->get(), name);
  if (!after.ok()) return Fail(ctx, after.status());
  std::printf("cleaned %llu segments (%llu blocks moved), deleted %llu segments; log %s -> %s\n",
              static_cast<unsigned long long>(c->segments_cleaned),
              static_cast<unsigned long long>(c->blocks_moved),
              static_cast<unsigned long long>(c->segments_deleted), FormatBytes(before).c_str(),
              FormatBytes(after->log_bytes).c_str());
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ---- import ------------------------------------------------------------------

struct ImportArgs {
  std::string name;
  std::string file;
  std::string flush_interval = "64M";
};

// The byte size of an open regular file or block device.
Result<uint64_t> InputSize(int fd, const std::string& path) {
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::FromErrno("stat " + path, errno);
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0) return Status::FromErrno("seek " + path, errno);
    return static_cast<uint64_t>(end);
  }
  return Status::InvalidArgument(path + " is not a regular file or block device");
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now, reporting the error close() returns.
  Status Close(const std::string& path) {
    int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return Status::FromErrno("close " + path, errno);
    return Status::OK();
  }

 private:
  int fd_;
};

int RunImport(const GlobalOptions& g, const ImportArgs& a) {
  const std::string ctx = "import " + a.name;
  if (Status st = Volume::ValidateName(a.name); !st.ok()) return Fail(ctx, st);
  auto interval = ParseSize(a.flush_interval, std::numeric_limits<uint64_t>::max());
  if (!interval.ok()) return Fail(ctx + " --flush-interval", interval.status());

  Fd in(::open(a.file.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return Fail(ctx, Status::FromErrno("open " + a.file, errno));
  auto fsize_r = InputSize(in.get(), a.file);
  if (!fsize_r.ok()) return Fail(ctx, fsize_r.status());
  const uint64_t fsize = *fsize_r;
  if (fsize == 0) return FailMsg(ctx, a.file + " is empty; nothing to import");
  struct stat in_st;
  const bool regular = fstat(in.get(), &in_st) == 0 && S_ISREG(in_st.st_mode);

  auto store = OpenStoreFor(g, /*writing=*/true);
  if (!store.ok()) return Fail(ctx, store.status());

  // A missing volume is created with the file's size (rounded up to 4 KiB).
  // An existing one must be at least as large; the bytes past the file's end
  // are left as they were.
  bool fresh = false;
  auto info = Volume::Stat(store->get(), a.name);
  if (info.ok()) {
    if (info->size < fsize) {
      return FailMsg(ctx, fmt::format("{} ({} bytes) is larger than volume {} ({} bytes)",
                                      a.file, fsize, a.name, info->size));
    }
  } else if (info.status().IsNotFound()) {
    if (fsize > volume::kMaxVolumeSize) {
      return FailMsg(ctx, fmt::format("{} is larger than the maximum volume size", a.file));
    }
    volume::CreateOptions copts;
    copts.size = fsize;
    if (Status st = Volume::Create(store->get(), a.name, copts); !st.ok()) return Fail(ctx, st);
    fresh = true;
  } else {
    return Fail(ctx, info.status());
  }

  auto vol_r = Volume::Open(store->get(), a.name);
  if (!vol_r.ok()) return Fail(ctx, vol_r.status());
  std::unique_ptr<Volume> vol = std::move(vol_r).value();

  Progress progress("import " + a.name, fsize);
  std::vector<uint8_t> buf(kChunk);
  uint64_t pos = 0;
  uint64_t last_flush = 0;
  auto zero_range = [&](uint64_t off, uint64_t len) -> Status {
    // A fresh volume already reads as zeros there; nothing to write.
    return fresh ? Status::OK() : vol->WriteZeroes(off, len);
  };
  auto flush = [&]() -> Status {
    HBISS_RETURN_IF_ERROR(vol->Flush());
    last_flush = pos;
    if (g.verbose) {
      progress.Clear();
      std::fprintf(stderr, "flushed %llu\n", static_cast<unsigned long long>(pos));
    }
    return Status::OK();
  };

  while (pos < fsize) {
    // Skip holes of a sparse input file without reading them.
    if (regular) {
      off_t data = lseek(in.get(), static_cast<off_t>(pos), SEEK_DATA);
      uint64_t hole_end = pos;
      if (data < 0 && errno == ENXIO) {
        hole_end = fsize;
      } else if (data > static_cast<off_t>(pos)) {
        hole_end = std::min<uint64_t>(static_cast<uint64_t>(data), fsize);
        if (hole_end < fsize) hole_end = pos + (hole_end - pos) / kBlockSize * kBlockSize;
      }
      if (hole_end > pos) {
        if (Status st = zero_range(pos, hole_end - pos); !st.ok()) return Fail(ctx, st);
        pos = hole_end;
        progress.Update(pos);
        continue;
      }
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, fsize - pos));
    if (Status st = PreadFull(in.get(), buf.data(), n, pos, a.file); !st.ok()) {
      return Fail(ctx, st);
    }
    Status st = ForEachRun(buf.data(), n, [&](size_t off, size_t len, bool zero) -> Status {
      if (zero) return zero_range(pos + off, len);
      return vol->Write(pos + off, std::span<const uint8_t>(buf.data() + off, len));
    });
    if (!st.ok()) return Fail(ctx, st);
    pos += n;
    if (pos - last_flush >= *interval && pos < fsize) {
      if (Status fs = flush(); !fs.ok()) return Fail(ctx, fs);
    }
    progress.Update(pos);
  }
  if (Status st = flush(); !st.ok()) return Fail(ctx, st);
  progress.Finish(pos);
  if (Status st = vol->Close(); !st.ok()) return Fail(ctx, st);
  return 0;
}

// ---- export ------------------------------------------------------------------

int RunExport(const GlobalOptions& g, const std::string& name, const std::string& file) {
  const std::string ctx = "export " + name;
  if (Status st = Volume::ValidateName(name); !st.ok()) return Fail(ctx, st);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Fail(ctx, store.status());
  volume::OpenOptions oopts;
  oopts.read_only = true;
  auto vol_r = Volume::Open(store->get(), name, oopts);
  if (!vol_r.ok()) return Fail(ctx, vol_r.status());
  std::unique_ptr<Volume> vol = std::move(vol_r).value();
  const uint64_t size = vol->size();

  // "-" is stdout. A regular file is written sparsely: zero blocks become
  // holes. Anything else (a pipe, a block device) gets every byte in order.
  bool to_stdout = file == "-";
  bool created = false;
  int fd = STDOUT_FILENO;
  if (!to_stdout) {
    struct stat st;
    created = ::stat(file.c_str(), &st) != 0;
    fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Fail(ctx, Status::FromErrno("open " + file, errno));
  }
  Fd out(to_stdout ? -1 : fd);
  struct stat out_st;
  if (fstat(fd, &out_st) != 0) return Fail(ctx, Status::FromErrno("stat " + file, errno));
  const bool sparse = !to_stdout && S_ISREG(out_st.st_mode);
  if (sparse && ftruncate(fd, 0) != 0) {
    return Fail(ctx, Status::FromErrno("truncate " + file, errno));
  }

  auto fail = [&](const Status& st) {
    if (created) ::unlink(file.c_str());
    return Fail(ctx, st);
  };

  Progress progress("export " + name, size);
  std::vector<uint8_t> buf(kChunk);
  const std::vector<uint8_t> zeros(kChunk, 0);
  constexpr uint64_t kStatusSpan = 1ull << 30;
  uint64_t done = 0;
  for (uint64_t base = 0; base < size; base += kStatusSpan) {
    auto extents = vol->BlockStatus(base, std::min(kStatusSpan, size - base));
    if (!extents.ok()) return fail(extents.status());
    for (const volume::Extent& e : *extents) {
      for (uint64_t pos = e.offset; pos < e.offset + e.length;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, e.offset + e.length - pos));
        if (!e.allocated) {
          if (!sparse) {
            if (Status st = WriteFull(fd, zeros.data(), n, -1, file); !st.ok()) return fail(st);
          }
        } else {
          std::span<uint8_t> chunk(buf.data(), n);
          if (Status st = vol->Read(pos, chunk); !st.ok()) return fail(st);
          Status st;
          if (sparse) {
            st = ForEachRun(buf.data(), n, [&](size_t off, size_t len, bool zero) -> Status {
              if (zero) return Status::OK();
              return WriteFull(fd, buf.data() + off, len, static_cast<int64_t>(pos + off), file);
            });
          } else {
            st = WriteFull(fd, buf.data(), n, -1, file);
          }
          if (!st.ok()) return fail(st);
        }
        pos += n;
        done += n;
        progress.Update(done);
      }
    }
  }
  if (sparse && ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return fail(Status::FromErrno("truncate " + file, errno));
  }
  if (!to_stdout) {
    if (Status st = out.Close(file); !st.ok()) return fail(st);
  }
  progress.Finish(done);
  if (Status st = vol->Close(); !st.ok()) return Fail(ctx, st);
  return 0;
}

}  // namespace

void AddVolumeCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  // The parsed arguments must outlive this function: CLI11 runs the
  // callbacks from app.parse(), after we return.
  static CreateArgs create_args;
  static ImportArgs import_args;
  static std::string name, file;
  static bool long_format = false, json = false;

  CLI::App* create = app.add_subcommand("create", "Create an empty, thin-provisioned volume");
  create->add_option("NAME", create_args.name, "Volume name ([A-Za-z0-9._-], up to 128)")
      ->required();
  create->add_option("-s,--size", create_args.size,
                     "Size in bytes, or with a K, M, G or T suffix (binary units)")
      ->required();
  create->add_option("--segment-size", create_args.segment_size,
                     "Bytes per log segment (default 64M, at most 256M)");
  create->callback([&g, exit_code] { *exit_code = RunCreate(g, create_args); });

  CLI::App* ls = app.add_subcommand("ls", "List the volumes in the store");
  ls->add_flag("-l,--long", long_format, "Also print each volume's size and mapped bytes");
  ls->callback([&g, exit_code] { *exit_code = RunLs(g, long_format); });

  CLI::App* info = app.add_subcommand("info", "Show a volume's size, usage and log state");
  info->add_option("NAME", name, "Volume name")->required();
  info->add_flag("--json", json, "Print one JSON object");
  info->callback([&g, exit_code] { *exit_code = RunInfo(g, name, json); });

  static bool rm_trash = false;
  CLI::App* rm = app.add_subcommand(
      "rm", "Delete a volume and all its data (refused while it has snapshots, unless --trash)");
  rm->add_option("NAME", name, "Volume name")->required();
  rm->add_flag("--trash", rm_trash,
               "Also remove its snapshots; those that clones use, and then the volume itself, go "
               "to the trash and are deleted with their last clone (rbd clone v2)");
  rm->callback([&g, exit_code] { *exit_code = RunRm(g, name, rm_trash); });

  static double clean_threshold = 0.5;
  CLI::App* clean = app.add_subcommand(
      "clean",
      "Reclaim log space now: copy the live blocks out of segments that are mostly garbage, "
      "then delete every segment no checkpoint needs (the volume must not be in use)");
  clean->add_option("NAME", name, "Volume name")->required();
  clean->add_option("--threshold", clean_threshold,
                    "Clean segments whose live fraction is below this (default 0.5; 1 copies "
                    "every closed segment)")
      ->capture_default_str();
  clean->callback([&g, exit_code] { *exit_code = RunClean(g, name, clean_threshold); });

  CLI::App* imp = app.add_subcommand(
      "import",
      "Copy a raw image into a volume (created with the image's size if missing; an existing "
      "volume must be at least as large)");
  imp->add_option("NAME", import_args.name, "Volume name")->required();
  imp->add_option("FILE", import_args.file, "Raw image file or block device")->required();
  imp->add_option("--flush-interval", import_args.flush_interval,
                  "Flush the volume after every this many bytes (default 64M); --verbose "
                  "prints \"flushed <bytes>\" after each")
      ->capture_default_str();
  imp->callback([&g, exit_code] { *exit_code = RunImport(g, import_args); });

  CLI::App* exp = app.add_subcommand(
      "export", "Copy a volume into a raw image file (sparse), block device, or - for stdout");
  exp->add_option("NAME", name, "Volume name")->required();
  exp->add_option("FILE", file, "Output file, device, or - for stdout")->required();
  exp->callback([&g, exit_code] { *exit_code = RunExport(g, name, file); });
}

}  // namespace hbiss::cli
