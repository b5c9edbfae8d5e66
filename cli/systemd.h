// systemd integration of `hbiss serve` (doc/serve-config.md, "systemd"):
// readiness and state notifications (sd_notify) and socket activation
// (sd_listen_fds). Both do nothing when the process was not started by
// systemd (or systemd-socket-activate): no NOTIFY_SOCKET, no LISTEN_FDS.
//
// Thread safety: NotifySystemd may be called from any thread;
// InheritedListenSockets once, from the main thread, before other threads
// read the environment.
#pragma once

#include <string>
#include <vector>

#include "util/status.h"

namespace hbiss::cli {

// Sends `state` ("READY=1", "STATUS=...", "RELOADING=1", "STOPPING=1", one
// or more newline-separated assignments) to the service manager named by
// $NOTIFY_SOCKET. A failure to send is logged at debug level and otherwise
// ignored: the server runs the same without a manager.
void NotifySystemd(const std::string& state);

// The listening sockets passed by socket activation ($LISTEN_FDS for this
// $LISTEN_PID), which it unsets. Empty when none were passed.
// InvalidArgument when one of them is not a listening stream socket (the
// unit's .socket file is wrong: a datagram or a non-listening socket). The
// caller owns the descriptors (close-on-exec is set).
Result<std::vector<int>> InheritedListenSockets();

}  // namespace hbiss::cli
