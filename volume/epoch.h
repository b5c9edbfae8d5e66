// Epoch directories (doc/ownership.md "Objects" and "Fencing";
// doc/volume_meta.md): which directory holds a volume's log, how a writable
// open starts a new epoch (the fence), and the move of a version-1 log into
// epoch/.
//
//   volumes/NAME/epoch/<E>/{seg,sum,ckpt,owner}   E: 16 hex digits
//
// The highest epoch directory E >= 1 is current. A lower one is garbage a
// crash (or a fenced holder's late Put) left; the next writable open deletes
// it. A volume with no epoch directory >= 1 has its log in volumes/NAME
// itself (a version-1 volume, or one never opened for writing since it was
// created): epoch 0. epoch/0000000000000000 exists only while a writable
// open moves a version-1 log: readers ignore it, and the fence's rename
// (0 -> 1) publishes the moved log in one atomic step.
//
// Pure store calls; no state. Thread-safe as the store is. The functions
// that change directories (StartEpoch) need the volume's lock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/layout.h"
#include "volume/volume_meta.h"

namespace hbiss::volume {

// The log a volume has now.
struct CurrentLog {
  uint64_t epoch = 0;  // 0: no epoch directory (the log is in volumes/NAME)
  layout::LogDir dir;  // EpochDir(name, epoch), or V1LogDir(name) for epoch 0
};

// The epoch directories under volumes/NAME/epoch, increasing (0 included,
// names that are not 16 hex digits skipped). Empty when there are none.
Result<std::vector<uint64_t>> ListEpochs(store::Store* store, const std::string& name);

// Resolves the current log of volume `name` (the highest epoch >= 1). Reads
// only; never fails for a missing directory. Errors: the store's List.
Result<CurrentLog> ResolveLog(store::Store* store, const std::string& name);

// ResolveLog's directory as a path ("volumes/NAME/epoch/<E>", or
// "volumes/NAME"), or "" when the store fails: for tools and tests.
std::string CurrentLogPath(store::Store* store, const std::string& name);

// A writable open's (and a lock break's) step, with the volume's lock held:
//  1. a version-1 meta is rewritten as version 2 (so older builds refuse the
//     volume before its log moves), and a version-1 log is moved into
//     epoch/0000000000000000 (one RenameDir per seg/, sum/, ckpt/; a step a
//     crash interrupted is redone by the next call);
//  2. the fence: RenameDir(epoch/<E>, epoch/<E+1>) for the highest E (retried
//     when the rename races another: AlreadyExists or NotFound), or, with no
//     epoch directory at all, epoch/0000000000000001 is created;
//  3. the owner object of E+1 is written with *owner (null: deleted, the
//     volume is owned by nobody);
//  4. every epoch directory below E+1 and a version-1 log's leftovers are
//     deleted (garbage: nothing reads them).
// Returns E+1. On error nothing acknowledged is lost: each step leaves the
// log whole under one of its names, and the next call goes on from there.
Result<uint64_t> StartEpoch(store::Store* store, const std::string& name, const VolumeMeta& meta,
                            const std::string* owner);

}  // namespace hbiss::volume
