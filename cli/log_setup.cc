#include "cli/log_setup.h"

#include <cstdio>
#include <ctime>
#include <mutex>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace hbiss::cli {
namespace {

std::string Rfc3339(int64_t unix_ms) {
  const time_t secs = time_t(unix_ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[40];
  const size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &t);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", int(unix_ms % 1000));
  return buf;
}

// Writes each record as one JSON line on stderr. base_sink's mutex keeps
// the lines whole.
class JsonSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           msg.time.time_since_epoch())
                           .count();
    // The names --log-level takes ("warn", not spdlog's "warning").
    const auto lv = msg.level == spdlog::level::warn ? spdlog::string_view_t("warn")
                                                     : spdlog::level::to_string_view(msg.level);
    std::string line =
        JsonLogLine(ms, std::string(lv.data(), lv.size()),
                    std::string(msg.logger_name.data(), msg.logger_name.size()),
                    std::string(msg.payload.data(), msg.payload.size()));
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

}  // namespace

std::string JsonLogLine(int64_t unix_ms, const std::string& level, const std::string& logger,
                        const std::string& message) {
  nlohmann::ordered_json j;
  j["time"] = Rfc3339(unix_ms);
  j["level"] = level;
  j["logger"] = logger;
  j["message"] = message;
  // The prefixes the server's lines start with (nbd/server.cc, cluster/).
  if (message.rfind("nbd #", 0) == 0) {
    const size_t end = message.find_first_not_of("0123456789", 5);
    if (end != 5) j["connection"] = std::stoull(message.substr(5, end - 5));
  } else if (message.rfind("volume ", 0) == 0) {
    const size_t colon = message.find(':', 7);
    const size_t space = message.find(' ', 7);
    if (colon != std::string::npos && (space == std::string::npos || colon < space)) {
      j["volume"] = message.substr(7, colon - 7);
    }
  }
  // Messages may hold bytes that are not UTF-8 (a client's export name):
  // replace them rather than fail.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Status SetupServeLogging(const std::string& format, const std::string& level, bool verbose) {
  spdlog::level::level_enum lv = verbose ? spdlog::level::debug : spdlog::level::info;
  if (!level.empty()) {
    if (level == "trace") {
      lv = spdlog::level::trace;
    } else if (level == "debug") {
      lv = spdlog::level::debug;
    } else if (level == "info") {
      lv = spdlog::level::info;
    } else if (level == "warn") {
      lv = spdlog::level::warn;
    } else if (level == "error") {
      lv = spdlog::level::err;
    } else if (level == "critical") {
      lv = spdlog::level::critical;
    } else if (level == "off") {
      lv = spdlog::level::off;
    } else {
      return Status::InvalidArgument("unknown log level '" + level +
                                     "': want trace, debug, info, warn, error, critical or off");
    }
  }
  std::shared_ptr<spdlog::logger> logger;
  if (format == "json") {
    logger = std::make_shared<spdlog::logger>("hbiss", std::make_shared<JsonSink>());
  } else if (format == "text" || format.empty()) {
    logger = std::make_shared<spdlog::logger>(
        "hbiss", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  } else {
    return Status::InvalidArgument("unknown log format '" + format + "': want text or json");
  }
  logger->set_level(lv);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  spdlog::set_level(lv);
  return Status::OK();
}

}  // namespace hbiss::cli
