// The segment-store interface: the only way the volume engine touches storage.
//
// A Store holds named objects in a hierarchy of '/'-separated names such as
// "volumes/vm1/seg/0000000000000001". Names are relative, never empty, never
// contain "." or ".." components, empty components, NUL or a leading '/'.
// A name is at most 4096 bytes and each component at most 255 bytes.
// Components starting with ".hbiss-" (kReservedPrefix) are reserved for the
// backends' own temporary files and never appear in List.
// Directories exist implicitly: creating "a/b/c" makes "a" and "a/b"; they
// stay after their last object is deleted, until DeleteDir. A name is an
// object or a directory, never both.
// Every method taking a name fails with InvalidArgument for a bad one.
//
// Two kinds of object:
//  * Segments are written once, front to back, by a SegmentWriter, and never
//    change afterwards (HDFS files are append-only). They are read at random
//    offsets by a SegmentReader.
//  * Small objects (metadata, checkpoints) are written whole by Put, which
//    atomically replaces any previous version and is durable when it returns.
//
// Durability levels (shared/STYLE.md practice 5):
//  * Flush: appended bytes survive a crash of this process (HDFS hflush;
//    write(2) into the page cache).
//  * Sync: appended bytes survive power loss (HDFS hsync; fdatasync).
//
// Thread safety: a Store and a SegmentReader may be used from many threads at
// once. A SegmentWriter is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace hbiss::store {

// Appends to one segment. Destroying a writer without Close() abandons it:
// bytes that were flushed or synced stay, the rest may be lost.
class SegmentWriter {
 public:
  SegmentWriter() = default;
  SegmentWriter(const SegmentWriter&) = delete;
  SegmentWriter& operator=(const SegmentWriter&) = delete;
  virtual ~SegmentWriter() = default;

  // Appends data after everything appended before. The bytes may sit in a
  // buffer until Flush, Sync or Close. On error the writer is broken: every
  // later call fails, and the segment holds some prefix of what was appended.
  virtual Status Append(std::span<const uint8_t> data) = 0;

  // Makes everything appended so far survive a crash of this process and be
  // visible to SegmentReaders opened afterwards.
  virtual Status Flush() = 0;

  // Makes everything appended so far survive power loss. Implies Flush.
  virtual Status Sync() = 0;

  // Syncs and closes the segment. No call but the destructor may follow.
  virtual Status Close() = 0;

  // Bytes appended so far (whether or not flushed).
  virtual uint64_t Size() const = 0;
};

// Reads one segment (or small object) at random offsets.
class SegmentReader {
 public:
  SegmentReader() = default;
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;
  virtual ~SegmentReader() = default;

  // Reads up to out.size() bytes at `offset` into out. Returns the number of
  // bytes read: fewer than asked only at the end of the object, 0 at or past
  // it. Data that fails a checksum in the backend is an error, never returned.
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> out) = 0;

  // The object's length as of when it was opened.
  virtual uint64_t Size() const = 0;
};

// How long a lock may go without a successful renewal before its holder
// must consider it lost: two thirds of HDFS's lease soft limit (60 s), after
// which another process may take the lock without asking
// (doc/ownership.md, self-fencing).
inline constexpr int kLeaseSelfFenceSeconds = 40;

// A held exclusive lock on a name; released when destroyed.
class Lock {
 public:
  Lock() = default;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  virtual ~Lock() = default;
  // OK while the lock is surely still held. An IOError once the holder can
  // no longer be sure: on HDFS, when no lease renewal of its client
  // succeeded for kLeaseSelfFenceSeconds. Cheap (no I/O); called before
  // acknowledging writes. Backends whose locks cannot be lost while the
  // process lives (local, memory): always OK.
  virtual Status Check() const { return Status::OK(); }
};

struct ObjectInfo {
  std::string name;  // the last component only
  uint64_t size = 0;
  bool is_dir = false;
};

class Store {
 public:
  Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  virtual ~Store() = default;

  // Creates a new, empty segment for appending. AlreadyExists if `name`
  // exists; the existing object is left unchanged.
  virtual Result<std::unique_ptr<SegmentWriter>> Create(const std::string& name) = 0;

  // Opens an existing object for reading. NotFound if it does not exist.
  // Never disturbs a writer: a segment still being appended to, by this
  // process or another (a volume another host serves), reads as at least
  // every byte its writer had flushed when Open was called, and the writer
  // carries on unaffected. A segment whose writer crashed reads the same way.
  virtual Result<std::unique_ptr<SegmentReader>> Open(const std::string& name) = 0;

  // Open, after taking `name` away from a writer in another process that
  // may still have it open (a crashed or fenced holder of the lock guarding
  // it): once this returns OK, that writer's appends, flushes and syncs can
  // no longer add to the object, its size is final, and the reader sees at
  // least every byte the writer flushed. Only a takeover may call it: the
  // caller must hold the lock that guards `name` (for a segment, its
  // volume's lock, perhaps taken with BreakLock), because it ends another
  // process's writer. A writer of this process is left alone (read as
  // Open). The default is Open, right for backends whose writers cannot
  // outlive the lock of their process (local, memory). HDFS overrides it: a
  // file stays open, appendable by its old writer, until its lease is
  // recovered, which this does (recoverLease, then waits until closed).
  virtual Result<std::unique_ptr<SegmentReader>> OpenForTakeover(const std::string& name) {
    return Open(name);
  }

  // Writes `data` as the whole content of `name`, atomically replacing any
  // previous version: after a crash the name holds the old or the new bytes,
  // never a mix. Durable (synced) when it returns OK.
  virtual Status Put(const std::string& name, std::span<const uint8_t> data) = 0;

  // Reads a whole object. NotFound if absent. Fails with InvalidArgument if
  // it is larger than max_size. A Get that races a Put of the same name returns
  // the old or the new bytes whole, never a mix and never an error.
  virtual Result<std::string> Get(const std::string& name, uint64_t max_size = 64ull << 20);

  // Lists the direct children of directory `dir` ("" is the root), sorted by
  // name. NotFound if `dir` does not exist.
  virtual Result<std::vector<ObjectInfo>> List(const std::string& dir) = 0;

  // Size of an object, or NotFound.
  virtual Result<uint64_t> Stat(const std::string& name) = 0;

  // Deletes an object. NotFound if it does not exist. Readers already open
  // may keep reading it.
  virtual Status Delete(const std::string& name) = 0;

  // Deletes a directory and everything under it. OK if it does not exist.
  virtual Status DeleteDir(const std::string& dir) = 0;

  // Moves directory `from`, with everything under it, to the new name `to`
  // in one atomic step: every caller sees all of it under one name or all of
  // it under the other, and after a crash it is under one of them whole.
  // Durable when it returns OK. Nothing is replaced: AlreadyExists if `to`
  // exists (object or directory). NotFound if `from` does not exist or the
  // parent directory of `to` does not. InvalidArgument if `from` is an
  // object, or `to` is `from` or lies under it.
  // Writers, readers and locks opened before keep working on the moved
  // objects, under their new names (a file held by inode); calls by name
  // with the old names fail with NotFound (or create new objects there).
  // This is how a volume fences a holder that lost it (doc/ownership.md).
  virtual Status RenameDir(const std::string& from, const std::string& to) = 0;

  // Takes an exclusive lock named `name`, held until the Lock is destroyed or
  // the process dies. Busy if another holder has it (another Lock object, in
  // this process or another, even through a different Store on the same
  // backend). Whether a lock also leaves an object named `name` is up to the
  // backend (the local one keeps an empty lock file there): never store data
  // under a lock's name. The Lock must not outlive the Store.
  virtual Result<std::unique_ptr<Lock>> TryLock(const std::string& name) = 0;

  // Takes lock `name` away from a holder that is gone, so a failover host
  // need not wait. OK when the lock can be taken afterwards. The caller must
  // know the old holder is dead: its bytes already in the store stay, and a
  // live holder is not fenced from other objects it has open. The default,
  // right for backends whose locks die with their holder (local, memory),
  // breaks nothing: OK if the lock is free, Busy while a live holder has it.
  // HDFS overrides it: a writer killed on another host keeps its lease until
  // the NameNode's soft limit (60 s); BreakLock recovers the lease now.
  virtual Status BreakLock(const std::string& name);

  // A URI that names this store, e.g. "file:///var/lib/hbiss".
  virtual std::string Uri() const = 0;

  // A hint that the caller will not read `name` soon: a backend that keeps
  // the object's bytes cached on this host may drop them, so the memory
  // goes to data that is still read. It never changes the object or what a
  // later read returns, and errors are ignored (a hint can't fail). Only
  // bytes that are already durable may be dropped. The default does nothing,
  // which is right for backends without a local cache (memory, HDFS).
  virtual void DropCache(const std::string& name) { (void)name; }

  // True when reads are served from memory on this host after the first one
  // (the local store: the OS page cache; the memory store), so a layer above
  // need not cache what it reads. False for remote stores such as HDFS.
  virtual bool CachesReadsLocally() const { return false; }

  // True when this process's writes can fail with NoSpace because space on
  // a device it shares ran out, and deleting an object gives the space back
  // at once (the local store: a file system). A layer above may then keep a
  // reserve object to delete when it must write on a full device (the
  // volume's `reserve`, doc/volume_meta.md). False (the default) for stores
  // where that does not help: memory, and HDFS, whose space is the
  // cluster's and whose deletes free blocks asynchronously on the DataNodes.
  virtual bool MayRunOutOfSpace() const { return false; }

  // Deletes the temporary objects this backend's Put makes in directory
  // `dir` (never listed) that a crash in the middle of a Put left behind,
  // and returns how many. Call it only while no Put into `dir` can be
  // running anywhere (a volume's lock ensures that for its directories). A
  // missing `dir` has none. The default, for backends whose Put leaves
  // nothing behind (memory), deletes nothing.
  virtual Result<uint64_t> RemoveTempLeftovers(const std::string& dir) {
    (void)dir;
    return uint64_t{0};
  }

  // The name prefix of the temporary objects behind RemoveTempLeftovers.
  static constexpr std::string_view kTempPrefix = ".hbiss-tmp-";

 protected:
  // Get's second half: reads all of an opened object `name` (max_size as in Get).
  static Result<std::string> ReadWhole(SegmentReader& reader, const std::string& name,
                                       uint64_t max_size);
};

// Checks a name against the rules at the top of this file: OK or
// InvalidArgument naming the problem.
Status ValidateName(std::string_view name);

// RenameDir's argument rules that need no store: both names valid, `to` is
// not `from` and not under it. OK or InvalidArgument.
Status ValidateRename(std::string_view from, std::string_view to);

// Name components starting with this are reserved for backends.
inline constexpr std::string_view kReservedPrefix = ".hbiss-";

// Opens the store named by `uri`:
//   /path, file:///path  a local directory (created if missing only when
//                        create_if_missing); a string with no "scheme:" is a
//                        path, relative ones resolved against the working
//                        directory; file://localhost/path is accepted and
//                        %XX escapes are decoded;
//   mem://NAME           a process-wide in-memory store, shared by name
//                        (NAME: letters, digits, '.', '_', '-'); made empty
//                        on first use whatever create_if_missing says;
//   hdfs://host:port/dir a directory in HDFS (when built in).
// InvalidArgument for a URI it cannot parse or whose scheme is unknown,
// NotFound for a missing local directory, IOError when the directory is not
// writable. Thread-safe. The returned Store is independent of the caller.
Result<std::unique_ptr<Store>> OpenStore(const std::string& uri, bool create_if_missing = false);

// Lets a higher layer (hdfs/) add a URI scheme to OpenStore without store/
// depending on it. `factory` receives the whole URI. Call before OpenStore,
// from main(). The scheme is case-insensitive; registering it again
// replaces the factory, and a null factory removes it. "file" and "mem" are
// built in and cannot be overridden.
using StoreFactory = Result<std::unique_ptr<Store>> (*)(const std::string& uri,
                                                        bool create_if_missing);
void RegisterScheme(const std::string& scheme, StoreFactory factory);

}  // namespace hbiss::store
