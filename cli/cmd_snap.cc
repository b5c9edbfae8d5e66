// Snapshots of volumes (doc/snapshots.md "Commands"), rbd style:
//   hbiss snap create VOL@SNAP
//   hbiss snap ls VOL [--json] [--all]
//   hbiss snap rm VOL@SNAP [--trash]
//   hbiss snap rollback VOL@SNAP
//   hbiss snap rename VOL@SNAP NEW   (NEW may also be written VOL@NEW)
// The commands that change a volume go through the server that owns it, if
// one does (cluster::RunSnapshotOp); `ls` only reads. Built with
// cmd_serve.cc (HBISS_HAVE_SERVE): it needs the cluster layer.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cluster/node.h"
#include "volume/volume.h"

namespace hbiss::cli {
namespace {

using volume::Volume;

// How long the request to a serving owner may take: it may first have to
// acquire the volume (NodeOptions::acquire_timeout_ms, 180 s by default).
constexpr int kOpTimeoutMs = 200000;

int SnapFail(const std::string& context, const Status& st) { return Fail("snap " + context, st); }

// "VOL@SNAP" with both parts valid; InvalidArgument naming the spec otherwise.
Status ParseSnapSpec(const std::string& spec, std::string* vol, std::string* snap) {
  Status s = Volume::ParseSpec(spec, vol, snap);
  if (!s.ok()) return Status::InvalidArgument("'" + spec + "': " + s.message());
  if (snap->empty()) {
    return Status::InvalidArgument("'" + spec + "' names no snapshot: write VOL@SNAP");
  }
  return Status::OK();
}

int RunLs(const GlobalOptions& g, const std::string& name, bool json, bool all) {
  const std::string ctx = "ls " + name;
  if (name.find('@') != std::string::npos) {
    return SnapFail(ctx, Status::InvalidArgument("takes a volume, not a snapshot: write VOL"));
  }
  if (Status st = Volume::ValidateName(name); !st.ok()) return SnapFail(ctx, st);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return SnapFail(ctx, store.status());
  auto snaps = Volume::ListSnapshots(store->get(), name, all);
  if (!snaps.ok()) return SnapFail(ctx, snaps.status());
  if (json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& s : *snaps) {
      nlohmann::ordered_json j;
      j["id"] = s.id;
      j["name"] = s.name;
      j["size"] = s.size;
      j["timestamp"] = CTime(s.created);
      j["created"] = s.created;
      j["mapped_bytes"] = s.mapped_bytes;
      j["materialized"] = s.materialized;
      if (s.trashed) j["trashed"] = true;
      out.push_back(std::move(j));
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  if (snaps->empty()) return 0;  // rbd prints nothing either
  size_t width = 4;
  for (const auto& s : *snaps) width = std::max(width, s.name.size());
  // --all adds rbd's NAMESPACE column: "user", or "trash" for a trashed one.
  const int mwidth = all ? 12 : 0;  // MATERIALIZED is the last column without --all
  std::printf("%6s  %-*s  %16s  %-24s  %-*s%s\n", "SNAPID", int(width), "NAME", "SIZE",
              "TIMESTAMP", mwidth, "MATERIALIZED", all ? "  NAMESPACE" : "");
  for (const auto& s : *snaps) {
    std::printf("%6llu  %-*s  %16llu  %-24s  %-*s%s\n", static_cast<unsigned long long>(s.id),
                int(width), s.name.c_str(), static_cast<unsigned long long>(s.size),
                CTime(s.created).c_str(), mwidth, s.materialized ? "yes" : "no",
                all ? (s.trashed ? "  trash" : "  user") : "");
  }
  return 0;
}

struct OpArgs {
  std::string spec;
  std::string new_name;
  int timeout_ms = 2000;
  bool trash = false;  // rm: a snapshot with clones goes to the trash
};

// create, rm, rollback, rename: through the owner or here.
int RunOp(const GlobalOptions& g, cluster::SnapshotOp::Kind kind, const char* verb,
          const OpArgs& a) {
  const std::string ctx = std::string(verb) + " " + a.spec;
  cluster::SnapshotOp op;
  op.kind = kind;
  op.trash = a.trash;
  if (Status st = ParseSnapSpec(a.spec, &op.volume, &op.snap); !st.ok()) return SnapFail(ctx, st);
  if (kind == cluster::SnapshotOp::kRename) {
    op.new_name = a.new_name;
    if (a.new_name.find('@') != std::string::npos) {
      std::string vol;
      if (Status st = ParseSnapSpec(a.new_name, &vol, &op.new_name); !st.ok()) {
        return SnapFail(ctx, st);
      }
      if (vol != op.volume) {
        return SnapFail(ctx, Status::InvalidArgument("a snapshot stays in its volume: '" +
                                                     a.new_name + "' names volume " + vol));
      }
    }
    // Same rules as at creation: the volume-name rules.
    std::string v, s;
    if (Status st = Volume::ParseSpec(op.volume + "@" + op.new_name, &v, &s); !st.ok()) {
      return SnapFail(ctx, Status::InvalidArgument("new name '" + op.new_name +
                                                   "': " + st.message()));
    }
  }
  // The line printed below says what the engine's info log would.
  if (!g.verbose) spdlog::set_level(spdlog::level::warn);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return SnapFail(ctx, store.status());
  auto r = cluster::RunSnapshotOp(store->get(), op, a.timeout_ms, kOpTimeoutMs);
  if (!r.ok()) return SnapFail(ctx, r.status());
  const std::string by = r->server.empty() ? "" : " (by server " + r->server + ")";
  const std::string full = op.volume + "@" + op.snap;
  switch (kind) {
    case cluster::SnapshotOp::kCreate:
      std::printf("created snapshot %s, id %llu%s\n", full.c_str(),
                  static_cast<unsigned long long>(r->created.id), by.c_str());
      break;
    case cluster::SnapshotOp::kRemove:
      if (r->trashed) {
        std::printf("moved snapshot %s to the trash: its clones still use it, and it is deleted "
                    "with the last of them (hbiss trash ls)%s\n",
                    full.c_str(), by.c_str());
      } else {
        std::printf("removed snapshot %s%s\n", full.c_str(), by.c_str());
      }
      break;
    case cluster::SnapshotOp::kPurgeTrash:
      break;
    case cluster::SnapshotOp::kRename:
      if (op.new_name == op.snap) {
        std::printf("snapshot %s already has that name: nothing changed\n", full.c_str());
        break;
      }
      std::printf("renamed snapshot %s to %s@%s%s\n", full.c_str(), op.volume.c_str(),
                  op.new_name.c_str(), by.c_str());
      break;
    case cluster::SnapshotOp::kRollback:
      std::printf("rolled volume %s back to snapshot %s%s\n", op.volume.c_str(), full.c_str(),
                  by.c_str());
      break;
  }
  return 0;
}

}  // namespace

std::string CTime(int64_t t) {
  time_t tt = time_t(t);
  tm tmv{};
  localtime_r(&tt, &tmv);
  char buf[64];
  strftime(buf, sizeof(buf), "%a %b %e %H:%M:%S %Y", &tmv);
  return buf;
}

void AddSnapCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  static OpArgs a;
  static std::string ls_name;
  static bool json = false, all = false;
  CLI::App* snap = app.add_subcommand(
      "snap", "Snapshots of a volume (VOL@SNAP); while a server owns the volume, create, rm, "
              "rename and rollback ask that server to do it");
  snap->require_subcommand(1);

  auto op = [&](const char* verb, const char* help, cluster::SnapshotOp::Kind kind) {
    CLI::App* c = snap->add_subcommand(verb, help);
    c->add_option("snapshot", a.spec, "VOL@SNAP")->required();
    if (kind == cluster::SnapshotOp::kRename) {
      c->add_option("new_name", a.new_name, "The new name: NEW or VOL@NEW")->required();
    }
    if (kind == cluster::SnapshotOp::kRemove) {
      c->add_flag("--trash", a.trash,
                  "If clones use the snapshot, move it to the trash instead of refusing (rbd "
                  "clone v2): its name is free at once, and it is deleted with its last clone");
    }
    c->add_option("--timeout-ms", a.timeout_ms,
                  "How long the volume's owner, if a server owns it, may take to answer a PING")
        ->check(CLI::Range(1, 600000));
    c->callback([&g, exit_code, kind, verb] { *exit_code = RunOp(g, kind, verb, a); });
  };
  op("create", "Create a snapshot of a volume: every write acknowledged before is in it",
     cluster::SnapshotOp::kCreate);
  op("rm",
     "Remove a snapshot (the cleaner then returns the space only it held); one that clones use "
     "is refused unless --trash",
     cluster::SnapshotOp::kRemove);
  op("rename", "Rename a snapshot", cluster::SnapshotOp::kRename);
  op("rollback",
     "Make the volume's content that of a snapshot (the snapshot stays). A client using the "
     "volume sees its disk change under it: stop the VM first",
     cluster::SnapshotOp::kRollback);

  CLI::App* ls = snap->add_subcommand("ls", "List a volume's snapshots, oldest first");
  ls->add_option("volume", ls_name, "Volume name")->required();
  ls->add_flag("--json", json, "Print JSON: [{id, name, size, timestamp, created, ...}]");
  ls->add_flag("-a,--all", all,
               "Also list the trashed snapshots (NAMESPACE trash; in JSON \"trashed\": true)");
  ls->callback([&g, exit_code] { *exit_code = RunLs(g, ls_name, json, all); });
}

}  // namespace hbiss::cli
