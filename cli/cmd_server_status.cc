// hbiss status (without a volume): asks running servers what they serve, to
// whom, and how they are doing, through their peer endpoint (STATUS,
// cluster/peer.proto; the report is metrics/serve_metrics.h StatusJson).
// Which servers: --server HOST:PORT, else every server the store's owner
// and open records name (a server records itself when it opens a volume,
// so one serving nothing is found only by --server).
// Built with cmd_serve.cc (HBISS_HAVE_SERVE): both need the cluster layer.
#include <cstdio>
#include <ctime>
#include <set>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cluster/node.h"
#include "cluster/peer.h"
#include "volume/layout.h"
#include "volume/volume.h"

namespace hbiss::cli {
namespace {

// Peer addresses of the servers the store's records name, sorted.
Result<std::set<std::string>> RecordedServers(store::Store* store) {
  HBISS_ASSIGN_OR_RETURN(std::vector<std::string> names, volume::Volume::List(store));
  std::set<std::string> peers;
  auto add = [&](const std::string& text) {
    auto r = cluster::DecodeServerRecord(text);
    if (r.ok() && !r->peer.empty()) peers.insert(r->peer);
  };
  for (const auto& name : names) {
    auto owner = volume::Volume::Owner(store, name);
    if (owner.ok() && !owner->owner.empty()) add(owner->owner);
    auto list = store->List(volume::layout::OpenDir(name));
    if (!list.ok()) continue;
    for (const auto& o : *list) {
      if (o.is_dir) continue;
      auto text = store->Get(volume::layout::OpenName(name, o.name), 4096);
      if (text.ok()) add(*text);
    }
  }
  return peers;
}

std::string When(int64_t t) { return UtcTime(t, "never"); }

std::string Duration(int64_t s) {
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{}m", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{}h", s / 86400, s % 86400 / 3600);
}

uint64_t U(const nlohmann::ordered_json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<uint64_t>() : 0;
}

void PrintText(const nlohmann::ordered_json& s) {
  std::printf("server %s (pid %lld), up %s, store %s\n", s.value("server", "?").c_str(),
              static_cast<long long>(s.value("pid", int64_t(0))),
              Duration(s.value("uptime_seconds", int64_t(0))).c_str(),
              s.value("store", "?").c_str());
  std::printf("  serving %s; peer %s; metrics %s\n", s.value("nbd", "").c_str(),
              s.value("peer", "").c_str(),
              s.value("metrics", "").empty() ? "off"
                                             : ("http://" + s.value("metrics", "") + "/metrics")
                                                   .c_str());
  const auto& m = s["memory"];
  std::printf(
      "  memory: limit %s; write buffers %s of %s (peak %s); CRC tables %s of %s; read cache %s "
      "of %s (%llu hits, %llu misses)\n",
      FormatBytes(U(m, "limit_bytes")).c_str(),
      FormatBytes(U(m["write_buffers"], "used_bytes")).c_str(),
      FormatBytes(U(m["write_buffers"], "capacity_bytes")).c_str(),
      FormatBytes(U(m["write_buffers"], "peak_bytes")).c_str(),
      FormatBytes(U(m["crc_tables"], "used_bytes")).c_str(),
      FormatBytes(U(m["crc_tables"], "capacity_bytes")).c_str(),
      FormatBytes(U(m["read_cache"], "used_bytes")).c_str(),
      FormatBytes(U(m["read_cache"], "capacity_bytes")).c_str(),
      static_cast<unsigned long long>(U(m["read_cache"], "hits")),
      static_cast<unsigned long long>(U(m["read_cache"], "misses")));
  std::printf("  volumes open: %zu\n", s["volumes"].size() + U(s, "volumes_omitted"));
  for (const auto& v : s["volumes"]) {
    std::printf("    %s: %s, %s mapped, log %s in %llu segments, write buffers %s", 
                v.value("name", "?").c_str(), FormatBytes(U(v, "size_bytes")).c_str(),
                FormatBytes(U(v, "mapped_bytes")).c_str(), FormatBytes(U(v, "log_bytes")).c_str(),
                static_cast<unsigned long long>(U(v, "segments")),
                FormatBytes(U(v, "write_buffer_bytes")).c_str());
    if (v.contains("unflushed_bytes")) {
      std::printf(", unflushed %s (last flush %s)", FormatBytes(U(v, "unflushed_bytes")).c_str(),
                  When(int64_t(U(v, "last_flush_ms") / 1000)).c_str());
    }
    std::printf(", %s, %llu connections\n", v.value("owner", false) ? "owner" : "reader",
                static_cast<unsigned long long>(U(v, "connections")));
    const auto& c = v["cleaner"];
    const auto& k = v["checkpoints"];
    std::printf("      cleaner: %llu segments cleaned, %llu deleted, %s copied; checkpoints: %llu "
                "written, newest %llu (%s)\n",
                static_cast<unsigned long long>(U(c, "segments_cleaned")),
                static_cast<unsigned long long>(U(c, "segments_deleted")),
                FormatBytes(U(c, "copied_bytes")).c_str(),
                static_cast<unsigned long long>(U(k, "written")),
                static_cast<unsigned long long>(U(k, "newest_seq")),
                FormatBytes(U(k, "last_bytes")).c_str());
  }
  if (U(s, "volumes_omitted") > 0) {
    std::printf("    (%llu more not shown)\n",
                static_cast<unsigned long long>(U(s, "volumes_omitted")));
  }
  std::printf("  connections: %zu open (%llu accepted, %llu refused)\n",
              s["connections"].size() + U(s, "connections_omitted"),
              static_cast<unsigned long long>(U(s, "connections_accepted")),
              static_cast<unsigned long long>(U(s, "connections_refused")));
  for (const auto& c : s["connections"]) {
    std::printf("    #%llu %s export %s, %llu requests, since %s\n",
                static_cast<unsigned long long>(U(c, "id")), c.value("peer", "?").c_str(),
                c.value("export", "").empty() ? "(negotiating)" : c.value("export", "").c_str(),
                static_cast<unsigned long long>(U(c, "requests")),
                When(c.value("since", int64_t(0))).c_str());
  }
  if (U(s, "connections_omitted") > 0) {
    std::printf("    (%llu more not shown)\n",
                static_cast<unsigned long long>(U(s, "connections_omitted")));
  }
}

}  // namespace

int RunServerStatus(const GlobalOptions& g, const std::string& server, bool json,
                    int timeout_ms) {
  const std::string ctx = "status";
  std::set<std::string> peers;
  if (!server.empty()) {
    peers.insert(server);
  } else {
    auto store = OpenStoreFor(g, false);
    if (!store.ok()) return Fail(ctx, store.status());
    auto found = RecordedServers(store->get());
    if (!found.ok()) return Fail(ctx, found.status());
    peers = std::move(*found);
    if (peers.empty()) {
      return Fail(ctx, Status::NotFound("no running server is recorded in the store (a server "
                                        "records itself once it opens a volume); name one "
                                        "with --server HOST:PORT (its peer endpoint)"));
    }
  }
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  int failures = 0;
  for (const auto& peer : peers) {
    cluster::pb::Request req;
    req.set_type(cluster::pb::Request::STATUS);
    req.set_id(1);
    req.set_from_server("hbiss-status");
    auto reply = cluster::PeerCall(peer, req, timeout_ms);
    Status st;
    if (!reply.ok()) {
      st = reply.status();
    } else if (reply->code() == cluster::pb::Reply::BAD_REQUEST) {
      // A server from before STATUS existed refuses the unknown type.
      st = Status::NotSupported("server " + peer + " does not report its status (an older "
                                "hbiss?)");
    } else if (reply->code() != cluster::pb::Reply::OK) {
      st = Status::IOError("server " + peer + ": " + reply->message());
    }
    nlohmann::ordered_json s;
    if (st.ok()) {
      s = nlohmann::ordered_json::parse(reply->status_json(), nullptr, /*allow_exceptions=*/false);
      if (s.is_discarded() || !s.is_object()) {
        st = Status::Corruption("server " + peer + " sent a status that is not JSON");
      }
    }
    if (!st.ok()) {
      // With servers found in the records, a stale record (a server gone)
      // is expected: say so and go on with the others.
      std::fprintf(stderr, "hbiss: %s: %s\n", ctx.c_str(), OneLine(st).c_str());
      failures++;
      continue;
    }
    if (json) {
      all.push_back(std::move(s));
    } else {
      PrintText(s);
    }
  }
  if (json) std::printf("%s\n", all.dump(2).c_str());
  return failures == int(peers.size()) ? 1 : 0;
}

}  // namespace hbiss::cli
