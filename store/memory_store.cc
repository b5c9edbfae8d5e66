#include "store/memory_store.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "util/mutex.h"
#include "util/thread_annotations.h"

namespace hbiss::store {

namespace {

// One object's bytes. Segments only grow, so a reader that remembers the size
// it opened with can read without racing the writer's appends.
struct Object {
  mutable SharedMutex mu;
  std::string data GUARDED_BY(mu);
};

// Returns the parent directories of `name`, outermost first: "a/b/c" ->
// {"a", "a/b"}.
std::vector<std::string> ParentDirs(const std::string& name) {
  std::vector<std::string> out;
  for (size_t pos = name.find('/'); pos != std::string::npos; pos = name.find('/', pos + 1)) {
    out.push_back(name.substr(0, pos));
  }
  return out;
}

}  // namespace

struct MemoryStore::State {
  Mutex mu;
  std::map<std::string, std::shared_ptr<Object>> objects GUARDED_BY(mu);
  std::set<std::string> dirs GUARDED_BY(mu);
  std::set<std::string> locks GUARDED_BY(mu);

  // Makes every parent directory of `name` exist. Fails, changing nothing, if
  // one of them is an object.
  Status MakeParents(const std::string& name) REQUIRES(mu) {
    std::vector<std::string> parents = ParentDirs(name);
    for (const std::string& p : parents) {
      if (objects.count(p)) {
        return Status::IOError("mem: cannot create '" + name + "': '" + p + "' is not a directory");
      }
    }
    for (std::string& p : parents) dirs.insert(std::move(p));
    return Status::OK();
  }

  // NotFound / InvalidArgument for a name that is not an existing object.
  Status NotAnObject(const std::string& name) const REQUIRES(mu) {
    if (dirs.count(name)) return Status::InvalidArgument("mem: '" + name + "' is a directory");
    return Status::NotFound("mem: '" + name + "' does not exist");
  }
};

namespace {

Mutex g_registry_mu;
std::map<std::string, std::shared_ptr<MemoryStore::State>>& Registry() REQUIRES(g_registry_mu) {
  static auto* registry = new std::map<std::string, std::shared_ptr<MemoryStore::State>>();
  return *registry;
}

class MemoryWriter final : public SegmentWriter {
 public:
  MemoryWriter(std::shared_ptr<Object> obj, std::string name)
      : obj_(std::move(obj)), name_(std::move(name)) {}

  Status Append(std::span<const uint8_t> data) override {
    HBISS_RETURN_IF_ERROR(CheckOpen());
    if (data.empty()) return Status::OK();
    WriterMutexLock lock(&obj_->mu);
    obj_->data.append(reinterpret_cast<const char*>(data.data()), data.size());
    size_ += data.size();
    return Status::OK();
  }
  Status Flush() override { return CheckOpen(); }
  Status Sync() override { return CheckOpen(); }
  Status Close() override {
    HBISS_RETURN_IF_ERROR(CheckOpen());
    closed_ = true;
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }

 private:
  Status CheckOpen() const {
    if (closed_) return Status::InvalidArgument("mem: writer for '" + name_ + "' is closed");
    return Status::OK();
  }

  std::shared_ptr<Object> obj_;
  std::string name_;
  uint64_t size_ = 0;
  bool closed_ = false;
};

class MemoryReader final : public SegmentReader {
 public:
  MemoryReader(std::shared_ptr<Object> obj, uint64_t size) : obj_(std::move(obj)), size_(size) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) override {
    if (offset >= size_ || out.empty()) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
    ReaderMutexLock lock(&obj_->mu);
    std::memcpy(out.data(), obj_->data.data() + offset, n);
    return n;
  }
  uint64_t Size() const override { return size_; }

 private:
  std::shared_ptr<Object> obj_;
  const uint64_t size_;
};

class MemoryLock final : public Lock {
 public:
  MemoryLock(std::shared_ptr<MemoryStore::State> state, std::string name)
      : state_(std::move(state)), name_(std::move(name)) {}
  ~MemoryLock() override {
    MutexLock lock(&state_->mu);
    state_->locks.erase(name_);
  }

 private:
  std::shared_ptr<MemoryStore::State> state_;
  std::string name_;
};

}  // namespace

MemoryStore::MemoryStore() : state_(std::make_shared<State>()), uri_("mem:private") {}

MemoryStore::MemoryStore(const std::string& name) : uri_("mem://" + name) {
  MutexLock lock(&g_registry_mu);
  auto& slot = Registry()[name];
  if (!slot) slot = std::make_shared<State>();
  state_ = slot;
}

MemoryStore::~MemoryStore() = default;

void MemoryStore::Drop(const std::string& name) {
  MutexLock lock(&g_registry_mu);
  Registry().erase(name);
}

Result<std::unique_ptr<SegmentWriter>> MemoryStore::Create(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  MutexLock lock(&state_->mu);
  if (state_->objects.count(name) || state_->dirs.count(name)) {
    return Status::AlreadyExists("mem: '" + name + "' already exists");
  }
  HBISS_RETURN_IF_ERROR(state_->MakeParents(name));
  auto obj = std::make_shared<Object>();
  state_->objects[name] = obj;
  return std::unique_ptr<SegmentWriter>(std::make_unique<MemoryWriter>(std::move(obj), name));
}

Result<std::unique_ptr<SegmentReader>> MemoryStore::Open(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  std::shared_ptr<Object> obj;
  {
    MutexLock lock(&state_->mu);
    auto it = state_->objects.find(name);
    if (it == state_->objects.end()) return state_->NotAnObject(name);
    obj = it->second;
  }
  uint64_t size;
  {
    ReaderMutexLock lock(&obj->mu);
    size = obj->data.size();
  }
  return std::unique_ptr<SegmentReader>(std::make_unique<MemoryReader>(std::move(obj), size));
}

Status MemoryStore::Put(const std::string& name, std::span<const uint8_t> data) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  auto obj = std::make_shared<Object>();
  if (!data.empty()) {
    WriterMutexLock obj_lock(&obj->mu);  // not shared yet; the lock satisfies the analysis
    obj->data.assign(reinterpret_cast<const char*>(data.data()), data.size());
  }
  MutexLock lock(&state_->mu);
  if (state_->dirs.count(name)) {
    return Status::InvalidArgument("mem: cannot put '" + name + "': it is a directory");
  }
  HBISS_RETURN_IF_ERROR(state_->MakeParents(name));
  state_->objects[name] = std::move(obj);
  return Status::OK();
}

Result<std::vector<ObjectInfo>> MemoryStore::List(const std::string& dir) {
  if (!dir.empty()) HBISS_RETURN_IF_ERROR(ValidateName(dir));
  std::vector<ObjectInfo> out;
  std::vector<std::shared_ptr<Object>> objs;
  {
    MutexLock lock(&state_->mu);
    if (!dir.empty() && !state_->dirs.count(dir)) {
      if (state_->objects.count(dir)) {
        return Status::InvalidArgument("mem: '" + dir + "' is not a directory");
      }
      return Status::NotFound("mem: directory '" + dir + "' does not exist");
    }
    const std::string prefix = dir.empty() ? "" : dir + "/";
    for (auto it = state_->objects.lower_bound(prefix);
         it != state_->objects.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      std::string rest = it->first.substr(prefix.size());
      if (rest.find('/') != std::string::npos) continue;
      out.push_back(ObjectInfo{std::move(rest), 0, false});
      objs.push_back(it->second);
    }
    for (auto it = state_->dirs.lower_bound(prefix);
         it != state_->dirs.end() && it->compare(0, prefix.size(), prefix) == 0; ++it) {
      std::string rest = it->substr(prefix.size());
      if (rest.find('/') != std::string::npos) continue;
      out.push_back(ObjectInfo{std::move(rest), 0, true});
    }
  }
  for (size_t i = 0; i < objs.size(); ++i) {
    ReaderMutexLock lock(&objs[i]->mu);
    out[i].size = objs[i]->data.size();
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
  return out;
}

Result<uint64_t> MemoryStore::Stat(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  std::shared_ptr<Object> obj;
  {
    MutexLock lock(&state_->mu);
    auto it = state_->objects.find(name);
    if (it == state_->objects.end()) return state_->NotAnObject(name);
    obj = it->second;
  }
  ReaderMutexLock lock(&obj->mu);
  return static_cast<uint64_t>(obj->data.size());
}

Status MemoryStore::Delete(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  MutexLock lock(&state_->mu);
  if (state_->objects.erase(name) == 0) return state_->NotAnObject(name);
  return Status::OK();
}

Status MemoryStore::DeleteDir(const std::string& dir) {
  HBISS_RETURN_IF_ERROR(ValidateName(dir));
  MutexLock lock(&state_->mu);
  if (state_->objects.count(dir)) {
    return Status::InvalidArgument("mem: '" + dir + "' is not a directory");
  }
  const std::string prefix = dir + "/";
  auto in_dir = [&](const std::string& n) { return n.compare(0, prefix.size(), prefix) == 0; };
  for (auto it = state_->objects.lower_bound(prefix);
       it != state_->objects.end() && in_dir(it->first);) {
    it = state_->objects.erase(it);
  }
  state_->dirs.erase(dir);
  for (auto it = state_->dirs.lower_bound(prefix); it != state_->dirs.end() && in_dir(*it);) {
    it = state_->dirs.erase(it);
  }
  return Status::OK();
}

Status MemoryStore::RenameDir(const std::string& from, const std::string& to) {
  HBISS_RETURN_IF_ERROR(ValidateRename(from, to));
  MutexLock lock(&state_->mu);
  if (state_->objects.count(from)) {
    return Status::InvalidArgument("mem: '" + from + "' is not a directory");
  }
  if (!state_->dirs.count(from)) return Status::NotFound("mem: '" + from + "' does not exist");
  if (state_->objects.count(to) || state_->dirs.count(to)) {
    return Status::AlreadyExists("mem: '" + to + "' exists");
  }
  const size_t slash = to.rfind('/');
  if (slash != std::string::npos && !state_->dirs.count(to.substr(0, slash))) {
    return Status::NotFound("mem: the parent of '" + to + "' does not exist");
  }
  // Writers and readers hold their Object, so they keep working under the
  // new name.
  const std::string prefix = from + "/";
  auto in_dir = [&](const std::string& n) { return n.compare(0, prefix.size(), prefix) == 0; };
  std::map<std::string, std::shared_ptr<Object>> moved;
  for (auto it = state_->objects.lower_bound(prefix);
       it != state_->objects.end() && in_dir(it->first);) {
    moved.emplace(to + it->first.substr(from.size()), std::move(it->second));
    it = state_->objects.erase(it);
  }
  state_->objects.merge(moved);
  std::set<std::string> moved_dirs{to};
  state_->dirs.erase(from);
  for (auto it = state_->dirs.lower_bound(prefix); it != state_->dirs.end() && in_dir(*it);) {
    moved_dirs.insert(to + it->substr(from.size()));
    it = state_->dirs.erase(it);
  }
  state_->dirs.merge(moved_dirs);
  return Status::OK();
}

Result<std::unique_ptr<Lock>> MemoryStore::TryLock(const std::string& name) {
  HBISS_RETURN_IF_ERROR(ValidateName(name));
  MutexLock lock(&state_->mu);
  if (!state_->locks.insert(name).second) {
    return Status::Busy("mem: lock '" + name + "' is held");
  }
  return std::unique_ptr<Lock>(std::make_unique<MemoryLock>(state_, name));
}

std::string MemoryStore::Uri() const { return uri_; }

}  // namespace hbiss::store
