// Not a command: hbiss serve's TLS and access flags (serve_tls.h). Named
// cmd_* so cli/CMakeLists.txt's glob builds it into hbiss.
#include "cli/serve_tls.h"

#include <spdlog/spdlog.h>

namespace hbiss::cli {

void AddTlsAccessFlags(CLI::App* serve, TlsAccessArgs* a) {
  serve->add_option("--tls", a->tls,
                    "NBD over TLS: off (the default), on (offered; plain clients are served "
                    "too) or require (every client must STARTTLS first)")
      ->check(CLI::IsMember({"off", "on", "require"}));
  serve->add_option("--tls-certificates", a->files.cert_dir,
                    "Directory with server-cert.pem, server-key.pem and ca-cert.pem (nbdkit's "
                    "layout)");
  serve->add_option("--tls-cert", a->files.cert_file,
                    "PEM server certificate (overrides the directory's)");
  serve->add_option("--tls-key", a->files.key_file,
                    "PEM server private key (overrides the directory's)");
  serve->add_option("--tls-ca", a->files.ca_file,
                    "PEM CA certificates for --tls-verify-peer (overrides the directory's)");
  serve->add_flag("--tls-verify-peer", a->files.verify_peer,
                  "Require a client certificate signed by the CA; its CN is the client's "
                  "identity for --allow");
  serve->add_option("--tls-psk", a->files.psk_file,
                    "PSK file of USERNAME:HEXKEY lines (psktool's format); the username is the "
                    "client's identity for --allow");
  serve->add_option("--allow", a->allow,
                    "Access rule 'EXPORT-GLOB CLIENT [rw|ro|deny]', repeatable, first match "
                    "wins; CLIENT is [IDENTITY-GLOB@]ADDRESS with ADDRESS *, unix, tcp, an IP "
                    "or CIDR. With rules, an export no rule allows is hidden (LIST leaves it "
                    "out, opening it fails as for a missing one). Default: no rules, "
                    "everything allowed");
}

Status ApplyTlsAccess(const TlsAccessArgs& a, nbd::ServerOptions* so) {
  HBISS_ASSIGN_OR_RETURN(so->conn.tls, nbd::ParseTlsMode(a.tls));
  const bool files = !a.files.cert_dir.empty() || !a.files.cert_file.empty() ||
                     !a.files.key_file.empty() || !a.files.psk_file.empty();
  if (so->conn.tls == nbd::TlsMode::kOff) {
    if (files || a.files.verify_peer) {
      return Status::InvalidArgument("--tls-* credentials given with --tls off; add --tls on or "
                                     "--tls require");
    }
  } else {
    auto c = nbd::TlsCredentials::Load(a.files);
    if (!c.ok()) return c.status().WithContext("--tls");
    so->conn.tls_creds = std::move(*c);
  }
  auto p = nbd::AccessPolicy::Parse(a.allow);
  if (!p.ok()) return p.status().WithContext("--allow");
  so->conn.access = std::move(*p);
  return Status::OK();
}

Status ReloadTlsAccess(const TlsAccessArgs& a, nbd::Server* server) {
  auto rules = nbd::AccessPolicy::Parse(a.allow);
  if (!rules.ok()) return rules.status().WithContext("--allow: access rules not reloaded");
  server->SetAccess(*rules);
  spdlog::info("hbiss serve: reload: {} access rule(s)", a.allow.size());
  HBISS_ASSIGN_OR_RETURN(nbd::TlsMode mode, nbd::ParseTlsMode(a.tls));
  if (mode == nbd::TlsMode::kOff) return Status::OK();
  auto creds = nbd::TlsCredentials::Load(a.files);
  if (!creds.ok()) {
    return creds.status().WithContext(
        "TLS credentials not reloaded (new connections keep the running ones)");
  }
  server->SetTlsCredentials(*creds);
  spdlog::info("hbiss serve: reload: TLS credentials re-read ({})", (*creds)->Describe());
  return Status::OK();
}

std::string DescribeTlsAccess(const nbd::ServerOptions& so) {
  std::string d = std::string("TLS ") + nbd::TlsModeName(so.conn.tls);
  if (so.conn.tls_creds != nullptr) d += " (" + so.conn.tls_creds->Describe() + ")";
  if (so.conn.access == nullptr || so.conn.access->allow_all()) {
    d += ", no access rules (every client may open every export)";
  } else {
    d += ", " + std::to_string(so.conn.access->rules().size()) + " access rules";
  }
  return d;
}

}  // namespace hbiss::cli
