// The config file of `hbiss serve --config FILE` (doc/serve-config.md): a TOML
// file whose keys set the same options as serve's flags, and its reload on
// SIGHUP.
//
// Every key is one line of the schema (kServeConfigSchema in serve_config.cc):
// "section.key", the serve flag it sets, and its TOML type. A file's settings
// are applied through the flags' own CLI11 options (their validators and
// variables), so a value from the file is checked exactly as the same value on
// the command line, and a flag given on the command line wins over the file.
//
// Errors name the file, the line and the key: "FILE:LINE: KEY: why".
//
// Thread safety: none of this is thread-safe. The loader runs in the serve
// command's callback; ServeReloader runs on the one thread that waits for
// signals.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace hbiss::cli {

// What a key's value must be in the file.
enum class ConfigType {
  kString,       // "text"
  kInt,          // 42
  kFloat,        // 0.5 (an integer is accepted too)
  kBool,         // true / false
  kSize,         // "2G" or a number of bytes
  kScalar,       // a string, number or boolean: for flags whose syntax is theirs
  kStringArray,  // ["a", "b"]: a repeatable flag, once per element
};

// One line of the schema.
struct ConfigKey {
  const char* key;   // "section.key"
  const char* flag;  // the serve (or global) flag it sets, "--listen"
  ConfigType type;
};

// The schema, in file order (the example file and doc/serve-config.md follow it).
const std::vector<ConfigKey>& ServeConfigSchema();

// One key set by a file, its value as the flag's argument strings (one per
// array element).
struct ConfigSetting {
  std::string key;
  std::string flag;
  std::vector<std::string> values;
  int line = 0;
};

struct ServeConfig {
  std::string path;
  std::vector<ConfigSetting> settings;  // in file order
  // The setting for `key`, or nullptr when the file does not set it.
  const ConfigSetting* Find(std::string_view key) const;
};

// Parses `text` as the TOML config named `path` (used only in messages) and
// checks every key against the schema and its type. InvalidArgument with
// "PATH:LINE: ..." for a syntax error, an unknown key ("unknown key"), a
// wrong type or an array element of the wrong type.
Result<ServeConfig> ParseServeConfig(std::string_view text, const std::string& path);
// Reads `path` and parses it; IOError (naming the file) when it cannot be read.
Result<ServeConfig> LoadServeConfig(const std::string& path);

// The option a flag names: in `serve` or, for global flags such as --store,
// in one of its parents. nullptr when this build has no such flag.
CLI::Option* FindServeOption(CLI::App* serve, const std::string& flag);

// The schema keys whose flag was given on the command line: they keep the
// command line's value, whatever the file says. Call it before
// ApplyServeConfig (afterwards the file's options count as given too).
std::set<std::string> PinnedKeys(CLI::App* serve);

// Checks every setting without storing anything: its flag must exist in
// this build, and each value must pass the flag's validators.
// InvalidArgument "PATH:LINE: KEY: why" for the first that does not.
Status CheckServeConfig(const ServeConfig& config, CLI::App* serve);

// Stores every setting whose key is not in `pinned` into its flag's option,
// as if given on the command line (validators, then the option's variable).
// Same errors as CheckServeConfig; a failure may leave earlier settings
// applied (serve then exits).
Status ApplyServeConfig(const ServeConfig& config, CLI::App* serve,
                        const std::set<std::string>& pinned);

// A setting that SIGHUP applies to the running server.
struct ReloadApplier {
  std::string key;  // "log.level"
  // Checks a new value (empty: the key is unset, its default applies); OK
  // or InvalidArgument with a message for the log. May be null.
  std::function<Status(const std::vector<std::string>&)> check;
  // Applies a value that passed `check`. Called on the reloading thread; it
  // must not block on clients and must be safe with connections running.
  std::function<void(const std::vector<std::string>&)> apply;
};

// log.level: spdlog's level names (trace, debug, info, warn, error,
// critical, off); `unset_level` when the key is unset.
ReloadApplier LogLevelApplier(std::string unset_level);

// Re-reads the config file on SIGHUP (doc/serve-config.md, "Reload").
class ServeReloader {
 public:
  // `config` is the file as loaded at startup (already applied), `pinned`
  // the keys given as flags. `serve` must outlive this.
  ServeReloader(ServeConfig config, CLI::App* serve, std::set<std::string> pinned);
  ServeReloader(const ServeReloader&) = delete;
  ServeReloader& operator=(const ServeReloader&) = delete;

  // Adds a reloadable setting; ApplyAtStart and Reload run appliers in the
  // order they were added.
  void AddApplier(ReloadApplier applier);

  // Runs every applier once with its startup value (the flag's value if
  // given or set by the file, else unset). Returns the first check failure.
  Status ApplyAtStart();

  // Re-reads and validates the file. Invalid: returns the error (naming file,
  // line and key) and changes nothing. Valid: applies each reloadable key
  // whose value changed (unless pinned), logs it, logs a warning for each
  // other key whose value changed ("takes effect at the next restart"), and
  // returns OK.
  Status Reload();

  const std::string& path() const { return config_.path; }

 private:
  // The values a key has now: the command line's if pinned, else the file's.
  std::vector<std::string> Effective(const ServeConfig& c, const std::string& key) const;

  ServeConfig config_;  // the file as last accepted
  // The file's values the server runs with for keys that need a restart (what
  // was loaded at startup): a warning is repeated until a restart.
  std::map<std::string, std::vector<std::string>> at_start_;
  CLI::App* serve_;
  std::set<std::string> pinned_;
  std::vector<ReloadApplier> appliers_;
};

}  // namespace hbiss::cli
