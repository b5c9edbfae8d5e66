#include "store/local_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

namespace hbiss::store {

namespace {

std::atomic<uint64_t> g_temp_counter{0};

// Status for a failed system call `what` on `path`.
Status Err(const std::string& what, const std::string& path, int err) {
  return Status::FromErrno(what + " " + path, err);
}

std::string ParentPath(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Err("open directory", dir, errno);
  Status s;
  if (::fsync(fd) != 0) s = Err("fsync directory", dir, errno);
  ::close(fd);
  return s;
}

// Writes all of data to fd, retrying short writes and EINTR.
Status WriteAll(int fd, const uint8_t* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Err("write", path, errno);
    }
    if (w == 0) return Status::IOError("write " + path + ": wrote 0 bytes");
    data += w;
    n -= static_cast<size_t>(w);
  }
  return Status::OK();
}

// stat(2) of an object name, mapping "not there" (including a file where a
// directory was expected) to NotFound and a directory to InvalidArgument.
Result<struct stat> StatObject(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return Status::NotFound(path + ": no such object");
    return Err("stat", path, err);
  }
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + " is a directory");
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + " is not a regular file");
  return st;
}

// Removes `path` and everything below it.
Status RemoveTree(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return Err("opendir", path, errno);
  Status s;
  while (true) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) s = Err("readdir", path, errno);
      break;
    }
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string child = path + "/" + name;
    struct stat st;
    if (::lstat(child.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      s = Err("lstat", child, errno);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      s = RemoveTree(child);
      if (!s.ok()) break;
    } else if (::unlink(child.c_str()) != 0 && errno != ENOENT) {
      s = Err("unlink", child, errno);
      break;
    }
  }
  ::closedir(d);
  if (!s.ok()) return s;
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return Err("rmdir", path, errno);
  return Status::OK();
}

class LocalWriter final : public SegmentWriter {
 public:
  LocalWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~LocalWriter() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::span<const uint8_t> data) override {
    HBISS_RETURN_IF_ERROR(Check());
    Status s = WriteAll(fd_, data.data(), data.size(), path_);
    if (!s.ok()) return Break(s);
    size_ += data.size();
    return Status::OK();
  }

  // No user-space buffer: appended bytes are already in the kernel.
  Status Flush() override { return Check(); }

  Status Sync() override {
    HBISS_RETURN_IF_ERROR(Check());
    while (::fdatasync(fd_) != 0) {
      if (errno != EINTR) return Break(Err("fdatasync", path_, errno));
    }
    return Status::OK();
  }

  Status Close() override {
    HBISS_RETURN_IF_ERROR(Sync());
    int fd = fd_;
    fd_ = -1;
    closed_ = true;
    if (::close(fd) != 0) return Break(Err("close", path_, errno));
    return Status::OK();
  }

  uint64_t Size() const override { return size_; }

 private:
  Status Check() const {
    if (closed_) return Status::InvalidArgument("writer for " + path_ + " is closed");
    if (!broken_.ok()) return broken_.WithContext("writer failed earlier");
    return Status::OK();
  }
  Status Break(Status s) {
    broken_ = s;
    return s;
  }

  int fd_;
  const std::string path_;
  uint64_t size_ = 0;
  bool closed_ = false;
  Status broken_;
};

class LocalReader final : public SegmentReader {
 public:
  LocalReader(int fd, std::string path, uint64_t size)
      : fd_(fd), path_(std::move(path)), size_(size) {}
  ~LocalReader() override { ::close(fd_); }

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= size_) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
    size_t done = 0;
    while (done < want) {
      ssize_t r = ::pread(fd_, out.data() + done, want - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Err("pread", path_, errno);
      }
      if (r == 0) break;  // the file shrank under us; return what there is
      done += static_cast<size_t>(r);
    }
    return done;
  }

  uint64_t Size() const override { return size_; }

 private:
  const int fd_;
  const std::string path_;
  const uint64_t size_;
};

class LocalLock final : public Lock {
 public:
  explicit LocalLock(int fd) : fd_(fd) {}
  ~LocalLock() override { ::close(fd_); }  // releases the flock

 private:
  const int fd_;
};

std::string PercentEncodePath(const std::string& path) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (c <= 0x20 || c >= 0x7f || c == '%' || c == '?' || c == '#') {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// mkdir -p for an absolute path, fsyncing each directory that gains an entry.
Status MakeDirs(const std::string& path) {
  for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) == 0) {
      HBISS_RETURN_IF_ERROR(FsyncDir(ParentPath(prefix)));
    } else if (errno != EEXIST) {
      return Err("mkdir", prefix, errno);
    }
    if (pos == std::string::npos) break;
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<LocalStore>> LocalStore::Open(const std::string& path,
                                                     bool create_if_missing) {
  if (path.empty()) return Status::InvalidArgument("empty local store path");
  std::string root = path;
  if (root.front() != '/') {
    char buf[PATH_MAX];
    if (::getcwd(buf, sizeof(buf)) == nullptr) return Err("getcwd for", path, errno);
    root = std::string(buf) + "/" + root;
  }
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) {
    int err = errno;
    if (err != ENOENT) return Err("stat store directory", root, err);
    if (!create_if_missing) {
      return Status::NotFound("store directory " + root + " does not exist");
    }
    HBISS_RETURN_IF_ERROR(MakeDirs(root).WithContext("cannot create store directory " + root));
    if (::stat(root.c_str(), &st) != 0) return Err("stat store directory", root, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("store path " + root + " is not a directory");
  }
  if (::access(root.c_str(), W_OK | X_OK) != 0) {
    return Status::IOError("store directory " + root + " is not writable: " +
                           std::strerror(errno));
  }
  // access() trusts mode bits; root and read-only or virtual file systems need
  // a real attempt.
  std::string probe = root + (root == "/" ? "" : "/") + std::string(kReservedPrefix) + "probe-" +
                      std::to_string(::getpid()) + "-" + std::to_string(g_temp_counter++);
  int fd = ::open(probe.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::IOError("store directory " + root +
                           " is not writable (cannot create a file in it: " +
                           std::strerror(errno) + ")");
  }
  ::close(fd);
  ::unlink(probe.c_str());
  if (root == "/") root.clear();  // PathOf adds the '/'
  return std::unique_ptr<LocalStore>(new LocalStore(root));
}

Result<std::unique_ptr<Store>> OpenLocalStore(const std::string& path, bool create_if_missing) {
  HBISS_ASSIGN_OR_RETURN(std::unique_ptr<LocalStore> s, LocalStore::Open(path, create_if_missing));
  return std::unique_ptr<Store>(std::move(s));
}

Status LocalStore::MakeParents(const std::string& name) {
  size_t slash = name.rfind('/');
  if (slash == std::string::npos) return Status::OK();
  std::string dir = PathOf(name.substr(0, slash));
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Status::OK();
  // Walk the components below the root only.
  for (size_t pos = name.find('/'); pos != std::string::npos; pos = name.find('/', pos + 1)) {
    std::string prefix = PathOf(name.substr(0, pos));
    if (::mkdir(prefix.c_str(), 0755) == 0) {
      HBISS_RETURN_IF_ERROR(FsyncDir(ParentPath(prefix)));
    } else if (errno == EEXIST) {
      if (::stat(prefix.c_str(), &st) != 0) return Err("stat", prefix, errno);
      if (!S_ISDIR(st.st_mode)) {
        return Status::IOError("cannot create " + PathOf(name) + ": " + prefix +
                               " is not a directory");
      }
    } else {
      return Err("mkdir", prefix, errno);
    }
  }
  return Status::OK();
}

Result<std::unique_ptr<SegmentWriter>> LocalStore::Create(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_RETURN_IF_ERROR(MakeParents(name));
  std::string path = PathOf(name);
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return Err("create", path, errno);
  Status s = FsyncDir(ParentPath(path));
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  return std::unique_ptr<SegmentWriter>(std::make_unique<LocalWriter>(fd, std::move(path)));
}

Result<std::unique_ptr<SegmentReader>> LocalStore::Open(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  std::string path = PathOf(name);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return Status::NotFound(path + ": no such object");
    return Err("open", path, err);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Err("fstat", path, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(path + (S_ISDIR(st.st_mode) ? " is a directory"
                                                                : " is not a regular file"));
  }
  return std::unique_ptr<SegmentReader>(
      std::make_unique<LocalReader>(fd, std::move(path), static_cast<uint64_t>(st.st_size)));
}

Status LocalStore::Put(const std::string& name, std::span<const uint8_t> data) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_RETURN_IF_ERROR(MakeParents(name));
  std::string path = PathOf(name);
  std::string dir = ParentPath(path);
  std::string tmp = dir + "/" + std::string(kTempPrefix) +
                    std::to_string(::getpid()) + "-" + std::to_string(g_temp_counter++);
  int fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return Err("create temporary", tmp, errno);
  Status s = WriteAll(fd, data.data(), data.size(), tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Err("fsync", tmp, errno);
  if (::close(fd) != 0 && s.ok()) s = Err("close", tmp, errno);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    s = err == EISDIR ? Status::InvalidArgument("cannot put " + path + ": it is a directory")
                      : Err("rename " + tmp + " to", path, err);
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(dir);
}

Result<std::vector<ObjectInfo>> LocalStore::List(const std::string& dir) {
  if (!dir.empty()) HBISS_RETURN_IF_ERROR(ValidateName(dir));
  std::string path = dir.empty() ? (root_.empty() ? "/" : root_) : PathOf(dir);
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound("directory " + path + " does not exist");
    if (err == ENOTDIR) return Status::InvalidArgument(path + " is not a directory");
    return Err("opendir", path, err);
  }
  std::vector<ObjectInfo> out;
  Status s;
  while (true) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) s = Err("readdir", path, errno);
      break;
    }
    std::string name = e->d_name;
    if (name == "." || name == ".." || name.starts_with(kReservedPrefix)) continue;
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0) {
      if (errno == ENOENT) continue;  // deleted while listing
      s = Err("stat", path + "/" + name, errno);
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      out.push_back(ObjectInfo{std::move(name), 0, true});
    } else if (S_ISREG(st.st_mode)) {
      out.push_back(ObjectInfo{std::move(name), static_cast<uint64_t>(st.st_size), false});
    }
  }
  ::closedir(d);
  if (!s.ok()) return s;
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
  return out;
}

Result<uint64_t> LocalStore::Stat(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_ASSIGN_OR_RETURN(struct stat st, StatObject(PathOf(name)));
  return static_cast<uint64_t>(st.st_size);
}

Status LocalStore::Delete(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  std::string path = PathOf(name);
  HBISS_RETURN_IF_ERROR(StatObject(path).status());
  if (::unlink(path.c_str()) != 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such object");
    return Err("unlink", path, err);
  }
  return FsyncDir(ParentPath(path));
}

Status LocalStore::DeleteDir(const std::string& dir) {
  HBISS_RETURN_IF_ERROR(ValidateName(dir));
  std::string path = PathOf(dir);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return Status::OK();
    return Err("lstat", path, err);
  }
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + " is not a directory");
  HBISS_RETURN_IF_ERROR(RemoveTree(path));
  return FsyncDir(ParentPath(path));
}

Status LocalStore::RenameDir(const std::string& from, const std::string& to) {
  HBISS_RETURN_IF_ERROR(ValidateRename(from, to));
  const std::string src = PathOf(from);
  const std::string dst = PathOf(to);
  struct stat st;
  if (::lstat(src.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return Status::NotFound(src + ": no such directory");
    return Err("lstat", src, err);
  }
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(src + " is not a directory");
  if (::renameat2(AT_FDCWD, src.c_str(), AT_FDCWD, dst.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    if (err == EEXIST) return Status::AlreadyExists(dst + " exists");
    if (err == ENOENT || err == ENOTDIR) {
      return Status::NotFound("rename " + src + " to " + dst + ": no such directory");
    }
    return Err("rename " + src + " to", dst, err);
  }
  HBISS_RETURN_IF_ERROR(FsyncDir(ParentPath(dst)));
  if (ParentPath(src) != ParentPath(dst)) HBISS_RETURN_IF_ERROR(FsyncDir(ParentPath(src)));
  return Status::OK();
}

Result<std::unique_ptr<Lock>> LocalStore::TryLock(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  HBISS_RETURN_IF_ERROR(MakeParents(name));
  std::string path = PathOf(name);
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0) {
    int err = errno;
    if (err == EISDIR) return Status::InvalidArgument("lock " + path + " is a directory");
    return Err("open lock file", path, err);
  }
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err == EINTR) continue;
    ::close(fd);
    if (err == EWOULDBLOCK) return Status::Busy("lock " + path + " is held by another holder");
    return Err("flock", path, err);
  }
  return std::unique_ptr<Lock>(std::make_unique<LocalLock>(fd));
}

void LocalStore::DropCache(const std::string& name) {
  if (!ValidateName(name).ok()) return;
  int fd = ::open(PathOf(name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

Result<uint64_t> LocalStore::RemoveTempLeftovers(const std::string& dir) {
  HBISS_RETURN_IF_ERROR(ValidateName(dir));
  const std::string path = PathOf(dir);
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return uint64_t{0};
    return Err("opendir", path, errno);
  }
  std::vector<std::string> temps;
  while (struct dirent* e = ::readdir(d)) {
    if (std::string_view(e->d_name).starts_with(kTempPrefix)) temps.emplace_back(e->d_name);
  }
  ::closedir(d);
  uint64_t n = 0;
  for (const std::string& t : temps) {
    if (::unlinkat(AT_FDCWD, (path + "/" + t).c_str(), 0) == 0) {
      n++;
    } else if (errno != ENOENT) {
      return Err("unlink", path + "/" + t, errno);
    }
  }
  if (n > 0) HBISS_RETURN_IF_ERROR(FsyncDir(path));
  return n;
}

std::string LocalStore::Uri() const {
  return "file://" + PercentEncodePath(root_.empty() ? "/" : root_);
}

}  // namespace hbiss::store
