// The hbiss command: builds the CLI11 app from the cmd_*.cc files and runs
// the chosen subcommand. See commands.h for how subcommands report errors.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "cli/commands.h"
#ifdef HBISS_HAVE_DFS
#include "hdfs/hdfs_store.h"
#endif

namespace hbiss::cli {

std::string DefaultStoreUri() {
  const char* env = std::getenv("HBISS_STORE");
  if (env != nullptr && env[0] != '\0') return env;
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/hbiss";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] == '/') return std::string(home) + "/.local/share/hbiss";
  return "/var/lib/hbiss";
}

}  // namespace hbiss::cli

int main(int argc, char** argv) {
  using hbiss::cli::GlobalOptions;

  // Logs never go to stdout: `hbiss dfs cat` and `hbiss export -` write data there.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
#ifdef HBISS_HAVE_DFS
  hbiss::hdfs::RegisterStoreScheme();  // hdfs:// URIs for --store
#endif

  CLI::App app{"hbiss: virtual-machine disks kept as log-structured volumes in a store"};
  app.name("hbiss");
  app.require_subcommand(1);
  // Lets subcommands accept the global options after their own name too
  // ("hbiss ls --store X").
  app.fallthrough();
  app.set_help_all_flag("--help-all", "Show help for every subcommand");

  GlobalOptions g;
  app.add_option("--store", g.store_uri,
                 "Store URI: a directory, file:///dir, mem://name or hdfs://host:port/dir "
                 "(default: $HBISS_STORE, else $XDG_DATA_HOME/hbiss, else "
                 "~/.local/share/hbiss)");
  app.add_flag("-v,--verbose", g.verbose, "Print progress details on stderr");

  int exit_code = 0;
  hbiss::cli::AddVolumeCommands(app, g, &exit_code);
  hbiss::cli::AddFsckCommand(app, g, &exit_code);
  hbiss::cli::AddCloneCommands(app, g, &exit_code);
  hbiss::cli::AddSpaceCommands(app, g, &exit_code);
#ifdef HBISS_HAVE_SERVE
  hbiss::cli::AddServeCommand(app, g, &exit_code);
  hbiss::cli::AddClusterCommands(app, g, &exit_code);
  hbiss::cli::AddSnapCommands(app, g, &exit_code);
  hbiss::cli::AddTrashCommands(app, g, &exit_code);
#endif
#ifdef HBISS_HAVE_DFS
  hbiss::cli::AddDfsCommand(app, g, &exit_code);
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, as for every other error; CLI11's own exit() adds a second.
    std::fprintf(stderr, "hbiss: %s (see hbiss --help)\n", e.what());
    return 2;
  }
  return exit_code;
}
