// hbiss clone VOL@SNAP NEW, hbiss flatten VOL, hbiss children VOL[@SNAP]:
// clones of snapshots (volume/clone.h, doc/snapshots.md "Clones"). flatten
// goes through the server that serves the clone, if one does
// (cluster::RunFlatten).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cluster/node.h"
#include "volume/clone.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::cli {
namespace {

using volume::Volume;

int RunClone(const GlobalOptions& g, const std::string& spec, const std::string& name) {
  const std::string ctx = "clone " + spec + " " + name;
  auto store = OpenStoreFor(g, /*writing=*/true);
  if (!store.ok()) return Fail(ctx, store.status());
  if (Status st = Volume::Clone(store->get(), spec, name); !st.ok()) return Fail(ctx, st);
  return 0;
}

int RunFlatten(const GlobalOptions& g, const std::string& name, bool no_progress,
               int timeout_ms) {
  const std::string ctx = "flatten " + name;
  if (Status st = Volume::ValidateName(name); !st.ok()) return Fail(ctx, st);
  // The line printed below says what the engine's info log would.
  if (!g.verbose) spdlog::set_level(spdlog::level::warn);
  auto store = OpenStoreFor(g, /*writing=*/false);
  if (!store.ok()) return Fail(ctx, store.status());
  // Its parent may wait in the trash for it (doc/snapshots.md "Trash").
  auto meta = volume::ReadMeta(store->get(), name);
  const std::string parent =
      meta.ok() && !meta->parents.empty() ? meta->parents.front().volume : "";
  // Its total, what the clone shares, is known once the flatten has begun.
  Progress progress("flatten " + name, 0);
  bool drawn = false;
  uint64_t last = 0;
  auto r = cluster::RunFlatten(store->get(), name, timeout_ms, [&](uint64_t done, uint64_t total) {
    if (no_progress) return;
    progress.SetTotal(total);
    progress.Update(done);
    drawn = true;
    last = done;
  });
  if (drawn) progress.Finish(last);
  if (!r.ok()) return Fail(ctx, r.status());
  const std::string by = r->server.empty() ? "" : " (by server " + r->server + ")";
  std::printf("%s: %llu blocks copied from its parents%s\n", name.c_str(),
              static_cast<unsigned long long>(r->copied_blocks), by.c_str());
  if (!parent.empty()) PurgeTrashAfter(store->get(), parent);
  return 0;
}

int RunChildren(const GlobalOptions& g, const std::string& spec, bool json) {
  const std::string ctx = "children " + spec;
  std::string vol, snap;
  if (Status st = Volume::ParseSpec(spec, &vol, &snap); !st.ok()) return Fail(ctx, st);
  auto store = OpenStoreFor(g, /*writing=*/false);
  if (!store.ok()) return Fail(ctx, store.status());
  auto snaps = Volume::ListSnapshots(store->get(), vol);
  if (!snaps.ok()) return Fail(ctx, snaps.status());
  uint64_t id = 0;
  if (!snap.empty()) {
    auto it = std::find_if(snaps->begin(), snaps->end(),
                           [&](const volume::SnapshotInfo& s) { return s.name == snap; });
    if (it == snaps->end()) return Fail(ctx, Status::NotFound("snapshot " + spec + " does not exist"));
    id = it->id;
  }
  auto kids = volume::ListChildren(store->get(), vol, id);
  if (!kids.ok()) return Fail(ctx, kids.status());
  if (json) {
    std::printf("%s\n", nlohmann::json(*kids).dump().c_str());
  } else {
    for (const std::string& k : *kids) std::printf("%s\n", k.c_str());
  }
  return 0;
}

}  // namespace

void AddCloneCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  static std::string spec, name;
  static bool no_progress = false, json = false;
  static int timeout_ms = 5000;
  CLI::App* clone = app.add_subcommand(
      "clone", "Make NEW a writable clone of snapshot VOL@SNAP: it shares every block it does "
               "not overwrite with the snapshot (made in O(1))");
  clone->add_option("SNAPSHOT", spec, "The snapshot, VOL@SNAP")->required();
  clone->add_option("NEW", name, "The clone's name")->required();
  clone->callback([&g, exit_code] { *exit_code = RunClone(g, spec, name); });

  CLI::App* flatten = app.add_subcommand(
      "flatten",
      "Copy into clone VOL every block it still shares with its parents, so that it no longer "
      "depends on them. While a server serves VOL, that server does it, its clients reading "
      "and writing meanwhile; this command shows its progress. Ctrl-C stops only this command, "
      "not a server's flatten. Safe to run again: it copies only what is still shared");
  flatten->add_option("VOL", name, "The clone")->required();
  flatten->add_flag("--no-progress", no_progress, "No progress bar on stderr");
  flatten->add_option("--timeout-ms", timeout_ms,
                      "How long a server serving VOL may take to answer each request")
      ->check(CLI::Range(1, 600000));
  flatten->callback([&g, exit_code] { *exit_code = RunFlatten(g, name, no_progress, timeout_ms); });

  CLI::App* children = app.add_subcommand(
      "children", "List the clones of VOL's snapshots, or of snapshot VOL@SNAP");
  children->add_option("SPEC", spec, "VOL or VOL@SNAP")->required();
  children->add_flag("--json", json, "JSON output: an array of names");
  children->callback([&g, exit_code] { *exit_code = RunChildren(g, spec, json); });
}

}  // namespace hbiss::cli
