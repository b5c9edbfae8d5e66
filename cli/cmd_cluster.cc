// Volumes shared by several servers (doc/ownership.md, cluster/node.h):
//   hbiss status VOL [--json]        who owns it, who has it open, the epoch
//   hbiss status [--server H:P] [--json]  a running server's state
//                                    (cmd_server_status.cc)
//   hbiss lock break VOL [--force]   take it from an owner that is gone
// Built with cmd_serve.cc (HBISS_HAVE_SERVE): both need the cluster layer.
#include <cstdio>
#include <ctime>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cluster/node.h"
#include "volume/volume.h"

namespace hbiss::cli {
namespace {

std::string Since(int64_t t) { return UtcTime(t, "?"); }

std::string Describe(const cluster::VolumeStatus::Server& s) {
  return fmt::format("{} (peer {}, pid {}, since {}, {})", s.record.server,
                     s.record.peer.empty() ? "none" : s.record.peer, s.record.pid,
                     Since(s.record.since), s.answers ? "answers" : "does not answer");
}

int RunStatus(const GlobalOptions& g, const std::string& name, bool json, int timeout_ms) {
  const std::string ctx = "status " + name;
  if (Status st = volume::Volume::ValidateName(name); !st.ok()) return Fail(ctx, st);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Fail(ctx, store.status());
  auto st = cluster::GetVolumeStatus(store->get(), name, timeout_ms);
  if (!st.ok()) return Fail(ctx, st.status());
  if (json) {
    std::printf("%s\n", cluster::VolumeStatusJson(*st).c_str());
    return 0;
  }
  std::printf("volume:  %s\n", st->volume.c_str());
  std::printf("epoch:   %llu\n", static_cast<unsigned long long>(st->epoch));
  std::printf("owner:   %s\n", st->has_owner ? Describe(st->owner).c_str() : "none");
  if (st->open.empty()) std::printf("open on: no server\n");
  for (size_t i = 0; i < st->open.size(); i++) {
    std::printf("%s%s\n", i == 0 ? "open on: " : "         ", Describe(st->open[i]).c_str());
  }
  return 0;
}

int RunBreak(const GlobalOptions& g, const std::string& name, bool force, int timeout_ms) {
  const std::string ctx = "lock break " + name;
  if (Status st = volume::Volume::ValidateName(name); !st.ok()) return Fail(ctx, st);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Fail(ctx, store.status());
  Status s = cluster::BreakVolumeLock(store->get(), name, force, timeout_ms);
  if (!s.ok()) return Fail(ctx, s);
  auto after = volume::Volume::Owner(store->get(), name);
  std::printf("volume %s: lock broken; nobody owns it now (epoch %llu)\n", name.c_str(),
              static_cast<unsigned long long>(after.ok() ? after->epoch : 0));
  return 0;
}

}  // namespace

void AddClusterCommands(CLI::App& app, GlobalOptions& g, int* exit_code) {
  struct Args {
    std::string name;
    std::string server;
    bool json = false;
    bool force = false;
    int timeout_ms = 2000;
  };
  static Args a;
  CLI::App* status = app.add_subcommand(
      "status",
      "With a volume: which server owns it, which others have it open, and its epoch. "
      "Without: ask running servers what they serve, to whom, and how they are doing");
  status->add_option("volume", a.name, "Volume name");
  status->add_option("--server", a.server,
                     "Without a volume: the server to ask, by its peer endpoint HOST:PORT "
                     "(default: every server the store's records name)");
  status->add_flag("--json", a.json, "Print JSON");
  status->add_option("--timeout-ms", a.timeout_ms, "How long each server may take to answer")
      ->check(CLI::Range(1, 600000));
  status->callback([&g, exit_code] {
    *exit_code = a.name.empty() ? RunServerStatus(g, a.server, a.json, a.timeout_ms)
                                : RunStatus(g, a.name, a.json, a.timeout_ms);
  });

  CLI::App* lock = app.add_subcommand("lock", "The write lock of a volume");
  lock->require_subcommand(1);
  CLI::App* brk = lock->add_subcommand(
      "break",
      "Take a volume away from an owner that is gone (its host died), at once instead of "
      "after its HDFS lease expires: breaks its lock and fences it, so nothing it may still "
      "do reaches the volume; the next writer takes it without waiting. Refused while the "
      "owner answers (a live owner hands the volume over by itself)");
  brk->add_option("volume", a.name, "Volume name")->required();
  brk->add_flag("--force", a.force, "Break it even if the owner still answers");
  brk->add_option("--timeout-ms", a.timeout_ms, "How long the owner may take to answer")
      ->check(CLI::Range(1, 600000));
  brk->callback([&g, exit_code] { *exit_code = RunBreak(g, a.name, a.force, a.timeout_ms); });
}

}  // namespace hbiss::cli
