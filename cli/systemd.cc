#include "cli/systemd.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include <cstring>

namespace hbiss::cli {

void NotifySystemd(const std::string& state) {
  int rc = sd_notify(/*unset_environment=*/0, state.c_str());
  if (rc < 0) spdlog::debug("hbiss serve: sd_notify: {}", std::strerror(-rc));
}

Result<std::vector<int>> InheritedListenSockets() {
  int n = sd_listen_fds(/*unset_environment=*/1);
  if (n < 0) return Status::FromErrno("socket activation (LISTEN_FDS)", -n);
  std::vector<int> fds;
  for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1) <= 0) {
      return Status::InvalidArgument("socket activation: descriptor " + std::to_string(fd) +
                                     " is not a listening stream socket (check the .socket "
                                     "unit: ListenStream=)");
    }
    fds.push_back(fd);
  }
  return fds;
}

}  // namespace hbiss::cli
