// The hbiss command's subcommands. main.cc builds the CLI11 app and asks each
// file below to add its subcommands. A subcommand's callback does the work and
// stores the process exit code in *exit_code (0 success, 1 failure, 2 usage).
// Errors are printed as one line on stderr: "hbiss: <what>: <why>".
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "store/store.h"
#include "util/status.h"
#include "volume/trash.h"

namespace hbiss::cli {

struct GlobalOptions {
  std::string store_uri;  // --store; empty means the default local store
  bool verbose = false;
};

// The default store directory: $HBISS_STORE if set, else
// $XDG_DATA_HOME/hbiss, else ~/.local/share/hbiss.
std::string DefaultStoreUri();

// create, ls, info, rm, clean, import, export (cmd_volume.cc).
void AddVolumeCommands(CLI::App& app, GlobalOptions& g, int* exit_code);
// fsck (cmd_fsck.cc): the consistency check; exit codes as qemu-img check.
void AddFsckCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
// clone, flatten, children (cmd_clone.cc): clones of snapshots.
void AddCloneCommands(CLI::App& app, GlobalOptions& g, int* exit_code);
// serve (cmd_serve.cc).
void AddServeCommand(CLI::App& app, GlobalOptions& g, int* exit_code);
// dfs ls|put|get|cat|rm|mkdir|stat (cmd_dfs.cc). main() calls it before any
// command runs, so it is also the place to RegisterScheme("hdfs", ...).
void AddDfsCommand(CLI::App& app, GlobalOptions& g, int* exit_code);

// status, lock break (cmd_cluster.cc): volumes shared by several servers.
void AddClusterCommands(CLI::App& app, GlobalOptions& g, int* exit_code);
// status without a volume (cmd_server_status.cc): asks `server` (a peer
// endpoint HOST:PORT), or every server the store's records name, for its
// status report; prints it as text or, with `json`, a JSON array of the
// servers' reports. 1 when no server answered.
int RunServerStatus(const GlobalOptions& g, const std::string& server, bool json,
                    int timeout_ms);
// snap create|ls|rm|rename|rollback (cmd_snap.cc).
void AddSnapCommands(CLI::App& app, GlobalOptions& g, int* exit_code);
// trash ls|purge|restore (cmd_trash.cc).
void AddTrashCommands(CLI::App& app, GlobalOptions& g, int* exit_code);

// How the CLI deletes a volume's trashed snapshots: through the server that
// owns it, if one does (cluster::RunSnapshotOp), else here (cmd_trash.cc).
volume::SnapTrashPurger TrashPurger(store::Store* store);
// After a clone of `parent`'s snapshots was removed or flattened:
// volume::PurgeTrash of `parent` with TrashPurger. A failure is a warning on
// stderr (the next purge finishes it), not the command's failure.
void PurgeTrashAfter(store::Store* store, const std::string& parent);

// rbd's snapshot timestamp: ctime's format, local time (cmd_snap.cc).
std::string CTime(int64_t t);
// du, diff (cmd_space.cc): space accounting and change lists; read only.
void AddSpaceCommands(CLI::App& app, GlobalOptions& g, int* exit_code);

// Opens the store named by --store, or the default local store. Commands that
// write may create the default store's directory; an explicit --store must
// already exist (cmd_volume.cc).
Result<std::unique_ptr<store::Store>> OpenStoreFor(const GlobalOptions& g, bool writing);

// Parses a byte size: plain bytes or a K, M, G or T suffix (binary units;
// "KiB" style also accepted). InvalidArgument for junk, zero, overflow, or a
// size above `max`, with a message fit for the user (cmd_volume.cc).
Result<uint64_t> ParseSize(const std::string& text, uint64_t max);

// A status as one line (its newlines become spaces): every command's error is
// the single line `hbiss: CONTEXT: STATUS` (cmd_volume.cc).
std::string OneLine(const Status& st);
// Prints that line on stderr and returns 1, the failure exit code.
int Fail(const std::string& context, const Status& st);

// Names joined with `sep` ("a, b" in sentences, "a,b" in a table column).
std::string JoinNames(const std::vector<std::string>& names, const char* sep = ", ");

// Unix seconds `t` as UTC "YYYY-MM-DDTHH:MM:SSZ", or `unset` when t <= 0.
std::string UtcTime(int64_t t, const char* unset);

}  // namespace hbiss::cli
