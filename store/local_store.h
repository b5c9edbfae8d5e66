// LocalStore: the default backend, a directory on a local file system.
//
// Each object is a regular file at <root>/<name>; directories are real
// directories. Durability levels map to POSIX as follows:
//  * Append is write(2) straight to the file (no user-space buffer), so the
//    bytes are in the kernel as soon as Append returns; Flush is therefore a
//    health check only, and appended bytes survive a crash of this process.
//  * Sync is fdatasync(2); Close syncs first. Create fsyncs the parent
//    directory so a created segment survives power loss even if empty.
//  * Put writes a temporary file ".hbiss-tmp-..." in the target's directory,
//    fsyncs it, rename(2)s it over the target and fsyncs the directory: after
//    a crash the name holds the old or the new bytes, never a mix. The old
//    file is never deleted first. Temporary files left by a crash are hidden
//    from List (reserved prefix, see store.h).
//  * Delete and DeleteDir fsync the parent directory; RenameDir fsyncs both.
// TryLock uses flock(LOCK_EX | LOCK_NB) on a file at <root>/<name>. flock
// locks belong to open file descriptions, so two TryLock calls conflict even
// inside one process, and the lock dies with the process.
//
// Errors carry the full path and strerror text. Thread safety: as for every
// Store (see store/store.h).
#pragma once

#include <memory>
#include <string>

#include "store/store.h"

namespace hbiss::store {

class LocalStore final : public Store {
 public:
  // Opens the store rooted at directory `path` (absolute, or relative to the
  // working directory). NotFound if it does not exist and !create_if_missing
  // (otherwise it and its parents are created); InvalidArgument if it is not
  // a directory or the path is empty; IOError naming the path if a file
  // cannot be created in it (checked with access(2) and a probe file).
  static Result<std::unique_ptr<LocalStore>> Open(const std::string& path,
                                                  bool create_if_missing);

  Result<std::unique_ptr<SegmentWriter>> Create(const std::string& name) override;
  Result<std::unique_ptr<SegmentReader>> Open(const std::string& name) override;
  Status Put(const std::string& name, std::span<const uint8_t> data) override;
  Result<std::vector<ObjectInfo>> List(const std::string& dir) override;
  Result<uint64_t> Stat(const std::string& name) override;
  Status Delete(const std::string& name) override;
  Status DeleteDir(const std::string& dir) override;
  // renameat2(RENAME_NOREPLACE), then fsyncs both parent directories.
  Status RenameDir(const std::string& from, const std::string& to) override;
  Result<std::unique_ptr<Lock>> TryLock(const std::string& name) override;
  // "file://" + the absolute root, with '%', '?', '#', spaces and control
  // bytes percent-encoded, so OpenStore(Uri()) reopens the same directory.
  std::string Uri() const override;
  // posix_fadvise(POSIX_FADV_DONTNEED) on the file: the kernel drops its
  // clean page-cache pages (dirty ones stay until written back).
  void DropCache(const std::string& name) override;
  bool CachesReadsLocally() const override { return true; }  // the page cache
  bool MayRunOutOfSpace() const override { return true; }  // ENOSPC, EDQUOT
  Result<uint64_t> RemoveTempLeftovers(const std::string& dir) override;

  // The absolute root directory, without a trailing '/'.
  const std::string& root() const { return root_; }

  // The file-system path of object `name` (not validated).
  std::string PathOf(const std::string& name) const { return root_ + "/" + name; }

 private:
  explicit LocalStore(std::string root) : root_(std::move(root)) {}

  // Creates the missing parent directories of `name`, fsyncing the
  // directory that gained each new entry.
  Status MakeParents(const std::string& name);

  const std::string root_;
};

// OpenStore's handler for plain paths and file:// URIs (already decoded).
Result<std::unique_ptr<Store>> OpenLocalStore(const std::string& path, bool create_if_missing);

}  // namespace hbiss::store
