// Per-export access control: which exports a client may list and open, and
// whether it gets them read-only, by TLS identity and by source address.
//
// A policy is an ordered list of rules, one per string:
//
//     EXPORT-GLOB CLIENT [rw|ro|deny]
//
//   EXPORT-GLOB  an fnmatch(3) pattern on the export name ("*", "vm*",
//                "db-?", "vm@*" for every snapshot of vm).
//   CLIENT       [IDENTITY@]ADDRESS
//     IDENTITY   a glob on the TLS identity (PSK username, or the verified
//                client certificate's CN). Present: the client must have a
//                TLS identity matching it ("*@..." = any identified client).
//                Absent: the identity does not matter.
//     ADDRESS    "*" (anyone), "unix" (Unix-socket clients), "tcp" (any TCP
//                client), an IPv4 or IPv6 address, or a CIDR block
//                ("10.0.0.0/8", "fd00::/8"). IPv4-mapped IPv6 peers
//                (::ffff:a.b.c.d) match as IPv4.
//   mode         rw (default), ro (served read-only: NBD_FLAG_READ_ONLY,
//                writes fail with EPERM), deny.
//
// The first rule whose glob and client match decides; no matching rule
// denies. An empty policy allows everything read-write (no rules given).
// A denied export is invisible: LIST leaves it out, and INFO, GO and the
// meta-context options answer NBD_REP_ERR_UNKNOWN exactly as for a name that
// does not exist (EXPORT_NAME ends the session, as for an unknown name).
//
// Examples:
//   --allow '* unix'                    local clients get everything
//   --allow 'vm-* alice@*'              PSK/cert user alice gets vm-*
//   --allow 'gold 10.1.0.0/16 ro'       that subnet reads gold
//   --allow 'secret * deny' --allow '* *'  everything but secret, to anyone
//
// Thread safety: an AccessPolicy is immutable; share it through
// shared_ptr<const AccessPolicy> (Server::SetAccess swaps it for new
// connections).
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace hbiss::nbd {

// Who is asking: filled in by the server per connection (address) and after
// STARTTLS (identity).
struct ClientInfo {
  enum class Kind { kUnknown, kUnix, kIPv4, kIPv6 };
  Kind kind = Kind::kUnknown;
  std::array<uint8_t, 16> addr = {};  // network order; IPv4 in the first 4 bytes
  bool tls = false;                   // the session runs over TLS
  std::string identity;               // TLS identity, "" for none

  // From an accepted socket's peer address (AF_INET, AF_INET6 with mapped
  // IPv4 folded to IPv4, AF_UNIX).
  static ClientInfo FromSockaddr(const struct sockaddr* sa, socklen_t len);
};

enum class AccessMode { kReadWrite, kReadOnly, kDeny };

struct AccessRule {
  std::string export_glob;
  bool need_identity = false;
  std::string identity_glob;
  enum class Addr { kAny, kUnix, kTcp, kCidr } addr = Addr::kAny;
  bool v6 = false;  // kCidr: the block's family
  std::array<uint8_t, 16> net = {};
  int prefix = 0;  // kCidr: bits
  AccessMode mode = AccessMode::kReadWrite;

  bool MatchesClient(const ClientInfo& c) const;
  // Back to the rule's text (canonical).
  std::string ToString() const;
};

class AccessPolicy {
 public:
  // Parses one rule (see the file comment); InvalidArgument says what is
  // wrong with it.
  static Result<AccessRule> ParseRule(std::string_view text);
  // Parses every rule, in order; the error names the rule that failed. An
  // empty list gives the allow-everything policy.
  static Result<std::shared_ptr<const AccessPolicy>> Parse(const std::vector<std::string>& rules);

  explicit AccessPolicy(std::vector<AccessRule> rules) : rules_(std::move(rules)) {}

  // True when there are no rules: everything is allowed read-write.
  bool allow_all() const { return rules_.empty(); }
  // The mode the first matching rule gives `client` on `export_name`.
  AccessMode Check(const std::string& export_name, const ClientInfo& client) const;
  bool Visible(const std::string& export_name, const ClientInfo& client) const {
    return Check(export_name, client) != AccessMode::kDeny;
  }
  const std::vector<AccessRule>& rules() const { return rules_; }

 private:
  std::vector<AccessRule> rules_;
};

// "unix", "10.0.0.1", "::1" ... for logs.
std::string ClientAddressString(const ClientInfo& c);

}  // namespace hbiss::nbd
