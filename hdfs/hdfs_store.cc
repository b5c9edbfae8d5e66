#include "hdfs/hdfs_store.h"

#include <algorithm>
#include <atomic>
#include <map>

#include <fmt/format.h>

#include "util/mutex.h"
#include "util/thread_annotations.h"

namespace hbiss::hdfs {

namespace {

// Files open for writing by any HdfsStore of this process, keyed by "host:port/path", so
// that Open does not mistake our own live writer for a crashed one.
Mutex g_writing_mu;
std::map<std::string, int>& Writing() REQUIRES(g_writing_mu) {
  static auto* m = new std::map<std::string, int>();
  return *m;
}

class WritingMark {
 public:
  explicit WritingMark(std::string key) : key_(std::move(key)) {
    MutexLock l(&g_writing_mu);
    Writing()[key_]++;
  }
  ~WritingMark() {
    MutexLock l(&g_writing_mu);
    if (--Writing()[key_] == 0) Writing().erase(key_);
  }
  WritingMark(const WritingMark&) = delete;
  WritingMark& operator=(const WritingMark&) = delete;

  static bool IsWriting(const std::string& key) {
    MutexLock l(&g_writing_mu);
    return Writing().count(key) > 0;
  }

 private:
  std::string key_;
};

class HdfsSegmentWriter : public store::SegmentWriter {
 public:
  HdfsSegmentWriter(std::unique_ptr<FileWriter> w, std::string key)
      : w_(std::move(w)), mark_(std::move(key)) {}
  Status Append(std::span<const uint8_t> data) override { return w_->Write(data); }
  Status Flush() override { return w_->Hflush(); }
  Status Sync() override { return w_->Hsync(); }
  Status Close() override {
    // HDFS close does not fsync on the DataNodes; the store promises Sync.
    Status st = w_->Hsync();
    Status cl = w_->Close();
    return st.ok() ? cl : st;
  }
  uint64_t Size() const override { return w_->size(); }

 private:
  std::unique_ptr<FileWriter> w_;
  WritingMark mark_;
};

class HdfsSegmentReader : public store::SegmentReader {
 public:
  explicit HdfsSegmentReader(std::unique_ptr<FileReader> r) : r_(std::move(r)) {}
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    return r_->PRead(offset, out);
  }
  uint64_t Size() const override { return r_->length(); }

 private:
  std::unique_ptr<FileReader> r_;
};

class HdfsLock : public store::Lock {
 public:
  explicit HdfsLock(std::unique_ptr<Client::FileLock> l) : l_(std::move(l)) {}
  // Self-fencing (doc/ownership.md): fails once the client's lease renewals
  // failed for store::kLeaseSelfFenceSeconds.
  Status Check() const override { return l_->Check(); }

 private:
  std::unique_ptr<Client::FileLock> l_;  // released (file completed) on destruction
};

class HdfsStore : public store::Store {
 public:
  HdfsStore(std::unique_ptr<Client> client, HdfsUri uri)
      : client_(std::move(client)), uri_(std::move(uri)) {}

  Result<std::unique_ptr<store::SegmentWriter>> Create(const std::string& name) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    std::string path = Path(name);
    CreateOptions o;
    o.overwrite = false;
    o.sync_block = true;  // Sync covers the blocks already finished too
    auto w = client_->Create(path, o);
    if (!w.ok()) {
      // Open for writing by someone else: it exists all the same.
      if (w.status().IsBusy()) return Status::AlreadyExists(w.status().message());
      return w.status();
    }
    return std::unique_ptr<store::SegmentWriter>(
        new HdfsSegmentWriter(std::move(w).value(), Key(path)));
  }

  // A file still being written reads up to its visible length (FileReader); its writer,
  // wherever it runs, keeps its lease and carries on.
  Result<std::unique_ptr<store::SegmentReader>> Open(const std::string& name) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    HBISS_ASSIGN_OR_RETURN(auto r, client_->Open(Path(name)));
    return std::unique_ptr<store::SegmentReader>(new HdfsSegmentReader(std::move(r)));
  }

  // Recovers the lease first (a closed file answers at once, unchanged), so that the length
  // read afterwards is final and the old writer's next hflush fails.
  Result<std::unique_ptr<store::SegmentReader>> OpenForTakeover(const std::string& name) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    std::string path = Path(name);
    if (!WritingMark::IsWriting(Key(path))) {
      Status st = client_->RecoverLeaseAndWait(path);
      if (!st.ok()) return st.WithContext(fmt::format("taking over {}", name));
    }
    HBISS_ASSIGN_OR_RETURN(auto r, client_->Open(path));
    return std::unique_ptr<store::SegmentReader>(new HdfsSegmentReader(std::move(r)));
  }

  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    std::string path = Path(name);
    size_t slash = path.rfind('/');
    std::string tmp = fmt::format("{}/{}{}-{}", path.substr(0, slash), kTempPrefix,
                                  client_->client_name(),
                                  tmp_counter_.fetch_add(1));
    CreateOptions o;
    o.overwrite = false;
    o.sync_block = true;  // durable when Put returns, every block of it
    HBISS_ASSIGN_OR_RETURN(auto w, client_->Create(tmp, o));
    Status st = w->Write(data);
    if (st.ok()) st = w->Hsync();
    if (st.ok()) st = w->Close();
    w.reset();
    if (st.ok()) st = client_->Rename(tmp, path, /*overwrite=*/true);
    if (!st.ok()) {
      (void)client_->Delete(tmp, false);
      return st.WithContext(fmt::format("put {}", name));
    }
    return Status::OK();
  }

  // A Put that replaces `name` during the read deletes the blocks under the reader, and the
  // read fails (NotFound from FileReader::Refresh, or another error on the way). A read that
  // failed while the path came to name another file (another inode id) starts over on it.
  Result<std::string> Get(const std::string& name, uint64_t max_size = 64ull << 20) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    const std::string path = Path(name);
    constexpr int kAttempts = 5;
    for (int attempt = 1;; attempt++) {
      HBISS_ASSIGN_OR_RETURN(FileStatus before, client_->GetFileInfo(path));  // NotFound: absent
      if (before.is_dir) return Status::InvalidArgument(fmt::format("{}: is a directory", name));
      auto reader = Open(name);
      Result<std::string> data =
          reader.ok() ? ReadWhole(**reader, name, max_size) : Result<std::string>(reader.status());
      if (data.ok() || attempt == kAttempts) return data;
      auto after = client_->GetFileInfo(path);
      const bool replaced = after.ok() ? after->file_id != before.file_id
                                       : after.status().IsNotFound();
      if (!replaced) return data;
    }
  }

  Result<std::vector<store::ObjectInfo>> List(const std::string& dir) override {
    std::string path = uri_.path;
    if (!dir.empty()) {
      HBISS_RETURN_IF_ERROR(store::ValidateName(dir));
      path = Path(dir);
    }
    HBISS_ASSIGN_OR_RETURN(FileStatus st, client_->GetFileInfo(path));
    if (!st.is_dir) return Status::InvalidArgument(fmt::format("{}: not a directory", dir));
    HBISS_ASSIGN_OR_RETURN(auto entries, client_->List(path));
    std::vector<store::ObjectInfo> out;
    for (const auto& e : entries) {
      if (e.name.starts_with(store::kReservedPrefix)) continue;
      out.push_back(store::ObjectInfo{e.name, e.is_dir ? 0 : e.length, e.is_dir});
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    return out;
  }

  Result<uint64_t> Stat(const std::string& name) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    HBISS_ASSIGN_OR_RETURN(FileStatus st, client_->GetFileInfo(Path(name)));
    if (st.is_dir) return Status::InvalidArgument(fmt::format("{}: is a directory", name));
    return st.length;
  }

  Status Delete(const std::string& name) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    std::string path = Path(name);
    HBISS_ASSIGN_OR_RETURN(FileStatus st, client_->GetFileInfo(path));
    if (st.is_dir) return Status::InvalidArgument(fmt::format("{}: is a directory", name));
    HBISS_ASSIGN_OR_RETURN(bool deleted, client_->Delete(path, false));
    if (!deleted) return Status::NotFound(fmt::format("{}: no such object", name));
    return Status::OK();
  }

  Status DeleteDir(const std::string& dir) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(dir));
    return client_->Delete(Path(dir), true).status();
  }

  // rename2 without OVERWRITE: one NameNode operation, which moves the leases
  // of files open for writing under `from` with them.
  Status RenameDir(const std::string& from, const std::string& to) override {
    HBISS_RETURN_IF_ERROR(store::ValidateRename(from, to));
    HBISS_ASSIGN_OR_RETURN(FileStatus st, client_->GetFileInfo(Path(from)));
    if (!st.is_dir) return Status::InvalidArgument(fmt::format("{}: is not a directory", from));
    // The NameNode refuses a file at `to` with a plain IOException; say what
    // the contract says. (The rename itself still never replaces anything.)
    auto dst = client_->GetFileInfo(Path(to));
    if (dst.ok()) return Status::AlreadyExists(fmt::format("{}: exists", to));
    if (!dst.status().IsNotFound()) return dst.status();
    return client_->Rename(Path(from), Path(to), false);
  }

  Result<std::unique_ptr<store::Lock>> TryLock(const std::string& name) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    HBISS_ASSIGN_OR_RETURN(auto l, client_->TryLockFile(Path(name)));
    return std::unique_ptr<store::Lock>(new HdfsLock(std::move(l)));
  }

  // The lock is an open, empty file (see TryLockFile); recovering its lease
  // closes it, and the next TryLock appends to it again.
  Status BreakLock(const std::string& name) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(name));
    Status s = client_->RecoverLeaseAndWait(Path(name), 30000);
    if (s.IsNotFound()) return Status::OK();
    return s;
  }

  std::string Uri() const override {
    return fmt::format("hdfs://{}:{}{}", uri_.host, uri_.port, uri_.path);
  }

  Result<uint64_t> RemoveTempLeftovers(const std::string& dir) override {
    HBISS_RETURN_IF_ERROR(store::ValidateName(dir));
    auto entries = client_->List(Path(dir));
    if (!entries.ok()) {
      if (entries.status().IsNotFound()) return uint64_t{0};
      return entries.status();
    }
    uint64_t n = 0;
    for (const auto& e : *entries) {
      if (e.is_dir || !e.name.starts_with(kTempPrefix)) continue;
      // A crashed writer may still hold the lease: a delete works all the same.
      HBISS_ASSIGN_OR_RETURN(bool deleted, client_->Delete(Path(dir) + "/" + e.name, false));
      if (deleted) n++;
    }
    return n;
  }

 private:
  std::string Path(const std::string& name) const {
    return uri_.path == "/" ? "/" + name : uri_.path + "/" + name;
  }
  std::string Key(const std::string& path) const {
    return fmt::format("{}:{}{}", uri_.host, uri_.port, path);
  }

  std::unique_ptr<Client> client_;
  const HdfsUri uri_;
  std::atomic<uint64_t> tmp_counter_{0};
};

}  // namespace

Result<std::unique_ptr<store::Store>> OpenHdfsStore(const std::string& uri,
                                                    bool create_if_missing,
                                                    const ClientOptions& options) {
  HBISS_ASSIGN_OR_RETURN(HdfsUri u, ParseHdfsUri(uri));
  HBISS_ASSIGN_OR_RETURN(auto client, Client::Connect(u.host, u.port, options));
  auto st = client->GetFileInfo(u.path);
  if (st.ok() && !st->is_dir) {
    return Status::InvalidArgument(fmt::format("{}: not a directory", uri));
  }
  if (!st.ok()) {
    if (!st.status().IsNotFound() || !create_if_missing) return st.status();
    HBISS_RETURN_IF_ERROR(client->Mkdirs(u.path));
  }
  return std::unique_ptr<store::Store>(new HdfsStore(std::move(client), std::move(u)));
}

Result<std::unique_ptr<store::Store>> OpenHdfsStore(const std::string& uri,
                                                    bool create_if_missing) {
  ClientOptions o;
  o.rpc_retry_deadline_ms = 60000;
  return OpenHdfsStore(uri, create_if_missing, o);
}

void RegisterStoreScheme() {
  store::StoreFactory f = [](const std::string& uri, bool create_if_missing) {
    return OpenHdfsStore(uri, create_if_missing);
  };
  store::RegisterScheme("hdfs", f);
}

}  // namespace hbiss::hdfs
