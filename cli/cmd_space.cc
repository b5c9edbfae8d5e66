// hbiss du [VOL] [--json] and hbiss diff VOL@A [VOL@B|VOL] [--json]: space
// accounting and change lists, rbd style (volume/space.h, doc/snapshots.md
// "du" and "diff"). Both only read: they take no lock and work while a
// server owns the volume.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "volume/space.h"
#include "volume/volume.h"

namespace hbiss::cli {
namespace {

using volume::DiskUsage;
using volume::Volume;

using Failed = std::vector<std::pair<std::string, std::string>>;  // volume, error

// `failed`: volumes that could not be read, listed as "errors": [{name, error}]
// (only when there are some).
void PrintDuJson(const std::vector<DiskUsage>& all, const Failed& failed) {
  nlohmann::ordered_json images = nlohmann::ordered_json::array();
  uint64_t prov = 0, used = 0, stored = 0;
  for (const DiskUsage& du : all) {
    for (const volume::UsageRow& r : du.rows) {
      nlohmann::ordered_json j;
      j["name"] = du.volume;
      if (!r.snapshot.empty()) j["snapshot"] = r.snapshot;
      if (r.trashed) j["trashed"] = true;
      j["provisioned_size"] = r.provisioned;
      j["used_size"] = r.used;
      j["mapped_size"] = r.mapped;
      if (r.snapshot.empty()) {
        j["own_size"] = du.own;
        j["shared_size"] = du.shared;
        j["store_bytes"] = du.store_bytes;
        j["segment_bytes"] = du.segment_bytes;
        j["checkpoint_bytes"] = du.checkpoint_bytes;
        j["snapshot_map_bytes"] = du.snapshot_map_bytes;
        j["summary_bytes"] = du.summary_bytes;
      }
      used += r.used;
      images.push_back(std::move(j));
    }
    prov += du.provisioned;
    stored += du.store_bytes;
  }
  nlohmann::ordered_json out;
  out["images"] = std::move(images);
  out["total_provisioned_size"] = prov;
  out["total_used_size"] = used;
  out["total_store_bytes"] = stored;
  if (!failed.empty()) {
    nlohmann::ordered_json errors = nlohmann::ordered_json::array();
    for (const auto& [n, e] : failed) errors.push_back({{"name", n}, {"error", e}});
    out["errors"] = std::move(errors);
  }
  std::printf("%s\n", out.dump().c_str());
}

// `failed`: one row each, "error" in every column (the message is on stderr).
void PrintDuTable(const std::vector<DiskUsage>& all, const Failed& failed) {
  struct Line {
    std::string name, prov, used, stored;
  };
  std::vector<Line> lines;
  uint64_t prov = 0, used = 0, stored = 0;
  for (const DiskUsage& du : all) {
    for (const volume::UsageRow& r : du.rows) {
      const bool head = r.snapshot.empty();
      lines.push_back({head ? du.volume
                            : du.volume + "@" + r.snapshot + (r.trashed ? " (trashed)" : ""),
                       FormatBytes(r.provisioned), FormatBytes(r.used),
                       head ? FormatBytes(du.store_bytes) : ""});
      used += r.used;
    }
    prov += du.provisioned;
    stored += du.store_bytes;
  }
  for (const auto& [n, e] : failed) lines.push_back({n, "error", "error", "error"});
  if (all.size() + failed.size() > 1) {
    lines.push_back({"<TOTAL>", FormatBytes(prov), FormatBytes(used), FormatBytes(stored)});
  }
  size_t w = 4;
  for (const Line& l : lines) w = std::max(w, l.name.size());
  std::printf("%-*s  %12s  %12s  %12s\n", int(w), "NAME", "PROVISIONED", "USED", "STORED");
  for (const Line& l : lines) {
    std::printf("%-*s  %12s  %12s  %12s\n", int(w), l.name.c_str(), l.prov.c_str(),
                l.used.c_str(), l.stored.c_str());
  }
}

int RunDu(const GlobalOptions& g, const std::string& name, bool json) {
  const std::string ctx = name.empty() ? "du" : "du " + name;
  auto store = OpenStoreFor(g, /*writing=*/false);
  if (!store.ok()) return Fail(ctx, store.status());
  std::vector<std::string> names{name};
  if (name.empty()) {
    auto list = Volume::List(store->get());
    if (!list.ok()) return Fail(ctx, list.status());
    names = std::move(*list);
  }
  if (!name.empty()) {
    auto du = volume::GetDiskUsage(store->get(), name);
    if (!du.ok()) return Fail(ctx, du.status());
    std::vector<DiskUsage> one;
    one.push_back(std::move(*du));
    if (json) {
      PrintDuJson(one, {});
    } else {
      PrintDuTable(one, {});
    }
    return 0;
  }
  // Every volume: one that cannot be read is reported (stderr, and its row
  // or the JSON's "errors") and the others are still shown; exit 1.
  std::vector<DiskUsage> all;
  std::vector<std::pair<std::string, std::string>> failed;  // volume, error
  for (const std::string& n : names) {
    auto du = volume::GetDiskUsage(store->get(), n);
    if (!du.ok()) {
      (void)Fail(ctx + " (volume " + n + ")", du.status());
      failed.emplace_back(n, OneLine(du.status()));
      continue;
    }
    all.push_back(std::move(*du));
  }
  if (json) {
    PrintDuJson(all, failed);
  } else {
    PrintDuTable(all, failed);
  }
  if (!failed.empty()) {
    std::fprintf(stderr, "hbiss: %s: %zu of %zu volumes could not be read (above)\n", ctx.c_str(),
                 failed.size(), names.size());
    return 1;
  }
  return 0;
}

int RunDiff(const GlobalOptions& g, const std::string& from, std::string to, bool json) {
  const std::string ctx = "diff " + from + (to.empty() ? "" : " " + to);
  if (to.empty()) {
    // The head of from's volume.
    std::string vol, snap;
    if (Status st = Volume::ParseSpec(from, &vol, &snap); !st.ok()) {
      return Fail(ctx, Status::InvalidArgument("'" + from + "': " + st.message()));
    }
    to = vol;
  }
  auto store = OpenStoreFor(g, /*writing=*/false);
  if (!store.ok()) return Fail(ctx, store.status());
  auto d = volume::Diff(store->get(), from, to);
  if (!d.ok()) return Fail(ctx, d.status());
  if (json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const volume::DiffExtent& e : *d) {
      out.push_back({{"offset", e.offset}, {"length", e.length},
                     {"exists", e.data ? "true" : "false"}});
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("%-14s %-14s %s\n", "Offset", "Length", "Type");
  for (const volume::DiffExtent& e : *d) {
    std::printf("%-14llu %-14llu %s\n", static_cast<unsigned long long>(e.offset),
                static_cast<unsigned long long>(e.length), e.data ? "data" : "zero");
  }
  return 0;
}

}  // namespace

void AddSpaceCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  static std::string du_name, from, to;
  static bool du_json = false, diff_json = false;
  CLI::App* du = app.add_subcommand(
      "du", "Space of a volume (or of every volume): provisioned; USED per snapshot and for "
            "the head, as rbd du: the bytes written since the row before (not what the row "
            "alone holds; removing a snapshot frees at most its USED); and the bytes the "
            "store holds");
  du->add_option("volume", du_name, "Volume name (default: every volume)");
  du->add_flag("--json", du_json,
               "Print JSON: {images: [{name, snapshot?, provisioned_size, used_size, ...}], "
               "total_provisioned_size, total_used_size, total_store_bytes}");
  du->callback([&g, exit_code] { *exit_code = RunDu(g, du_name, du_json); });

  CLI::App* diff = app.add_subcommand(
      "diff", "The extents that changed from snapshot VOL@A to VOL@B or to the volume now "
              "(data: written since; zero: unmapped since)");
  diff->add_option("from", from, "VOL@SNAP, or PARENT@SNAP of a clone")->required();
  diff->add_option("to", to, "VOL@SNAP or VOL (default: the volume now)");
  diff->add_flag("--json", diff_json, "Print JSON: [{offset, length, exists}]");
  diff->callback([&g, exit_code] { *exit_code = RunDiff(g, from, to, diff_json); });
}

}  // namespace hbiss::cli
