#include "volume/epoch.h"

#include <algorithm>
#include <span>

#include <spdlog/spdlog.h>

#include "volume/log_format.h"

namespace hbiss::volume {
namespace {

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The three directories of a log, in the order a version-1 log is moved:
// segments first, so that a reader that still resolves the old layout
// finds its segments gone (NotFound: it resolves again) rather than a
// checkpoint without them.
constexpr const char* kLogSubdirs[] = {"seg", "sum", "ckpt"};

Result<bool> DirExists(store::Store* store, const std::string& dir) {
  auto l = store->List(dir);
  if (l.ok()) return true;
  if (l.status().IsNotFound()) return false;
  return l.status();
}

// Step 1 of StartEpoch: moves a version-1 log into epoch/0 (see epoch.h).
Status MoveVersion1Log(store::Store* store, const std::string& name, const VolumeMeta& meta) {
  if (meta.version < 2) {
    VolumeMeta m = meta;
    m.version = kMetaVersion;
    HBISS_RETURN_IF_ERROR(store->Put(layout::MetaName(name), AsBytes(EncodeMeta(m)))
                              .WithContext("volume " + name + ": writing meta version 2"));
  }
  const layout::LogDir staging = layout::EpochDir(name, 0);
  bool made = false;
  for (const char* sub : kLogSubdirs) {
    const std::string from = layout::VolDir(name) + "/" + sub;
    HBISS_ASSIGN_OR_RETURN(bool exists, DirExists(store, from));
    if (!exists) continue;
    if (!made) {
      // RenameDir needs the parent of its target: an object makes it.
      HBISS_RETURN_IF_ERROR(store->Put(layout::OwnerName(staging), {}));
      made = true;
    }
    Status s = store->RenameDir(from, staging.path + "/" + sub);
    if (s.IsAlreadyExists()) {
      return Status::Corruption("volume " + name + ": " + from + " exists both in the " +
                                "version-1 layout and in " + staging.path);
    }
    HBISS_RETURN_IF_ERROR(s.WithContext("volume " + name + ": moving " + from));
    spdlog::info("volume {}: moved {} into {}", name, from, staging.path);
  }
  return Status::OK();
}

}  // namespace

Result<std::vector<uint64_t>> ListEpochs(store::Store* store, const std::string& name) {
  std::vector<uint64_t> epochs;
  auto list = store->List(layout::EpochsDir(name));
  if (!list.ok()) {
    if (list.status().IsNotFound()) return epochs;
    return list.status().WithContext("volume " + name + ": listing epochs");
  }
  for (const auto& o : *list) {
    uint64_t e;
    if (o.is_dir && o.name.size() == 16 && ParseHex16(o.name, &e)) epochs.push_back(e);
  }
  std::sort(epochs.begin(), epochs.end());
  return epochs;
}

Result<CurrentLog> ResolveLog(store::Store* store, const std::string& name) {
  HBISS_ASSIGN_OR_RETURN(std::vector<uint64_t> epochs, ListEpochs(store, name));
  CurrentLog c;
  if (!epochs.empty() && epochs.back() >= 1) {
    c.epoch = epochs.back();
    c.dir = layout::EpochDir(name, c.epoch);
  } else {
    c.dir = layout::V1LogDir(name);
  }
  return c;
}

std::string CurrentLogPath(store::Store* store, const std::string& name) {
  auto c = ResolveLog(store, name);
  return c.ok() ? c->dir.path : "";
}

Result<uint64_t> StartEpoch(store::Store* store, const std::string& name, const VolumeMeta& meta,
                            const std::string* owner) {
  HBISS_ASSIGN_OR_RETURN(std::vector<uint64_t> epochs, ListEpochs(store, name));
  if (epochs.empty() || epochs.back() == 0) HBISS_RETURN_IF_ERROR(MoveVersion1Log(store, name, meta));

  // The fence. Only a holder of the lock renames, but a holder whose lock
  // was broken may not know yet: retry a few times on a lost race.
  uint64_t next = 0;
  Status last;
  for (int attempt = 0; attempt < 5 && next == 0; attempt++) {
    HBISS_ASSIGN_OR_RETURN(epochs, ListEpochs(store, name));
    if (epochs.empty()) {
      next = 1;  // never opened for writing: nothing to rename
      break;
    }
    const uint64_t e = epochs.back();
    if (e + 1 == 0) return Status::NotSupported("volume " + name + ": epochs exhausted");
    last = store->RenameDir(layout::EpochDir(name, e).path, layout::EpochDir(name, e + 1).path);
    if (last.ok()) {
      next = e + 1;
    } else if (!last.IsAlreadyExists() && !last.IsNotFound()) {
      return last.WithContext("volume " + name + ": starting epoch " + std::to_string(e + 1));
    }
  }
  if (next == 0) return last.WithContext("volume " + name + ": starting a new epoch");

  const layout::LogDir dir = layout::EpochDir(name, next);
  if (owner != nullptr) {
    HBISS_RETURN_IF_ERROR(store->Put(layout::OwnerName(dir), AsBytes(*owner))
                              .WithContext("volume " + name + ": writing the owner"));
  } else {
    // The renamed directory carries the previous epoch's owner object.
    Status d = store->Delete(layout::OwnerName(dir));
    if (!d.ok() && !d.IsNotFound()) return d.WithContext("volume " + name + ": owner object");
  }

  // Garbage: lower epochs (a crash between steps, a fenced holder's late
  // Puts) and what a version-1 layout left (nothing reads either).
  HBISS_ASSIGN_OR_RETURN(epochs, ListEpochs(store, name));
  for (uint64_t e : epochs) {
    if (e >= next) break;
    Status d = store->DeleteDir(layout::EpochDir(name, e).path);
    if (!d.ok()) spdlog::warn("volume {}: deleting stale epoch {}: {}", name, e, d.ToString());
  }
  for (const char* sub : kLogSubdirs) {
    Status d = store->DeleteDir(layout::VolDir(name) + "/" + sub);
    if (!d.ok()) spdlog::warn("volume {}: deleting {}: {}", name, sub, d.ToString());
  }
  return next;
}

}  // namespace hbiss::volume
