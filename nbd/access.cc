#include "nbd/access.h"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <netinet/in.h>

#include <cstring>
#include <sstream>

namespace hbiss::nbd {

namespace {

bool Glob(const std::string& pattern, const std::string& s) {
  return ::fnmatch(pattern.c_str(), s.c_str(), 0) == 0;
}

bool IsMappedV4(const uint8_t* a) {
  static const uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(a, kPrefix, 12) == 0;
}

bool PrefixEquals(const uint8_t* a, const uint8_t* b, int bits) {
  int bytes = bits / 8;
  if (std::memcmp(a, b, size_t(bytes)) != 0) return false;
  int rest = bits % 8;
  if (rest == 0) return true;
  uint8_t mask = uint8_t(0xff << (8 - rest));
  return (a[bytes] & mask) == (b[bytes] & mask);
}

}  // namespace

ClientInfo ClientInfo::FromSockaddr(const struct sockaddr* sa, socklen_t len) {
  ClientInfo c;
  if (sa == nullptr) return c;
  if (sa->sa_family == AF_UNIX) {
    c.kind = Kind::kUnix;
  } else if (sa->sa_family == AF_INET && len >= socklen_t(sizeof(sockaddr_in))) {
    c.kind = Kind::kIPv4;
    std::memcpy(c.addr.data(), &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6 && len >= socklen_t(sizeof(sockaddr_in6))) {
    const uint8_t* a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr.s6_addr;
    if (IsMappedV4(a)) {
      c.kind = Kind::kIPv4;
      std::memcpy(c.addr.data(), a + 12, 4);
    } else {
      c.kind = Kind::kIPv6;
      std::memcpy(c.addr.data(), a, 16);
    }
  }
  return c;
}

std::string ClientAddressString(const ClientInfo& c) {
  char buf[INET6_ADDRSTRLEN] = "?";
  switch (c.kind) {
    case ClientInfo::Kind::kUnix: return "unix";
    case ClientInfo::Kind::kIPv4: inet_ntop(AF_INET, c.addr.data(), buf, sizeof(buf)); break;
    case ClientInfo::Kind::kIPv6: inet_ntop(AF_INET6, c.addr.data(), buf, sizeof(buf)); break;
    case ClientInfo::Kind::kUnknown: return "unknown";
  }
  return buf;
}

bool AccessRule::MatchesClient(const ClientInfo& c) const {
  if (need_identity && (c.identity.empty() || !Glob(identity_glob, c.identity))) return false;
  switch (addr) {
    case Addr::kAny: return true;
    case Addr::kUnix: return c.kind == ClientInfo::Kind::kUnix;
    case Addr::kTcp: return c.kind == ClientInfo::Kind::kIPv4 || c.kind == ClientInfo::Kind::kIPv6;
    case Addr::kCidr:
      if (v6 ? c.kind != ClientInfo::Kind::kIPv6 : c.kind != ClientInfo::Kind::kIPv4) {
        return false;
      }
      return PrefixEquals(c.addr.data(), net.data(), prefix);
  }
  return false;
}

std::string AccessRule::ToString() const {
  std::string client = need_identity ? identity_glob + "@" : "";
  switch (addr) {
    case Addr::kAny: client += "*"; break;
    case Addr::kUnix: client += "unix"; break;
    case Addr::kTcp: client += "tcp"; break;
    case Addr::kCidr: {
      char buf[INET6_ADDRSTRLEN] = "?";
      inet_ntop(v6 ? AF_INET6 : AF_INET, net.data(), buf, sizeof(buf));
      client += std::string(buf) + "/" + std::to_string(prefix);
      break;
    }
  }
  const char* m = mode == AccessMode::kReadOnly ? "ro" : mode == AccessMode::kDeny ? "deny" : "rw";
  return export_glob + " " + client + " " + m;
}

Result<AccessRule> AccessPolicy::ParseRule(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  if (words.size() < 2 || words.size() > 3) {
    return Status::InvalidArgument("want 'EXPORT-GLOB CLIENT [rw|ro|deny]'");
  }
  AccessRule r;
  r.export_glob = words[0];
  if (words.size() == 3) {
    if (words[2] == "rw") {
      r.mode = AccessMode::kReadWrite;
    } else if (words[2] == "ro") {
      r.mode = AccessMode::kReadOnly;
    } else if (words[2] == "deny") {
      r.mode = AccessMode::kDeny;
    } else {
      return Status::InvalidArgument("mode '" + words[2] + "': want rw, ro or deny");
    }
  }
  std::string client = words[1];
  // The identity may itself hold '@' (an e-mail CN): the address is after the last.
  size_t at = client.rfind('@');
  std::string addr = client;
  if (at != std::string::npos) {
    r.need_identity = true;
    r.identity_glob = client.substr(0, at);
    addr = client.substr(at + 1);
    if (r.identity_glob.empty()) {
      return Status::InvalidArgument("client '" + client + "': empty identity before '@'");
    }
  }
  if (addr == "*") {
    r.addr = AccessRule::Addr::kAny;
  } else if (addr == "unix") {
    r.addr = AccessRule::Addr::kUnix;
  } else if (addr == "tcp") {
    r.addr = AccessRule::Addr::kTcp;
  } else {
    r.addr = AccessRule::Addr::kCidr;
    std::string ip = addr;
    int prefix = -1;
    size_t slash = addr.find('/');
    if (slash != std::string::npos) {
      ip = addr.substr(0, slash);
      std::string bits = addr.substr(slash + 1);
      if (bits.empty() || bits.size() > 3 ||
          bits.find_first_not_of("0123456789") != std::string::npos) {
        return Status::InvalidArgument("address '" + addr + "': bad prefix length");
      }
      prefix = std::stoi(bits);
    }
    if (inet_pton(AF_INET, ip.c_str(), r.net.data()) == 1) {
      r.v6 = false;
      if (prefix < 0) prefix = 32;
      if (prefix > 32) return Status::InvalidArgument("address '" + addr + "': prefix over 32");
    } else if (inet_pton(AF_INET6, ip.c_str(), r.net.data()) == 1) {
      r.v6 = true;
      if (prefix < 0) prefix = 128;
      if (prefix > 128) return Status::InvalidArgument("address '" + addr + "': prefix over 128");
      if (IsMappedV4(r.net.data()) && prefix >= 96) {  // match mapped peers as IPv4
        std::memmove(r.net.data(), r.net.data() + 12, 4);
        std::memset(r.net.data() + 4, 0, 12);
        r.v6 = false;
        prefix -= 96;
      }
    } else {
      return Status::InvalidArgument("address '" + addr +
                                     "': want *, unix, tcp, an IP address or a CIDR block");
    }
    r.prefix = prefix;
    // Canonical: clear the host bits, so ToString shows the network.
    for (int i = 0; i < 16; i++) {
      int keep = std::min(8, std::max(0, prefix - 8 * i));
      r.net[size_t(i)] &= uint8_t(keep == 0 ? 0 : 0xff << (8 - keep));
    }
  }
  return r;
}

Result<std::shared_ptr<const AccessPolicy>> AccessPolicy::Parse(
    const std::vector<std::string>& rules) {
  std::vector<AccessRule> out;
  for (size_t i = 0; i < rules.size(); i++) {
    auto r = ParseRule(rules[i]);
    if (!r.ok()) {
      return r.status().WithContext("access rule " + std::to_string(i + 1) + " '" + rules[i] +
                                    "'");
    }
    out.push_back(std::move(*r));
  }
  return std::make_shared<const AccessPolicy>(std::move(out));
}

AccessMode AccessPolicy::Check(const std::string& export_name, const ClientInfo& client) const {
  if (rules_.empty()) return AccessMode::kReadWrite;
  for (const AccessRule& r : rules_) {
    if (Glob(r.export_glob, export_name) && r.MatchesClient(client)) return r.mode;
  }
  return AccessMode::kDeny;
}

}  // namespace hbiss::nbd
