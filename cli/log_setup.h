// How `hbiss serve` logs (--log-format, --log-level): text lines as before,
// or JSON lines, one object per record, on stderr.
//
// A JSON record has "time" (UTC, RFC 3339 with milliseconds), "level"
// (trace, debug, info, warn, error, critical), "logger", "message", and,
// when the message starts with one of the prefixes the server's log lines
// use, the field it names: "nbd #ID ..." gives "connection": ID, "volume
// NAME: ..." gives "volume": NAME. Nothing else is parsed.
#pragma once

#include <string>

#include "util/status.h"

namespace hbiss::cli {

// Makes the default spdlog logger (named "hbiss") write `format` ("text" or
// "json") at `level` ("trace", "debug", "info", "warn", "error", "critical",
// "off"; empty:
// debug when `verbose`, else info). InvalidArgument for another value.
// Call from one thread before others log.
Status SetupServeLogging(const std::string& format, const std::string& level, bool verbose);

// The JSON line (no newline) of one record, for tests.
std::string JsonLogLine(int64_t unix_ms, const std::string& level, const std::string& logger,
                        const std::string& message);

}  // namespace hbiss::cli
