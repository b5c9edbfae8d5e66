#include "nbd/volume_export.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "volume/space.h"
#include "volume/volume_meta.h"

namespace hbiss::nbd {

namespace {

// A state a dirty bitmap of an export may start from.
struct BitmapBase {
  std::string bitmap;  // NAME in qemu:dirty-bitmap:NAME
  std::string spec;    // the state, as volume::Diff takes it: VOL@SNAP
  std::string key;     // names this state forever: VOL#ID (ids are never reused)
};

// The states a dirty bitmap of export `spec` ("VOL" or "VOL@B") may start
// from, oldest first: for a clone, the parent snapshot it was made from
// (named PARENT@SNAP); then every snapshot of VOL, or for VOL@B those
// created before B.
Result<std::vector<BitmapBase>> BitmapBases(store::Store* store, const std::string& spec) {
  std::string vol, snap;
  HBISS_RETURN_IF_ERROR(volume::Volume::ParseSpec(spec, &vol, &snap));
  HBISS_ASSIGN_OR_RETURN(auto snaps, volume::Volume::ListSnapshots(store, vol));
  HBISS_ASSIGN_OR_RETURN(volume::VolumeMeta meta, volume::ReadMeta(store, vol));
  std::vector<BitmapBase> out;
  if (!meta.parents.empty()) {
    // By id: the parent snapshot may have been renamed since the clone. A
    // parent that cannot be read offers nothing; the rest still works.
    const volume::ParentRef& p = meta.parents.front();
    auto parent_snaps = volume::Volume::ListSnapshots(store, p.volume);
    if (parent_snaps.ok()) {
      for (const auto& s : *parent_snaps) {
        if (s.id != p.snap_id) continue;
        const std::string name = p.volume + "@" + s.name;
        out.push_back({name, name, p.volume + "#" + std::to_string(s.id)});
      }
    }
  }
  for (const auto& s : snaps) {
    if (s.name == snap) return out;
    out.push_back({s.name, vol + "@" + s.name, vol + "#" + std::to_string(s.id)});
  }
  if (!snap.empty()) {
    return Status::NotFound("volume " + vol + " has no snapshot named '" + snap + "'");
  }
  return out;
}

}  // namespace

Status VolumeExport::SnapshotGone(Status s) {
  if (s.ok() || store_ == nullptr) return s;
  std::string vol, snap;
  if (!volume::Volume::ParseSpec(name_, &vol, &snap).ok() || snap.empty()) return s;
  // A snapshot view is an open of its own: the owner's read gate does not
  // cover it, so after `snap rm` the cleaner may delete what it reads.
  auto snaps = volume::Volume::ListSnapshots(store_, vol);
  if (!snaps.ok()) return s;
  for (const auto& i : *snaps) {
    if (i.name == snap) return s;
  }
  return Status::NotFound("snapshot " + name_ + " was removed (hbiss snap rm) while exported: " +
                          "its data may be gone (" + s.ToString() + ")");
}

Status VolumeExport::Read(uint64_t offset, std::span<uint8_t> out) {
  return SnapshotGone(v_->Read(offset, out));
}

Status VolumeExport::Write(uint64_t offset, std::span<const uint8_t> data) {
  return v_->Write(offset, data);
}

Status VolumeExport::Trim(uint64_t offset, uint64_t length) { return v_->Trim(offset, length); }

Status VolumeExport::WriteZeroes(uint64_t offset, uint64_t length, bool may_trim) {
  return v_->WriteZeroes(offset, length);  // see the NO_HOLE note in the header
}

Status VolumeExport::Flush() { return v_->Flush(); }

Status VolumeExport::Cache(uint64_t offset, uint64_t length) {
  constexpr uint64_t kChunk = 1 << 20;
  uint64_t end = offset + std::min<uint64_t>(length, 32ull << 20);
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  for (uint64_t pos = offset; pos < end; pos += kChunk) {
    uint64_t n = std::min(kChunk, end - pos);
    HBISS_RETURN_IF_ERROR(SnapshotGone(v_->Read(pos, std::span<uint8_t>(buf.get(), n))));
  }
  return Status::OK();
}

Result<std::vector<Extent>> VolumeExport::BlockStatus(uint64_t offset, uint64_t length) {
  HBISS_ASSIGN_OR_RETURN(std::vector<volume::Extent> ext, v_->BlockStatus(offset, length));
  std::vector<Extent> out;
  out.reserve(ext.size());
  for (const auto& e : ext) {
    // Unallocated ranges read as zeros (volume.h contract).
    out.push_back(Extent{e.offset, e.length, !e.allocated, !e.allocated});
  }
  return out;
}

Status DirtyMapBuilds::Acquire(const std::string& what) {
  MutexLock l(&mu_);
  const auto deadline = std::chrono::steady_clock::now() + max_wait_;
  while (free_ == 0) {
    if (!cv_.WaitUntil(&mu_, deadline) && free_ == 0) {
      return Status::Busy(what + ": this server is already building " + std::to_string(slots_) +
                          " dirty-bitmap maps, the most at once, and none finished within " +
                          std::to_string(max_wait_.count()) + " ms; try again");
    }
  }
  free_--;
  return Status::OK();
}

void DirtyMapBuilds::Release() {
  {
    MutexLock l(&mu_);
    free_++;
  }
  cv_.Signal();
}

void DirtyMapBuilds::set_max_wait(std::chrono::milliseconds w) {
  MutexLock l(&mu_);
  max_wait_ = w;
}

int DirtyMapBuilds::in_use() {
  MutexLock l(&mu_);
  return slots_ - free_;
}

Result<std::shared_ptr<const DirtyMap>> VolumeExport::DirtyBitmap(const std::string& bitmap) {
  if (store_ == nullptr) return Export::DirtyBitmap(bitmap);
  HBISS_ASSIGN_OR_RETURN(auto bases, BitmapBases(store_, name_));
  auto base = std::find_if(bases.begin(), bases.end(),
                           [&](const BitmapBase& b) { return b.bitmap == bitmap; });
  if (base == bases.end()) {
    return Status::NotFound("export " + name_ + " has no dirty bitmap '" + bitmap +
                            "': no such earlier snapshot");
  }
  std::string vol, snap;
  HBISS_RETURN_IF_ERROR(volume::Volume::ParseSpec(name_, &vol, &snap));
  const bool head = snap.empty();
  if (head) {
    // Every write acknowledged so far must be in the log that Diff reads.
    HBISS_RETURN_IF_ERROR(v_->Flush());
    HBISS_RETURN_IF_ERROR(v_->Refresh());
  } else {
    MutexLock l(&mu_);
    auto it = shared_maps_.find(base->key);
    if (it != shared_maps_.end()) {
      if (auto m = it->second.lock()) return m;
      shared_maps_.erase(it);
    }
  }
  // Each build holds both whole maps for a while: a bounded number at once.
  if (builds_ != nullptr) {
    HBISS_RETURN_IF_ERROR(builds_->Acquire("dirty bitmap '" + bitmap + "' of " + name_));
  }
  struct Slot {
    DirtyMapBuilds* b;
    ~Slot() {
      if (b != nullptr) b->Release();
    }
  } slot{builds_};
  std::vector<DirtyMap::Run> runs;
  {
    HBISS_ASSIGN_OR_RETURN(auto diff, volume::Diff(store_, base->spec, name_));
    // Written and unmapped extents are both dirty: merge what touches.
    for (const volume::DiffExtent& d : diff) {
      if (!runs.empty() && runs.back().offset + runs.back().length == d.offset) {
        runs.back().length += d.length;
      } else {
        runs.push_back({d.offset, d.length});
      }
    }
  }
  HBISS_ASSIGN_OR_RETURN(DirtyMap built,
                         DirtyMap::Build(size(), std::move(runs), volume::kBlockSize));
  auto m = std::make_shared<const DirtyMap>(std::move(built));
  if (!head) {
    MutexLock l(&mu_);
    shared_maps_[base->key] = m;
  }
  return m;
}

VolumeProvider::VolumeProvider(store::Store* store, bool read_only,
                               volume::OpenOptions open_opts, Opener opener)
    : store_(store),
      read_only_(read_only),
      open_opts_([&] {
        open_opts.read_only = read_only;
        return open_opts;
      }()),
      opener_(std::move(opener)) {}

VolumeProvider::~VolumeProvider() { (void)CloseAll(); }

Result<std::vector<std::string>> VolumeProvider::List() {
  HBISS_ASSIGN_OR_RETURN(auto names, volume::Volume::List(store_));
  std::vector<std::string> out;
  for (const auto& n : names) {
    out.push_back(n);
    auto snaps = volume::Volume::ListSnapshots(store_, n);
    if (!snaps.ok()) continue;  // removed meanwhile: its name is listed all the same
    for (const auto& s : *snaps) out.push_back(n + "@" + s.name);
  }
  return out;
}

namespace {

// The export of snapshot `vol`@`snap`: read-only, the snapshot's size.
Result<ExportInfo> DescribeSnapshot(store::Store* store, const std::string& spec,
                                    const std::string& vol, const std::string& snap) {
  HBISS_ASSIGN_OR_RETURN(auto snaps, volume::Volume::ListSnapshots(store, vol));
  for (const auto& s : snaps) {
    if (s.name != snap) continue;
    ExportInfo info;
    info.name = spec;
    info.read_only = true;
    info.size = s.size;
    info.description = "hbiss snapshot (read-only)";
    return info;
  }
  return Status::NotFound("volume " + vol + " has no snapshot named '" + snap + "'");
}

}  // namespace

Result<std::vector<std::string>> VolumeProvider::DirtyBitmaps(const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(auto bases, BitmapBases(store_, name));
  std::vector<std::string> out;
  for (const auto& b : bases) out.push_back(b.bitmap);
  return out;
}

Result<ExportInfo> VolumeProvider::Describe(const std::string& name) {
  std::string canonical = name;
  if (canonical.empty()) {
    HBISS_ASSIGN_OR_RETURN(auto names, volume::Volume::List(store_));
    if (names.size() != 1) {
      return Status::NotFound("no default export: the store has " +
                              std::to_string(names.size()) + " volumes; name one");
    }
    canonical = names[0];
  }
  std::string vol, snap;
  if (!volume::Volume::ParseSpec(canonical, &vol, &snap).ok()) {
    return Status::NotFound("no volume or snapshot named '" + canonical + "'");
  }
  if (!snap.empty()) return DescribeSnapshot(store_, canonical, vol, snap);
  ExportInfo info;
  info.name = canonical;
  info.read_only = read_only_;
  {
    MutexLock l(&mu_);
    auto it = open_.find(canonical);
    if (it != open_.end() && it->second.state == Entry::State::kOpen) {
      info.size = it->second.exp->size();
      info.description = "hbiss volume";
      return info;
    }
  }
  // The size is in the meta (a volume's size never changes); Volume::Stat
  // would also load the newest checkpoint.
  HBISS_ASSIGN_OR_RETURN(volume::VolumeMeta meta, volume::ReadMeta(store_, canonical));
  info.size = meta.size;
  info.description = "hbiss volume";
  return info;
}

Result<std::shared_ptr<Export>> VolumeProvider::Open(const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(ExportInfo info, Describe(name));
  MutexLock l(&mu_);
  std::map<std::string, Entry>::iterator it;
  while (true) {
    it = open_.find(info.name);
    if (it == open_.end()) break;
    if (it->second.closed) return Status::Aborted("the server is shutting down");
    if (it->second.state == Entry::State::kOpen) break;
    changed_.Wait(&mu_);  // its open or close is running: wait for the outcome
  }
  if (it == open_.end()) {
    // This thread opens it; others asking for it wait on the kOpening entry.
    it = open_.emplace(info.name, Entry{}).first;
    l.Unlock();
    auto opened = [&]() -> Result<std::unique_ptr<volume::Volume>> {
      if (info.name.find('@') != std::string::npos) {  // a snapshot: see the header
        volume::OpenOptions ro = open_opts_;
        ro.read_only = true;
        return volume::Volume::Open(store_, info.name, ro);
      }
      return opener_ ? opener_(info.name) : volume::Volume::Open(store_, info.name, open_opts_);
    }();
    l.Lock();
    if (!opened.ok()) {
      // The client gets a generic message: the detail is for whoever runs the server.
      spdlog::warn("nbd: cannot open volume '{}': {}", info.name, opened.status().ToString());
      open_.erase(it);
      changed_.SignalAll();
      return opened.status();
    }
    std::unique_ptr<volume::Volume> v = std::move(*opened);
    spdlog::info("nbd: opened volume '{}' ({} bytes)", info.name, v->size());
    it->second.exp = std::make_shared<VolumeExport>(v.get(), read_only_ || info.read_only,
                                                    info.name, store_, &builds_);
    it->second.vol = std::move(v);
    it->second.state = Entry::State::kOpen;
    changed_.SignalAll();
  }
  it->second.refs++;
  std::shared_ptr<VolumeExport> keep = it->second.exp;
  // The returned pointer's deleter drops this connection's reference.
  return std::shared_ptr<Export>(keep.get(), [this, n = info.name, keep](Export*) mutable {
    keep.reset();
    Release(n);
  });
}

void VolumeProvider::Release(const std::string& name) {
  MutexLock l(&mu_);
  auto it = open_.find(name);
  if (it == open_.end()) return;  // closed by CloseAll
  if (--it->second.refs > 0) return;
  if (it->second.closed) {
    open_.erase(it);
    changed_.SignalAll();
    return;
  }
  // Closed outside mu_: opens of other volumes go on meanwhile; an open of
  // this one waits for the kClosing entry to go, then opens it anew.
  it->second.state = Entry::State::kClosing;
  volume::Volume* v = it->second.vol.get();
  l.Unlock();
  Status s = v->Close();
  if (s.ok()) {
    spdlog::info("nbd: closed volume '{}' (last connection gone)", name);
  } else {
    spdlog::error("nbd: closing volume '{}': {}", name, s.ToString());
  }
  l.Lock();
  open_.erase(it);
  changed_.SignalAll();
}

Status VolumeProvider::FlushAll() {
  MutexLock l(&mu_);
  Status first;
  for (auto& [name, e] : open_) {
    if (e.closed || e.state != Entry::State::kOpen) continue;
    Status s = e.vol->Flush();
    if (!s.ok()) {
      spdlog::error("nbd: flushing volume '{}': {}", name, s.ToString());
      if (first.ok()) first = s;
    }
  }
  return first;
}

Status VolumeProvider::CloseAll() {
  MutexLock l(&mu_);
  // Let every open and close in progress finish first.
  while (std::any_of(open_.begin(), open_.end(),
                     [](const auto& e) { return e.second.state != Entry::State::kOpen; })) {
    changed_.Wait(&mu_);
  }
  Status first;
  for (auto& [name, e] : open_) {
    if (e.closed) continue;
    Status s = e.vol->Close();
    if (!s.ok()) {
      spdlog::error("nbd: closing volume '{}': {}", name, s.ToString());
      if (first.ok()) first = s;
    } else {
      spdlog::info("nbd: closed volume '{}'", name);
    }
  }
  // Exports still referenced keep pointing at closed volumes, whose calls
  // fail; their Volume objects stay until the last reference goes.
  for (auto it = open_.begin(); it != open_.end();) {
    it->second.closed = true;
    if (it->second.refs == 0) {
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
  return first;
}

size_t VolumeProvider::open_volumes() {
  MutexLock l(&mu_);
  return open_.size();
}

}  // namespace hbiss::nbd
