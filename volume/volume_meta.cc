#include "volume/volume_meta.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "volume/layout.h"
#include "volume/log_format.h"
#include "volume/volume.h"

namespace hbiss::volume {

std::string EncodeMeta(const VolumeMeta& m) {
  nlohmann::json j;
  j["format"] = "hbiss-volume";
  j["version"] = m.version;
  j["id"] = Hex16(m.id);
  j["size"] = m.size;
  j["block_size"] = kBlockSize;
  j["segment_size"] = m.segment_size;
  j["created"] = m.created;
  if (!m.parents.empty()) {
    j["parents"] = nlohmann::json::array();
    for (const ParentRef& p : m.parents) {
      j["parents"].push_back({{"volume", p.volume}, {"snap_id", p.snap_id}, {"snap", p.snap}});
    }
  }
  return j.dump(2) + "\n";
}

Result<VolumeMeta> DecodeMeta(const std::string& text, const std::string& name) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const char* why) {
    return Status::Corruption("volume " + name + ": meta " + why);
  };
  if (j.is_discarded() || !j.is_object()) return bad("is not a JSON object");
  if (!j.contains("format") || j["format"] != "hbiss-volume") return bad("has a wrong format tag");
  if (!j.contains("version") || !j["version"].is_number_unsigned()) return bad("has no version");
  if (j["version"].get<uint64_t>() > kCloneMetaVersion) {
    return Status::NotSupported("volume " + name + ": meta version " +
                                std::to_string(j["version"].get<uint64_t>()) +
                                " is newer than this build supports");
  }
  VolumeMeta m;
  m.version = uint32_t(j["version"].get<uint64_t>());
  if (m.version == 0) return bad("has version 0");
  if (!j.contains("id") || !j["id"].is_string() ||
      !ParseHex16(j["id"].get<std::string>(), &m.id) || m.id == 0) {
    return bad("has a bad id");
  }
  for (const char* k : {"size", "block_size", "segment_size"}) {
    if (!j.contains(k) || !j[k].is_number_unsigned()) return bad("lacks a numeric field");
  }
  m.size = j["size"].get<uint64_t>();
  m.segment_size = j["segment_size"].get<uint64_t>();
  if (j["block_size"].get<uint64_t>() != kBlockSize) return bad("has an unsupported block size");
  if (m.size == 0 || m.size % kBlockSize != 0 || m.size > kMaxVolumeSize) return bad("has a bad size");
  if (m.segment_size % kSlotSize != 0 || m.segment_size / kSlotSize < kMinSegmentSlots ||
      m.segment_size / kSlotSize > kMaxSegmentSlots) {
    return bad("has a bad segment size");
  }
  if (j.contains("created") && j["created"].is_number_integer()) m.created = j["created"];
  if (j.contains("parents")) {
    if (!j["parents"].is_array() || j["parents"].size() > kMaxCloneDepth) {
      return bad("has a bad parent chain");
    }
    for (const auto& e : j["parents"]) {
      ParentRef p;
      if (!e.is_object() || !e.contains("volume") || !e["volume"].is_string() ||
          !e.contains("snap_id") || !e["snap_id"].is_number_unsigned()) {
        return bad("has a bad parent");
      }
      p.volume = e["volume"].get<std::string>();
      p.snap_id = e["snap_id"].get<uint64_t>();
      if (e.contains("snap") && e["snap"].is_string()) p.snap = e["snap"].get<std::string>();
      if (!Volume::ValidateName(p.volume).ok() || p.snap_id == 0) return bad("has a bad parent");
      m.parents.push_back(std::move(p));
    }
  }
  return m;
}

Result<VolumeMeta> ReadMeta(store::Store* store, const std::string& name) {
  auto text = store->Get(layout::MetaName(name), layout::kMaxMetaBytes);
  if (!text.ok()) {
    if (text.status().IsNotFound()) {
      return Status::NotFound("volume " + name + " does not exist");
    }
    return text.status().WithContext("volume " + name + ": reading meta");
  }
  return DecodeMeta(*text, name);
}

// Lists the ids of the objects under `dir` whose names are 16 hex digits,
// sorted. A missing directory is empty.
Result<std::vector<std::pair<uint64_t, uint64_t>>> ListIds(store::Store* store,
                                                         const std::string& dir) {
  std::vector<std::pair<uint64_t, uint64_t>> ids;  // (id, size)
  auto list = store->List(dir);
  if (!list.ok()) {
    if (list.status().IsNotFound()) return ids;
    return list.status();
  }
  for (const auto& o : *list) {
    uint64_t id;
    if (!o.is_dir && ParseHex16(o.name, &id) && id != 0) ids.push_back({id, o.size});
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace hbiss::volume
