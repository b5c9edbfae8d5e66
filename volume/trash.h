// The trash (doc/snapshots.md "Trash"): rbd clone v2's way of removing what
// clones still use. Nothing is refused by default; the trash is asked for
// (`hbiss snap rm --trash`, `hbiss rm --trash`):
//
//  * a trashed snapshot stays in its volume's registry with "trashed": true
//    (snapshot_registry.h): its map object and its pins stay, so its clones
//    read on; its name is free, and it can no longer be opened, exported or
//    cloned (Volume::TrashSnapshot);
//  * a trashed volume keeps everything (its log, its trashed snapshots) and
//    gets the object volumes/NAME/trash: it is gone from Volume::List, every
//    Open refuses it, and its name cannot be reused while it is there.
//
// Each is deleted with its last clone: removing or flattening a clone drops
// its child record, then PurgeTrash on its parent deletes what no clone uses
// any more. Every step can be repeated, so a crash between the two is
// finished by the next purge of that parent (the parent's next writable
// open, `hbiss trash ls` / `purge`, the next removal or flatten of one of
// its clones, a Create or Clone that wants the trashed volume's name).
//
// Functions here touch the store only; they are safe to call from any
// thread. A volume's trashed snapshots are its owner's to delete: callers
// pass the route (SnapTrashPurger) to the owner.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"

namespace hbiss::volume {

// Every volume with a meta, trashed or not, sorted (Volume::List is this
// without the trashed ones).
Result<std::vector<std::string>> ListVolumesWithTrash(store::Store* store);

// Whether volume `name` is in the trash (its trash object exists).
Result<bool> InTrash(store::Store* store, const std::string& name);

// OK unless volume `name` is in the trash; then NotFound, saying so and what
// to do. Volume::Open calls it.
Status RefuseIfTrashed(store::Store* store, const std::string& name);

// Create and Clone: OK when no volume is named `name`. AlreadyExists when
// one is; for a trashed one the message names the clones that keep it and
// says the name cannot be reused until they are gone. A trashed volume that
// no clone uses any more (its purge was cut short) is deleted first, and the
// name is then free.
Status CheckNameFree(store::Store* store, const std::string& name);

// What TrashVolume did.
struct TrashVolumeResult {
  bool trashed = false;  // the volume is in the trash (false: it was deleted)
  std::vector<std::string> removed_snaps;  // snapshots no clone used: deleted
  std::vector<std::string> trashed_snaps;  // snapshots clones use: trashed
  std::vector<std::string> children;       // the clones the volume waits for
};

// `hbiss rm --trash`: opens volume `name` writable here (owner
// {"server":"hbiss-rm"}), removes its snapshots no clone uses, trashes those
// clones use, and then either deletes the volume (nothing was trashed) or,
// still holding its lock, writes its trash object. NotFound if absent; Busy
// if it is open for writing elsewhere (the message says to stop serving it);
// AlreadyExists if it is already in the trash and clones still use it.
// A crash half way leaves the volume live with some snapshots gone or
// trashed: running it again finishes.
Result<TrashVolumeResult> TrashVolume(store::Store* store, const std::string& name);

// `hbiss trash restore`: takes volume `name` out of the trash (its trashed
// snapshots stay trashed and still go with their last clone). NotFound if it
// is not in the trash; Busy if its lock is held.
Status RestoreVolume(store::Store* store, const std::string& name);

// One thing in the trash.
struct TrashEntry {
  std::string volume;
  std::string snap;      // a trashed snapshot's name; empty: the volume itself
  uint64_t snap_id = 0;  // the snapshot's id (0 for a volume)
  int64_t created = 0;   // unix seconds: when the snapshot or volume was created
  // The clones it waits for (a volume: the clones of any of its snapshots),
  // sorted. Empty: nothing keeps it any more; the next purge deletes it.
  std::vector<std::string> children;
};

// Everything in the trash, by volume name; a trashed volume comes before
// its trashed snapshots, which come in creation order. Reads only.
Result<std::vector<TrashEntry>> ListTrash(store::Store* store);

// Deletes the trashed snapshots of a volume that is not trashed itself, as
// its owner: cluster::RunSnapshotOp (SNAP_REMOVE with purge_trash) in hbiss,
// PurgeSnapshotTrashHere where nobody serves volumes.
using SnapTrashPurger = std::function<Status(const std::string& volume)>;

// The purger for a volume no server has: opens it writable here (which
// purges, Volume::PurgeTrash) and closes it. Busy if someone has it open for
// writing; that owner then purges at its next PurgeTrash or open.
Status PurgeSnapshotTrashHere(store::Store* store, const std::string& volume);

// Deletes what in `volume`'s trash no clone uses any more, after one of its
// clones was removed or flattened (or to finish a purge a crash cut short).
// A trashed volume that no clone uses is deleted whole (Volume::Remove),
// and then its own parent is purged the same way, up the chain. A volume
// that is not trashed is handed to `purge` only when the store shows a
// trashed snapshot of it that no clone uses. OK when there is nothing to do,
// when `volume` is gone, or when a trashed volume's lock is held (whoever
// holds it is removing or restoring it).
Status PurgeTrash(store::Store* store, const std::string& volume, const SnapTrashPurger& purge);

// PurgeTrash of every volume with something in the trash. Tries them all;
// returns the first error.
Status PurgeAllTrash(store::Store* store, const SnapTrashPurger& purge);

}  // namespace hbiss::volume
