#include "volume/snapshot_registry.h"

#include <algorithm>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "volume/checkpoint.h"
#include "volume/log_format.h"
#include "volume/recovery.h"
#include "volume/volume.h"

namespace hbiss::volume {

const SnapshotRecord* SnapRegistry::Find(const std::string& name) const {
  for (const SnapshotRecord& s : snaps) {
    if (s.name == name && !s.trashed) return &s;
  }
  return nullptr;
}

SnapshotRecord* SnapRegistry::Find(const std::string& name) {
  return const_cast<SnapshotRecord*>(std::as_const(*this).Find(name));
}

std::string EncodeSnapRegistry(const SnapRegistry& r) {
  nlohmann::json j;
  j["format"] = "hbiss-snapshots";
  const bool any_trashed =
      std::any_of(r.snaps.begin(), r.snaps.end(), [](const SnapshotRecord& s) { return s.trashed; });
  j["version"] = any_trashed ? kSnapRegistryVersion : 1;
  j["next_id"] = r.next_id;
  j["snapshots"] = nlohmann::json::array();
  for (const SnapshotRecord& s : r.snaps) {
    nlohmann::json e = {{"id", s.id},
                        {"name", s.name},
                        {"created", s.created},
                        {"stop_seq", s.stop_seq},
                        {"mapped_blocks", s.mapped_blocks}};
    if (s.trashed) e["trashed"] = true;
    j["snapshots"].push_back(std::move(e));
  }
  return j.dump() + "\n";
}

Result<SnapRegistry> DecodeSnapRegistry(const std::string& text, const std::string& where) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) { return Status::Corruption(where + ": " + why); };
  if (j.is_discarded() || !j.is_object()) return bad("is not a JSON object");
  if (!j.contains("format") || j["format"] != "hbiss-snapshots") return bad("has a wrong format tag");
  if (!j.contains("version") || !j["version"].is_number_unsigned() || j["version"] == 0) {
    return bad("has no version");
  }
  if (j["version"].get<uint64_t>() > kSnapRegistryVersion) {
    return Status::NotSupported(where + ": version " +
                                std::to_string(j["version"].get<uint64_t>()) +
                                " is newer than this build supports");
  }
  if (!j.contains("next_id") || !j["next_id"].is_number_unsigned()) return bad("has no next_id");
  if (!j.contains("snapshots") || !j["snapshots"].is_array()) return bad("has no snapshot list");
  SnapRegistry r;
  r.next_id = j["next_id"].get<uint64_t>();
  for (const auto& e : j["snapshots"]) {
    if (!e.is_object()) return bad("has a snapshot that is not an object");
    for (const char* k : {"id", "stop_seq"}) {
      if (!e.contains(k) || !e[k].is_number_unsigned()) return bad("has a snapshot without " + std::string(k));
    }
    if (!e.contains("name") || !e["name"].is_string()) return bad("has a snapshot without a name");
    SnapshotRecord s;
    s.id = e["id"].get<uint64_t>();
    s.name = e["name"].get<std::string>();
    s.stop_seq = e["stop_seq"].get<uint64_t>();
    if (e.contains("created") && e["created"].is_number_integer()) s.created = e["created"];
    if (e.contains("mapped_blocks") && e["mapped_blocks"].is_number_unsigned()) {
      s.mapped_blocks = e["mapped_blocks"];
    }
    if (e.contains("trashed")) {
      if (!e["trashed"].is_boolean()) return bad("has a snapshot whose trashed is not a boolean");
      s.trashed = e["trashed"].get<bool>();
    }
    // Only live snapshots need distinct names.
    if (s.id == 0 || s.id >= r.next_id || s.stop_seq == 0 || !Volume::ValidateName(s.name).ok() ||
        (!s.trashed && r.Find(s.name) != nullptr)) {
      return bad("has a bad snapshot record (" + s.name + ")");
    }
    for (const SnapshotRecord& o : r.snaps) {
      if (o.id == s.id) return bad("has two snapshots with id " + std::to_string(s.id));
    }
    r.snaps.push_back(std::move(s));
  }
  return r;
}

Result<SnapRegistry> ReadSnapRegistry(store::Store* store, const layout::LogDir& dir) {
  auto text = store->Get(layout::SnapsName(dir), layout::kMaxMetaBytes);
  if (!text.ok()) {
    if (text.status().IsNotFound()) return SnapRegistry{};
    return text.status().WithContext("volume " + dir.volume() + ": reading its snapshots");
  }
  return DecodeSnapRegistry(*text, "volume " + dir.volume() + ": snapshot registry");
}

Status WriteSnapRegistry(store::Store* store, const layout::LogDir& dir, const SnapRegistry& r) {
  const std::string text = EncodeSnapRegistry(r);
  return store
      ->Put(layout::SnapsName(dir),
            std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()))
      .WithContext("volume " + dir.volume() + ": writing its snapshots");
}

Status LoadSnapshotMap(store::Store* store, const layout::LogDir& dir, const VolumeMeta& meta,
                       const SnapshotRecord& rec, ExtentMap* map, bool* materialized) {
  const std::string obj = layout::SnapName(dir, rec.id);
  const std::string label = dir.volume() + "@" + rec.name;
  auto decode = [&](const std::string& data) -> Status {
    map->Reset();
    CheckpointInfo ci;
    Status s = DecodeCheckpoint(data, &ci, map);
    if (s.ok() && (ci.volume_id != meta.id || ci.volume_size != meta.size || ci.seq != rec.id ||
                   ci.next_seq != rec.stop_seq)) {
      s = Status::Corruption("the map object belongs to another snapshot");
    }
    if (!s.ok()) map->Reset();
    *materialized = s.ok();
    return s.WithContext("snapshot " + label + ": " + obj);
  };
  auto data = store->Get(obj, layout::kMaxCheckpointBytes);
  if (data.ok()) return decode(*data);
  if (!data.status().IsNotFound()) return data.status().WithContext("snapshot " + label);
  // Pending: the owner has not written its map yet (or crashed first).
  map->Reset();
  uint64_t from = 0;
  Status s = ReplayLogTo(store, dir, meta, rec.stop_seq, map, &from);
  if (s.ok()) {
    *materialized = false;
    spdlog::debug("snapshot {}: map rebuilt from the log (checkpoint {})", label, from);
    return s;
  }
  // The owner may have written it meanwhile and cleaned the log since.
  auto again = store->Get(obj, layout::kMaxCheckpointBytes);
  if (again.ok()) return decode(*again);
  map->Reset();
  return s.WithContext("snapshot " + label + ": rebuilding its map from the log");
}

}  // namespace hbiss::volume
