// hbiss fsck VOL [--json] [--repair]: the consistency check of a volume
// (volume/fsck.h, doc/fsck.md), with output and exit codes as `qemu-img
// check`: 0 consistent, 1 check not completed, 2 corruption found, 3 only
// leaks found.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "volume/fsck.h"
#include "volume/volume.h"

namespace hbiss::cli {
namespace {

using volume::FsckKind;
using volume::FsckReport;

constexpr int kExitIncomplete = 1;
constexpr int kExitCorrupt = 2;
constexpr int kExitLeaks = 3;

int ExitCodeOf(const FsckReport& r) {
  if (r.corruptions > 0) return kExitCorrupt;
  if (r.leaks > 0) return kExitLeaks;
  return 0;
}

// Prints "hbiss: fsck NAME: <what>: <status>" and returns exit code 1.
int Incomplete(const std::string& name, const Status& st,
               const std::string& what = "check not completed") {
  std::string msg = st.ToString();
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  std::fprintf(stderr, "hbiss: fsck %s: %s: %s\n", name.c_str(), what.c_str(), msg.c_str());
  return kExitIncomplete;
}

void PrintText(const FsckReport& r) {
  for (const volume::FsckProblem& p : r.problems) {
    std::printf("%s %s\n", p.kind == FsckKind::kCorruption ? "ERROR" : "Leaked",
                p.message.c_str());
  }
  if (!r.problems.empty()) std::printf("\n");
  if (r.corruptions > 0) {
    std::printf("%llu errors were found on the volume.\n"
                "Data may be corrupted, or further writes to the volume may corrupt it.\n",
                static_cast<unsigned long long>(r.corruptions));
  }
  if (r.leaks > 0) {
    if (r.corruptions > 0) std::printf("\n");
    std::printf("%llu leaked segments were found (%llu bytes) on the volume.\n"
                "This means waste of space, but no harm to data.\n",
                static_cast<unsigned long long>(r.leaks),
                static_cast<unsigned long long>(r.leaked_bytes));
  }
  if (r.corruptions == 0 && r.leaks == 0) std::printf("No errors were found on the volume.\n");
  std::printf("%llu blocks mapped, %llu segments (%llu bytes of log), checkpoint %llu\n",
              static_cast<unsigned long long>(r.mapped_blocks),
              static_cast<unsigned long long>(r.segments),
              static_cast<unsigned long long>(r.log_bytes),
              static_cast<unsigned long long>(r.checkpoint_seq));
}

nlohmann::ordered_json JsonOf(const FsckReport& r) {
  nlohmann::ordered_json j;
  j["volume"] = r.volume;
  j["epoch"] = r.epoch;
  j["check-errors"] = 0;
  j["corruptions"] = r.corruptions;
  j["leaks"] = r.leaks;
  j["leaked-bytes"] = r.leaked_bytes;
  nlohmann::ordered_json problems = nlohmann::ordered_json::array();
  for (const volume::FsckProblem& p : r.problems) {
    nlohmann::ordered_json o;
    o["kind"] = p.kind == FsckKind::kCorruption ? "corruption" : "leak";
    o["check"] = p.check;
    o["segment"] = p.segment == 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(p.segment);
    o["offset"] = p.offset ? nlohmann::ordered_json(*p.offset) : nlohmann::ordered_json();
    o["lba"] = p.lba ? nlohmann::ordered_json(*p.lba) : nlohmann::ordered_json();
    o["checkpoint"] =
        p.checkpoint == 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(p.checkpoint);
    o["bytes"] = p.bytes;
    o["message"] = p.message;
    problems.push_back(std::move(o));
  }
  j["problems"] = std::move(problems);
  const std::pair<const char*, uint64_t> totals[] = {
      {"segments", r.segments},         {"log-bytes", r.log_bytes},
      {"mapped-blocks", r.mapped_blocks}, {"checkpoint", r.checkpoint_seq},
      {"checkpoints", r.checkpoints},   {"data-slots-checked", r.data_slots_checked},
      {"dead-slots-bad", r.dead_bad_slots}};
  for (const auto& [key, value] : totals) j[key] = value;
  nlohmann::ordered_json usage = nlohmann::ordered_json::array();
  for (const volume::FsckSegment& s : r.segment_usage) {
    usage.push_back({{"segment", s.id},
                     {"bytes", s.bytes},
                     {"live-blocks", s.live_blocks},
                     {"referenced", s.referenced},
                     {"summary", s.summary}});
  }
  j["segment-usage"] = std::move(usage);
  return j;
}

int RunFsck(const GlobalOptions& g, const std::string& name, bool json, bool repair) {
  // The report says what is wrong; the engine's log lines would say it twice.
  if (!g.verbose) spdlog::set_level(spdlog::level::err);
  if (Status st = volume::Volume::ValidateName(name); !st.ok()) return Incomplete(name, st);
  auto store = OpenStoreFor(g, false);
  if (!store.ok()) return Incomplete(name, store.status());
  auto first = volume::CheckVolume(store->get(), name);
  if (!first.ok()) return Incomplete(name, first.status());
  if (!repair) {
    if (json) {
      std::printf("%s\n", JsonOf(*first).dump(2).c_str());
    } else {
      PrintText(*first);
    }
    return std::fflush(stdout) == 0 ? ExitCodeOf(*first) : kExitIncomplete;
  }
  std::vector<std::string> actions;
  Status rs = volume::RepairVolume(store->get(), name, *first, &actions);
  if (!json) {
    PrintText(*first);
    std::printf("\n");
    for (const std::string& a : actions) std::printf("Repairing: %s\n", a.c_str());
  }
  if (!rs.ok()) {
    std::fflush(stdout);
    return Incomplete(name, rs, "repair not completed");
  }
  auto after = volume::CheckVolume(store->get(), name);
  if (!after.ok()) return Incomplete(name, after.status());
  if (json) {
    nlohmann::ordered_json j = JsonOf(*after);
    j["repaired"] = actions;
    j["before"] = {{"corruptions", first->corruptions},
                   {"leaks", first->leaks},
                   {"leaked-bytes", first->leaked_bytes}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    const uint64_t leaks_fixed = first->leaks - std::min(first->leaks, after->leaks);
    const uint64_t corruptions_fixed =
        first->corruptions - std::min(first->corruptions, after->corruptions);
    std::printf("The following inconsistencies were found and repaired:\n\n"
                "    %llu leaked segments\n    %llu corruptions\n\n"
                "Double checking the fixed volume now...\n",
                static_cast<unsigned long long>(leaks_fixed),
                static_cast<unsigned long long>(corruptions_fixed));
    PrintText(*after);
  }
  return std::fflush(stdout) == 0 ? ExitCodeOf(*after) : kExitIncomplete;
}

}  // namespace

void AddFsckCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  static std::string name;
  static bool json = false, repair = false;
  CLI::App* fsck = app.add_subcommand(
      "fsck",
      "Check a volume's log, checkpoints and map (exit 0 consistent, 1 check not completed, "
      "2 corruption, 3 leaked space only); read-only unless --repair");
  fsck->add_option("NAME", name, "Volume name")->required();
  fsck->add_flag("--json", json, "Print one JSON object");
  fsck->add_flag("--repair", repair,
                 "Take the volume's lock and repair what loses no data: delete leaked "
                 "segments and summaries, rewrite bad summaries, write a fresh checkpoint "
                 "when the newest is corrupt; then check again");
  fsck->callback([&g, exit_code] { *exit_code = RunFsck(g, name, json, repair); });
}

}  // namespace hbiss::cli
