// hbiss clone VOL@SNAP NEW, hbiss flatten VOL, hbiss children VOL[@SNAP]:
// clones of snapshots (volume/clone.h, doc/snapshots.md "Clones").
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "volume/clone.h"
#include "volume/volume.h"
#include "volume/volume_meta.h"

namespace hbiss::cli {
namespace {

using volume::Volume;

int Fail(const std::string& context, const Status& st) {
  std::string msg = st.ToString();
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  std::fprintf(stderr, "hbiss: %s: %s\n", context.c_str(), msg.c_str());
  return 1;
}

int RunClone(const GlobalOptions& g, const std::string& spec, const std::string& name) {
  const std::string ctx = "clone " + spec + " " + name;
  auto store = OpenStoreFor(g, /*writing=*/true);
  if (!store.ok()) return Fail(ctx, store.status());
  if (Status st = Volume::Clone(store->get(), spec, name); !st.ok()) return Fail(ctx, st);
  return 0;
}

int RunFlatten(const GlobalOptions& g, const std::string& name, bool no_progress) {
  const std::string ctx = "flatten " + name;
  auto store = OpenStoreFor(g, /*writing=*/false);
  if (!store.ok()) return Fail(ctx, store.status());
  auto v = Volume::Open(store->get(), name);
  if (!v.ok()) {
    if (v.status().IsBusy()) {
      return Fail(ctx, Status::Busy(v.status().message() +
                                    "; flatten needs the volume closed (stop the server "
                                    "that serves it, or use its owner)"));
    }
    return Fail(ctx, v.status());
  }
  // Its parent may wait in the trash for it (doc/snapshots.md "Trash").
  auto meta = volume::ReadMeta(store->get(), name);
  const std::string parent =
      meta.ok() && !meta->parents.empty() ? meta->parents.front().volume : "";
  uint64_t size = (*v)->size();
  Progress progress("flatten " + name, size);
  auto copied = (*v)->Flatten([&](uint64_t done, uint64_t total) {
    if (no_progress) return;
    // In bytes of the volume, as a share of what it still shared.
    progress.Update(total == 0 ? size : done * size / total);
  });
  if (!no_progress) progress.Finish(size);
  if (!copied.ok()) return Fail(ctx, copied.status());
  if (Status st = (*v)->Close(); !st.ok()) return Fail(ctx, st);
  std::printf("%s: %llu blocks copied from its parents\n", name.c_str(),
              static_cast<unsigned long long>(*copied));
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
  CLI::App* clone = app.add_subcommand(
      "clone", "Make NEW a writable clone of snapshot VOL@SNAP: it shares every block it does "
               "not overwrite with the snapshot (made in O(1))");
  clone->add_option("SNAPSHOT", spec, "The snapshot, VOL@SNAP")->required();
  clone->add_option("NEW", name, "The clone's name")->required();
  clone->callback([&g, exit_code] { *exit_code = RunClone(g, spec, name); });

  CLI::App* flatten = app.add_subcommand(
      "flatten", "Copy into clone VOL every block it still shares with its parents, so that it "
                 "no longer depends on them (the volume must not be open elsewhere)");
  flatten->add_option("VOL", name, "The clone")->required();
  flatten->add_flag("--no-progress", no_progress, "No progress bar on stderr");
  flatten->callback([&g, exit_code] { *exit_code = RunFlatten(g, name, no_progress); });

  CLI::App* children = app.add_subcommand(
      "children", "List the clones of VOL's snapshots, or of snapshot VOL@SNAP");
  children->add_option("SPEC", spec, "VOL or VOL@SNAP")->required();
  children->add_flag("--json", json, "JSON output: an array of names");
  children->callback([&g, exit_code] { *exit_code = RunChildren(g, spec, json); });
}

}  // namespace hbiss::cli
