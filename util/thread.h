// StartThread: std::thread construction that reports failure as a Status.
//
// std::thread's constructor throws std::system_error when the OS refuses a
// thread (EAGAIN: RLIMIT_NPROC, the kernel's threads-max, no memory for a
// stack). Uncaught, that exception terminates the whole process, and with it
// every volume it serves. Start every thread through StartThread instead and
// handle the Status: close the one connection, fail the one open, run with
// fewer workers.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "util/status.h"

namespace hbiss {

namespace thread_internal {
// Consumes one injected failure for a thread named `what`, if any is armed
// (see FailThreadStartsForTest). Returns whether this start must fail.
bool TakeInjectedFailure(std::string_view what);
}  // namespace thread_internal

// Starts a thread running fn(). On success returns the joinable thread; the
// caller owns it and must join or detach it. On failure returns a retryable
// IOError "start thread <what>: <strerror text>" and fn, with whatever it
// captured, is destroyed without having run. `what` names the thread for
// that message (and for FailThreadStartsForTest). Thread-safe.
template <typename F>
Result<std::thread> StartThread(std::string_view what, F&& fn) {
  int err = 0;
  if (thread_internal::TakeInjectedFailure(what)) {
    err = EAGAIN;
  } else {
    try {
      return std::thread(std::forward<F>(fn));
    } catch (const std::system_error& e) {
      err = e.code().value();
    }
  }
  return Status::IOError("start thread " + std::string(what) + ": " +
                             std::system_category().message(err),
                         /*retryable=*/true);
}

// Test hook: makes the next `n` StartThread calls whose `what` starts with
// `what_prefix` ("" matches every thread) fail as if the OS had refused
// (EAGAIN), without creating a thread. n == 0 disarms. Thread-safe.
void FailThreadStartsForTest(int n, std::string_view what_prefix = "");

}  // namespace hbiss
