// hbiss serve's TLS and access-control flags (nbd/tls.h, nbd/access.h):
// registered by cmd_serve.cc, turned into ServerOptions at startup, and
// reloadable into a running Server (a SIGHUP reload calls ReloadTlsAccess).
//
//   --tls off|on|require     (default off)
//   --tls-certificates DIR   ca-cert.pem, server-cert.pem, server-key.pem
//   --tls-cert FILE, --tls-key FILE, --tls-ca FILE   explicit files
//   --tls-verify-peer        require a client certificate signed by the CA
//   --tls-psk FILE           username:hexkey lines (psktool)
//   --allow 'EXPORT-GLOB CLIENT [rw|ro|deny]'   repeatable, in order
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "nbd/access.h"
#include "nbd/server.h"
#include "nbd/tls.h"
#include "util/status.h"

namespace hbiss::cli {

struct TlsAccessArgs {
  std::string tls = "off";
  nbd::TlsOptions files;
  std::vector<std::string> allow;
};

// Adds the flags above to `serve`, storing into *a (which must outlive it).
void AddTlsAccessFlags(CLI::App* serve, TlsAccessArgs* a);

// Checks the flags, loads the credentials and parses the rules into
// so->conn. InvalidArgument/NotFound name the flag or file at fault.
Status ApplyTlsAccess(const TlsAccessArgs& a, nbd::ServerOptions* so);

// A SIGHUP reload: replaces `server`'s access rules with `a`'s, then (when
// TLS is on) re-reads the credential files and replaces its credentials.
// The rules do not wait for the credentials: a certificate missing in the
// middle of a rotation does not keep tightened rules from applying; then the
// running credentials stay and the error says why. New connections only.
// Logs what it replaced. Thread-safe.
Status ReloadTlsAccess(const TlsAccessArgs& a, nbd::Server* server);

// For the startup log line: "TLS require (X.509 ...), 3 access rules".
std::string DescribeTlsAccess(const nbd::ServerOptions& so);

}  // namespace hbiss::cli
