// serve's config file: each kind of error names the file, the line and the
// key; flags win over the file; the example file loads; SIGHUP's reload
// applies reloadable keys, warns about the others, and rejects a bad file
// without changing anything.
#include "cli/serve_config.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <fstream>
#include <set>

namespace hbiss::cli {
namespace {

// A stand-in for `hbiss serve`'s flags (cmd_serve.cc), validators included:
// --store in the parent app, as the global flag is.
struct App {
  CLI::App root{"test"};
  CLI::App* serve = nullptr;
  std::string store, listen = "127.0.0.1:10809", policy = "cost-benefit", memory = "2G";
  std::string log_level;
  int workers = 8;
  bool read_only = false;
  double threshold = 0.5;
  std::vector<std::string> allow;

  App() {
    root.fallthrough();
    root.add_option("--store", store);
    serve = root.add_subcommand("serve");
    serve->add_option("--listen", listen);
    serve->add_option("--workers", workers)->check(CLI::Range(1, 64));
    serve->add_flag("--read-only", read_only);
    serve->add_option("--clean-threshold", threshold)->check(CLI::Range(0.0, 0.9));
    serve->add_option("--clean-policy", policy)->check(CLI::IsMember({"cost-benefit", "greedy"}));
    serve->add_option("--memory-limit", memory);
    serve->add_option("--allow", allow);
    serve->add_option("--log-level", log_level);
  }
  // Parses `serve ARGS...` (CLI11 takes them last first).
  void Parse(std::vector<std::string> args) {
    args.insert(args.begin(), "serve");
    std::reverse(args.begin(), args.end());
    root.parse(args);
  }
  // Parses a command line, then applies `toml` as serve's callback does.
  Status Run(std::vector<std::string> args, const std::string& toml) {
    Parse(std::move(args));
    auto config = ParseServeConfig(toml, "serve.toml");
    if (!config.ok()) return config.status();
    return ApplyServeConfig(*config, serve, PinnedKeys(serve));
  }
};

// The error of `toml` applied to a fresh App.
std::string ErrorOf(const std::string& toml) {
  App app;
  Status s = app.Run({}, toml);
  EXPECT_FALSE(s.ok()) << toml;
  return s.message();
}

TEST(ServeConfig, SetsEveryKindOfFlag) {
  App app;
  ASSERT_TRUE(app.Run({}, R"(
[store]
uri = "/srv/hbiss"
[nbd]
listen = "0.0.0.0:10809"
workers = 16
read-only = true
[cleaner]
threshold = 0.25
policy = "greedy"
[memory]
limit = 1073741824
[access]
allow = ["10.0.0.0/8", "::1"]
)")
                  .ok());
  EXPECT_EQ(app.store, "/srv/hbiss");
  EXPECT_EQ(app.listen, "0.0.0.0:10809");
  EXPECT_EQ(app.workers, 16);
  EXPECT_TRUE(app.read_only);
  EXPECT_DOUBLE_EQ(app.threshold, 0.25);
  EXPECT_EQ(app.policy, "greedy");
  EXPECT_EQ(app.memory, "1073741824");
  EXPECT_EQ(app.allow, (std::vector<std::string>{"10.0.0.0/8", "::1"}));
}

TEST(ServeConfig, FlagsOverrideTheFile) {
  App app;
  ASSERT_TRUE(app.Run({"--workers", "4", "--store", "/cli"},
                      "store.uri = \"/file\"\nnbd.workers = 32\nnbd.listen = \"[::1]:0\"\n")
                  .ok());
  EXPECT_EQ(app.workers, 4);
  EXPECT_EQ(app.store, "/cli");
  EXPECT_EQ(app.listen, "[::1]:0");  // not on the command line: the file's
}

TEST(ServeConfig, FalseFlagAndIntegerForFloat) {
  App app;
  app.read_only = true;
  ASSERT_TRUE(app.Run({}, "nbd.read-only = false\ncleaner.threshold = 0\n").ok());
  EXPECT_FALSE(app.read_only);
  EXPECT_DOUBLE_EQ(app.threshold, 0.0);
}

TEST(ServeConfig, SyntaxErrorNamesFileAndLine) {
  std::string e = ErrorOf("[nbd]\nlisten = \"a\"\nworkers = = 3\n");
  EXPECT_NE(e.find("serve.toml:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("syntax error"), std::string::npos) << e;
}

TEST(ServeConfig, UnknownKeyAndSectionAreRejected) {
  std::string e = ErrorOf("[nbd]\nlisten = \"a\"\n\nlisen = \"b\"\n");
  EXPECT_EQ(e, "serve.toml:4: nbd.lisen: unknown key");
  e = ErrorOf("\n[nbdd]\nlisten = \"a\"\n");
  EXPECT_NE(e.find("serve.toml:2: nbdd: unknown key"), std::string::npos) << e;
  e = ErrorOf("workers = 3\n");
  EXPECT_EQ(e, "serve.toml:1: workers: unknown key");
  e = ErrorOf("[nbd.deeper]\nx = 1\n");
  EXPECT_NE(e.find("nbd.deeper: unknown key"), std::string::npos) << e;
}

TEST(ServeConfig, WrongTypeNamesKeyLineAndTypes) {
  std::string e = ErrorOf("[nbd]\n\nworkers = \"eight\"\n");
  EXPECT_EQ(e, "serve.toml:3: nbd.workers: must be an integer, not a string");
  e = ErrorOf("[nbd]\nread-only = 1\n");
  EXPECT_EQ(e, "serve.toml:2: nbd.read-only: must be a boolean (true or false), not an integer");
  e = ErrorOf("[access]\nallow = [\"a\",\n  3]\n");
  EXPECT_NE(e.find("serve.toml:3: access.allow: must be an array of strings"), std::string::npos)
      << e;
  e = ErrorOf("nbd = 3\n");
  EXPECT_NE(e.find("serve.toml:1: nbd: must be a table"), std::string::npos) << e;
}

TEST(ServeConfig, ValueRejectedByTheFlagsValidatorNamesKeyAndLine) {
  std::string e = ErrorOf("[nbd]\nworkers = 65\n");
  EXPECT_NE(e.find("serve.toml:2: nbd.workers: bad value '65'"), std::string::npos) << e;
  e = ErrorOf("[cleaner]\n# comment\npolicy = \"fifo\"\n");
  EXPECT_NE(e.find("serve.toml:3: cleaner.policy: bad value 'fifo'"), std::string::npos) << e;
}

TEST(ServeConfig, KeyWhoseFlagThisBuildLacksIsRejected) {
  std::string e = ErrorOf("[tls]\nmode = \"require\"\n");
  EXPECT_EQ(e, "serve.toml:2: tls.mode: this build of hbiss serve has no --tls option");
}

TEST(ServeConfig, FileErrorsNameTheFile) {
  auto c = LoadServeConfig("/nonexistent/hbiss.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().ToString().find("/nonexistent/hbiss.toml"), std::string::npos);
}

// Every key of the schema has a unique name in a known section and a flag.
TEST(ServeConfig, SchemaKeysAreWellFormed) {
  std::set<std::string> seen;
  for (const ConfigKey& k : ServeConfigSchema()) {
    std::string key = k.key;
    EXPECT_TRUE(seen.insert(key).second) << key;
    EXPECT_NE(key.find('.'), std::string::npos) << key;
    EXPECT_EQ(std::string(k.flag).rfind("--", 0), 0u) << key;
  }
}

// The example file in contrib/ is valid TOML whose every key is in the schema.
TEST(ServeConfig, ExampleFileLoads) {
  auto c = LoadServeConfig(HBISS_EXAMPLE_CONFIG);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_NE(c->Find("nbd.listen"), nullptr);
  EXPECT_NE(c->Find("store.uri"), nullptr);
}

class ServeReload : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hbiss-serve-config-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ::close(fd);
    path_ = tmpl;
  }
  void TearDown() override {
    std::remove(path_.c_str());
    spdlog::set_level(spdlog::level::info);
  }
  void Write(const std::string& text) { std::ofstream(path_) << text; }

  std::string path_;
};

TEST_F(ServeReload, AppliesLogLevelAndKeepsRunningSettingsOnABadFile) {
  Write("[log]\nlevel = \"warn\"\n[nbd]\nworkers = 4\n");
  App app;
  app.Parse({});
  auto config = LoadServeConfig(path_);
  ASSERT_TRUE(config.ok());
  auto pinned = PinnedKeys(app.serve);
  ASSERT_TRUE(ApplyServeConfig(*config, app.serve, pinned).ok());
  ServeReloader r(*config, app.serve, pinned);
  r.AddApplier(LogLevelApplier("info"));
  ASSERT_TRUE(r.ApplyAtStart().ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);

  Write("[log]\nlevel = \"debug\"\n[nbd]\nworkers = 4\n");
  ASSERT_TRUE(r.Reload().ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::debug);

  // A syntax error, a bad level, an unknown key: each rejected, level kept.
  Write("[log]\nlevel = \"error\n");
  Status s = r.Reload();
  EXPECT_NE(s.message().find(path_ + ":2:"), std::string::npos) << s.ToString();
  Write("[log]\nlevel = \"loud\"\n");
  s = r.Reload();
  EXPECT_NE(s.message().find(path_ + ":2: log.level: unknown log level 'loud'"),
            std::string::npos)
      << s.ToString();
  Write("[log]\nlevel = \"error\"\nnoise = 1\n");
  EXPECT_FALSE(r.Reload().ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::debug);

  // The key removed: back to the default; a restart-only key changing only warns.
  Write("[nbd]\nworkers = 8\n");
  ASSERT_TRUE(r.Reload().ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::info);
  EXPECT_EQ(app.workers, 4);  // what the server runs with is unchanged
}

TEST_F(ServeReload, PinnedLogLevelIgnoresTheFile) {
  Write("[log]\nlevel = \"warn\"\n");
  App app;
  app.Parse({"--log-level", "error"});
  auto config = LoadServeConfig(path_);
  ASSERT_TRUE(config.ok());
  auto pinned = PinnedKeys(app.serve);
  EXPECT_EQ(pinned.count("log.level"), 1u);
  ASSERT_TRUE(ApplyServeConfig(*config, app.serve, pinned).ok());
  ServeReloader r(*config, app.serve, pinned);
  r.AddApplier(LogLevelApplier("info"));
  ASSERT_TRUE(r.ApplyAtStart().ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::err);
  Write("[log]\nlevel = \"trace\"\n");
  ASSERT_TRUE(r.Reload().ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::err);
}

}  // namespace
}  // namespace hbiss::cli
