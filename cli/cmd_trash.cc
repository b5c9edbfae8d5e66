// The trash (volume/trash.h, doc/snapshots.md "Trash"), rbd clone v2 style:
//   hbiss trash ls [--json]     what waits in the trash, and for which clones
//   hbiss trash purge           delete what no clone uses any more
//   hbiss trash restore VOL     take a volume out of the trash
// Things get there through `hbiss snap rm --trash` and `hbiss rm --trash`,
// and leave with their last clone (`hbiss rm CLONE`, `hbiss flatten CLONE`
// call PurgeTrashAfter). A volume's trashed snapshots are deleted by its
// owner when a server owns it (cluster::RunSnapshotOp, SNAP_REMOVE with
// purge_trash), else here.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cluster/node.h"
#include "volume/trash.h"
#include "volume/volume.h"

namespace hbiss::cli {
namespace {

// As cmd_snap.cc: the owner may first have to acquire the volume.
constexpr int kPurgeOpTimeoutMs = 200000;
constexpr int kPurgePingTimeoutMs = 2000;

int TrashFail(const std::string& context, const Status& st) { return Fail("trash " + context, st); }

int RunTrashLs(const GlobalOptions& g, bool json) {
  if (!g.verbose) spdlog::set_level(spdlog::level::warn);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return TrashFail("ls", store.status());
  // What a crash or a busy owner left to delete goes first (a failure is
  // only a warning: the list shows it as waiting for nothing).
  if (Status s = volume::PurgeAllTrash(store->get(), TrashPurger(store->get())); !s.ok()) {
    std::fprintf(stderr, "hbiss: trash ls: warning: %s\n", s.ToString().c_str());
  }
  auto entries = volume::ListTrash(store->get());
  if (!entries.ok()) return TrashFail("ls", entries.status());
  if (json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& e : *entries) {
      nlohmann::ordered_json j;
      j["volume"] = e.volume;
      if (!e.snap.empty()) {
        j["snapshot"] = e.snap;
        j["id"] = e.snap_id;
      }
      j["timestamp"] = CTime(e.created);
      j["created"] = e.created;
      j["children"] = e.children;
      out.push_back(std::move(j));
    }
    std::printf("%s\n", out.dump().c_str());
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  if (entries->empty()) return 0;
  size_t width = 4;
  for (const auto& e : *entries) width = std::max(width, e.volume.size() + 1 + e.snap.size());
  std::printf("%-*s  %6s  %-24s  %s\n", int(width), "NAME", "SNAPID", "TIMESTAMP", "WAITS FOR");
  std::string trashed_volume;  // entries of a trashed volume follow it
  for (const auto& e : *entries) {
    const std::string name = e.snap.empty() ? e.volume : e.volume + "@" + e.snap;
    const std::string id = e.snap.empty() ? "-" : std::to_string(e.snap_id);
    if (e.snap.empty()) trashed_volume = e.volume;
    std::string waits = JoinNames(e.children, ",");
    if (e.children.empty()) {
      waits = e.volume == trashed_volume ? "(nothing: deleted with volume " + e.volume + ")"
                                         : "(nothing: the next purge deletes it)";
    }
    std::printf("%-*s  %6s  %-24s  %s\n", int(width), name.c_str(), id.c_str(),
                CTime(e.created).c_str(), waits.c_str());
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int RunTrashPurge(const GlobalOptions& g) {
  if (!g.verbose) spdlog::set_level(spdlog::level::warn);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return TrashFail("purge", store.status());
  if (Status s = volume::PurgeAllTrash(store->get(), TrashPurger(store->get())); !s.ok()) {
    return TrashFail("purge", s);
  }
  return 0;
}

int RunTrashRestore(const GlobalOptions& g, const std::string& name) {
  const std::string ctx = "restore " + name;
  if (Status st = volume::Volume::ValidateName(name); !st.ok()) return TrashFail(ctx, st);
  if (!g.verbose) spdlog::set_level(spdlog::level::warn);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return TrashFail(ctx, store.status());
  if (Status st = volume::RestoreVolume(store->get(), name); !st.ok()) return TrashFail(ctx, st);
  std::printf("restored volume %s from the trash\n", name.c_str());
  return 0;
}

}  // namespace

volume::SnapTrashPurger TrashPurger(store::Store* store) {
  return [store](const std::string& vol) -> Status {
    cluster::SnapshotOp op;
    op.kind = cluster::SnapshotOp::kPurgeTrash;
    op.volume = vol;
    auto r = cluster::RunSnapshotOp(store, op, kPurgePingTimeoutMs, kPurgeOpTimeoutMs);
    if (!r.ok()) return r.status();
    if (r->purged > 0) {
      spdlog::info("volume {}: {} trashed snapshot(s) deleted{}", vol, r->purged,
                   r->server.empty() ? "" : " by server " + r->server);
    }
    return Status::OK();
  };
}

void PurgeTrashAfter(store::Store* store, const std::string& parent) {
  Status s = volume::PurgeTrash(store, parent, TrashPurger(store));
  if (!s.ok()) {
    const std::string msg = OneLine(s);
    std::fprintf(stderr,
                 "hbiss: warning: %s; what waits in the trash for it is deleted later (hbiss "
                 "trash purge)\n",
                 msg.c_str());
  }
}

void AddTrashCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  static bool json = false;
  static std::string name;
  CLI::App* trash = app.add_subcommand(
      "trash", "What was removed while clones used it (hbiss snap rm --trash, hbiss rm --trash): "
               "it waits in the trash and is deleted with its last clone");
  trash->require_subcommand(1);

  CLI::App* ls = trash->add_subcommand(
      "ls", "List the trashed volumes and snapshots and the clones each waits for (first "
            "deletes what no clone uses any more)");
  ls->add_flag("--json", json,
               "Print JSON: [{volume, snapshot, id, timestamp, created, children}]");
  ls->callback([&g, exit_code] { *exit_code = RunTrashLs(g, json); });

  CLI::App* purge = trash->add_subcommand(
      "purge", "Delete what in the trash no clone uses any more (normally done when the last "
               "clone goes; this finishes what a crash cut short)");
  purge->callback([&g, exit_code] { *exit_code = RunTrashPurge(g); });

  CLI::App* restore = trash->add_subcommand(
      "restore", "Take volume VOL out of the trash (its trashed snapshots stay trashed)");
  restore->add_option("VOL", name, "The trashed volume")->required();
  restore->callback([&g, exit_code] { *exit_code = RunTrashRestore(g, name); });
}

}  // namespace hbiss::cli
