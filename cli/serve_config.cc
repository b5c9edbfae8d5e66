#include "cli/serve_config.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>
#include <toml++/toml.h>

namespace hbiss::cli {
namespace {

// The schema: adding a key to the config file is adding its line here (and to
// doc/serve-config.md and contrib/hbiss/serve.toml). A key whose flag this
// build lacks is rejected ("this build has no --flag") when a file sets it:
// the flags of issue 11's other parts (limits, TLS, access, metrics, log
// format) are listed ahead of their merge.
const std::vector<ConfigKey> kSchema = {
    {"store.uri", "--store", ConfigType::kString},
    {"nbd.listen", "--listen", ConfigType::kString},
    {"nbd.socket", "--socket", ConfigType::kString},
    {"nbd.socket-mode", "--socket-mode", ConfigType::kString},
    {"nbd.socket-group", "--socket-group", ConfigType::kString},
    {"nbd.read-only", "--read-only", ConfigType::kBool},
    {"nbd.workers", "--workers", ConfigType::kInt},
    {"limits.max-connections", "--max-connections", ConfigType::kInt},
    {"limits.max-connections-per-export", "--max-connections-per-export", ConfigType::kInt},
    {"limits.handshake-timeout", "--handshake-timeout", ConfigType::kScalar},
    {"limits.idle-timeout", "--idle-timeout", ConfigType::kScalar},
    {"limits.tcp-keepalive", "--tcp-keepalive", ConfigType::kInt},
    {"tls.mode", "--tls", ConfigType::kScalar},
    {"tls.certificates", "--tls-certificates", ConfigType::kString},
    {"tls.cert", "--tls-cert", ConfigType::kString},
    {"tls.key", "--tls-key", ConfigType::kString},
    {"tls.ca", "--tls-ca", ConfigType::kString},
    {"tls.psk", "--tls-psk", ConfigType::kString},
    {"tls.verify-peer", "--tls-verify-peer", ConfigType::kBool},
    {"access.allow", "--allow", ConfigType::kStringArray},
    {"memory.limit", "--memory-limit", ConfigType::kSize},
    {"memory.cache-mb", "--cache-mb", ConfigType::kInt},
    {"cleaner.threshold", "--clean-threshold", ConfigType::kFloat},
    {"cleaner.policy", "--clean-policy", ConfigType::kString},
    {"cleaner.space-target", "--clean-space-target", ConfigType::kFloat},
    {"cluster.server-id", "--server-id", ConfigType::kString},
    {"cluster.peer-listen", "--peer-listen", ConfigType::kString},
    {"cluster.peer-advertise", "--peer-advertise", ConfigType::kString},
    {"log.level", "--log-level", ConfigType::kString},
    {"log.format", "--log-format", ConfigType::kString},
    {"metrics.listen", "--metrics-listen", ConfigType::kString},
};

const ConfigKey* FindKey(std::string_view key) {
  for (const ConfigKey& k : kSchema) {
    if (key == k.key) return &k;
  }
  return nullptr;
}

bool SectionExists(std::string_view section) {
  for (const ConfigKey& k : kSchema) {
    std::string_view s(k.key);
    if (s.substr(0, s.find('.')) == section) return true;
  }
  return false;
}

const char* TypeName(ConfigType t) {
  switch (t) {
    case ConfigType::kString: return "a string";
    case ConfigType::kInt: return "an integer";
    case ConfigType::kFloat: return "a number";
    case ConfigType::kBool: return "a boolean (true or false)";
    case ConfigType::kSize: return "a size (a string such as \"2G\", or a number of bytes)";
    case ConfigType::kScalar: return "a string, number or boolean";
    case ConfigType::kStringArray: return "an array of strings";
  }
  return "?";
}

const char* NodeTypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time: return "a date or time";
    default: return "nothing";
  }
}

int LineOf(const toml::source_region& r) { return int(r.begin.line); }

Status Error(const std::string& path, int line, std::string_view key, const std::string& why) {
  if (key.empty()) return Status::InvalidArgument(fmt::format("{}:{}: {}", path, line, why));
  return Status::InvalidArgument(fmt::format("{}:{}: {}: {}", path, line, key, why));
}

// One scalar as the flag's argument string; false when `n` is not of type `t`.
bool ScalarString(const toml::node& n, ConfigType t, std::string* out) {
  if (auto s = n.as_string(); s != nullptr) {
    if (t != ConfigType::kString && t != ConfigType::kSize && t != ConfigType::kScalar) {
      return false;
    }
    *out = s->get();
    return true;
  }
  if (auto i = n.as_integer(); i != nullptr) {
    if (t != ConfigType::kInt && t != ConfigType::kFloat && t != ConfigType::kSize &&
        t != ConfigType::kScalar) {
      return false;
    }
    *out = std::to_string(i->get());
    return true;
  }
  if (auto f = n.as_floating_point(); f != nullptr) {
    if (t != ConfigType::kFloat && t != ConfigType::kScalar) return false;
    *out = fmt::format("{}", f->get());
    return true;
  }
  if (auto b = n.as_boolean(); b != nullptr) {
    if (t != ConfigType::kBool && t != ConfigType::kScalar) return false;
    *out = b->get() ? "true" : "false";
    return true;
  }
  return false;
}

// Runs the option's validators over `value` (a copy: validators may rewrite
// it). Empty when it passes, else the validator's message.
std::string Validate(CLI::Option* opt, std::string value) {
  for (int i = 0;; i++) {
    CLI::Validator* v = nullptr;
    try {
      v = opt->get_validator(i);
    } catch (const CLI::OptionNotFound&) {
      return "";
    }
    std::string err = (*v)(value);
    if (!err.empty()) return err;
  }
}

std::string Joined(const std::vector<std::string>& values) {
  if (values.empty()) return "(the default)";
  if (values.size() == 1) return values[0];
  std::string s = "[";
  for (size_t i = 0; i < values.size(); i++) s += (i ? ", " : "") + values[i];
  return s + "]";
}

}  // namespace

const std::vector<ConfigKey>& ServeConfigSchema() { return kSchema; }

const ConfigSetting* ServeConfig::Find(std::string_view key) const {
  for (const ConfigSetting& s : settings) {
    if (s.key == key) return &s;
  }
  return nullptr;
}

Result<ServeConfig> ParseServeConfig(std::string_view text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(fmt::format("{}:{}:{}: syntax error: {}", path,
                                               e.source().begin.line, e.source().begin.column,
                                               e.description()));
  }
  ServeConfig config;
  config.path = path;
  for (auto&& [section_key, section] : root) {
    const std::string section_name(section_key.str());
    if (!section.is_table()) {
      if (SectionExists(section_name)) {
        return Error(path, LineOf(section_key.source()), section_name,
                     fmt::format("must be a table ([{}]), not {}", section_name,
                                 NodeTypeName(section)));
      }
      return Error(path, LineOf(section_key.source()), section_name, "unknown key");
    }
    if (!SectionExists(section_name)) {
      return Error(path, LineOf(section_key.source()), section_name,
                   "unknown key (no such section)");
    }
    for (auto&& [k, v] : *section.as_table()) {
      const std::string key = section_name + "." + std::string(k.str());
      const int line = LineOf(k.source());
      const ConfigKey* schema = FindKey(key);
      if (schema == nullptr) return Error(path, line, key, "unknown key");
      ConfigSetting s{key, schema->flag, {}, line};
      if (schema->type == ConfigType::kStringArray) {
        const toml::array* arr = v.as_array();
        if (arr == nullptr) {
          return Error(path, line, key,
                       fmt::format("must be {}, not {}", TypeName(schema->type), NodeTypeName(v)));
        }
        for (const toml::node& e : *arr) {
          std::string str;
          if (!ScalarString(e, ConfigType::kString, &str)) {
            return Error(path, LineOf(e.source()), key,
                         fmt::format("must be an array of strings, not one holding {}",
                                     NodeTypeName(e)));
          }
          s.values.push_back(std::move(str));
        }
      } else {
        std::string str;
        if (!ScalarString(v, schema->type, &str)) {
          return Error(path, line, key,
                       fmt::format("must be {}, not {}", TypeName(schema->type), NodeTypeName(v)));
        }
        s.values.push_back(std::move(str));
      }
      config.settings.push_back(std::move(s));
    }
  }
  // toml::table keeps keys sorted; report and apply in the file's order.
  std::stable_sort(config.settings.begin(), config.settings.end(),
                   [](const ConfigSetting& a, const ConfigSetting& b) { return a.line < b.line; });
  return config;
}

Result<ServeConfig> LoadServeConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno("config file " + path, errno);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::IOError("config file " + path + ": read error");
  return ParseServeConfig(text.str(), path);
}

CLI::Option* FindServeOption(CLI::App* serve, const std::string& flag) {
  for (CLI::App* app = serve; app != nullptr; app = app->get_parent()) {
    if (CLI::Option* opt = app->get_option_no_throw(flag); opt != nullptr) return opt;
  }
  return nullptr;
}

std::set<std::string> PinnedKeys(CLI::App* serve) {
  std::set<std::string> pinned;
  for (const ConfigKey& k : kSchema) {
    CLI::Option* opt = FindServeOption(serve, k.flag);
    if (opt != nullptr && opt->count() > 0) pinned.insert(k.key);
  }
  return pinned;
}

Status CheckServeConfig(const ServeConfig& config, CLI::App* serve) {
  for (const ConfigSetting& s : config.settings) {
    CLI::Option* opt = FindServeOption(serve, s.flag);
    if (opt == nullptr) {
      return Error(config.path, s.line, s.key,
                   fmt::format("this build of hbiss serve has no {} option", s.flag));
    }
    for (const std::string& v : s.values) {
      std::string err = Validate(opt, v);
      if (!err.empty()) {
        return Error(config.path, s.line, s.key, fmt::format("bad value '{}': {}", v, err));
      }
    }
  }
  return Status::OK();
}

Status ApplyServeConfig(const ServeConfig& config, CLI::App* serve,
                        const std::set<std::string>& pinned) {
  HBISS_RETURN_IF_ERROR(CheckServeConfig(config, serve));
  for (const ConfigSetting& s : config.settings) {
    if (pinned.count(s.key) > 0) {
      spdlog::debug("hbiss serve: {} from {} is overridden by {} on the command line", s.key,
                    config.path, s.flag);
      continue;
    }
    CLI::Option* opt = FindServeOption(serve, s.flag);
    opt->clear();
    for (const std::string& v : s.values) opt->add_result(v);
    try {
      opt->run_callback();
    } catch (const CLI::Error& e) {
      return Error(config.path, s.line, s.key,
                   fmt::format("bad value {}: {}", Joined(s.values), e.what()));
    }
  }
  return Status::OK();
}

ReloadApplier LogLevelApplier(std::string unset_level) {
  auto level = [unset_level](const std::vector<std::string>& v) {
    return spdlog::level::from_str(v.empty() ? unset_level : v.back());
  };
  ReloadApplier a;
  a.key = "log.level";
  a.check = [](const std::vector<std::string>& v) {
    if (v.empty()) return Status::OK();
    // from_str maps any unknown name to "off": accept only the real names.
    const std::string& name = v.back();
    if (name != "off" && spdlog::level::from_str(name) == spdlog::level::off) {
      return Status::InvalidArgument("unknown log level '" + name +
                                     "' (trace, debug, info, warn, error, critical or off)");
    }
    return Status::OK();
  };
  a.apply = [level](const std::vector<std::string>& v) { spdlog::set_level(level(v)); };
  return a;
}

ServeReloader::ServeReloader(ServeConfig config, CLI::App* serve, std::set<std::string> pinned)
    : config_(std::move(config)), serve_(serve), pinned_(std::move(pinned)) {
  for (const ConfigKey& k : kSchema) at_start_[k.key] = Effective(config_, k.key);
}

void ServeReloader::AddApplier(ReloadApplier applier) { appliers_.push_back(std::move(applier)); }

std::vector<std::string> ServeReloader::Effective(const ServeConfig& c,
                                                  const std::string& key) const {
  if (pinned_.count(key) > 0) {
    CLI::Option* opt = FindServeOption(serve_, FindKey(key)->flag);
    return opt != nullptr ? opt->results() : std::vector<std::string>{};
  }
  const ConfigSetting* s = c.Find(key);
  return s != nullptr ? s->values : std::vector<std::string>{};
}

Status ServeReloader::ApplyAtStart() {
  for (const ReloadApplier& a : appliers_) {
    std::vector<std::string> v = Effective(config_, a.key);
    if (a.check) {
      Status s = a.check(v);
      if (!s.ok()) {
        const ConfigSetting* set = config_.Find(a.key);
        return Error(config_.path, set != nullptr ? set->line : 0, a.key, s.message());
      }
    }
    a.apply(v);
  }
  return Status::OK();
}

Status ServeReloader::Reload() {
  HBISS_ASSIGN_OR_RETURN(ServeConfig next, LoadServeConfig(config_.path));
  HBISS_RETURN_IF_ERROR(CheckServeConfig(next, serve_));
  for (const ReloadApplier& a : appliers_) {
    if (!a.check) continue;
    Status s = a.check(Effective(next, a.key));
    if (!s.ok()) {
      const ConfigSetting* set = next.Find(a.key);
      return Error(next.path, set != nullptr ? set->line : 0, a.key, s.message());
    }
  }
  // Everything is logged before anything is applied, at info or, when the
  // running level is above info, at that level: the log always records a
  // reload, whatever level the reload sets.
  const auto level = std::max(spdlog::level::info, spdlog::get_level());
  std::set<std::string> reloadable;
  std::vector<std::pair<const ReloadApplier*, std::vector<std::string>>> changes;
  for (const ReloadApplier& a : appliers_) {
    reloadable.insert(a.key);
    std::vector<std::string> before = Effective(config_, a.key);
    std::vector<std::string> after = Effective(next, a.key);
    if (before == after) continue;
    spdlog::log(level, "hbiss serve: reload: {} is now {} (was {})", a.key, Joined(after),
                Joined(before));
    changes.emplace_back(&a, std::move(after));
  }
  for (const ConfigKey& k : kSchema) {
    if (reloadable.count(k.key) > 0) continue;
    std::vector<std::string> after = Effective(next, k.key);
    if (after == at_start_[k.key]) continue;
    spdlog::warn("hbiss serve: reload: {} changed to {} in {}; it takes effect at the next "
                 "restart (running with {})",
                 k.key, Joined(after), next.path, Joined(at_start_[k.key]));
  }
  spdlog::log(level, "hbiss serve: reloaded {} ({} setting(s) changed)", next.path,
              changes.size());
  for (auto& [a, values] : changes) a->apply(values);
  config_ = std::move(next);
  return Status::OK();
}

}  // namespace hbiss::cli
