// AccessPolicy: the rule parser and the matcher (nbd/access.h).
#include "nbd/access.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>

namespace hbiss::nbd {
namespace {

ClientInfo V4(const char* ip, std::string identity = "") {
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  EXPECT_EQ(inet_pton(AF_INET, ip, &a.sin_addr), 1);
  ClientInfo c = ClientInfo::FromSockaddr(reinterpret_cast<sockaddr*>(&a), sizeof(a));
  c.identity = std::move(identity);
  c.tls = !c.identity.empty();
  return c;
}
ClientInfo V6(const char* ip, std::string identity = "") {
  sockaddr_in6 a = {};
  a.sin6_family = AF_INET6;
  EXPECT_EQ(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
  ClientInfo c = ClientInfo::FromSockaddr(reinterpret_cast<sockaddr*>(&a), sizeof(a));
  c.identity = std::move(identity);
  return c;
}
ClientInfo Unix(std::string identity = "") {
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  ClientInfo c = ClientInfo::FromSockaddr(reinterpret_cast<sockaddr*>(&a), sizeof(a));
  c.identity = std::move(identity);
  return c;
}

std::shared_ptr<const AccessPolicy> P(std::vector<std::string> rules) {
  auto p = AccessPolicy::Parse(rules);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? *p : nullptr;
}

TEST(AccessTest, NoRulesAllowsEverythingReadWrite) {
  auto p = P({});
  EXPECT_TRUE(p->allow_all());
  EXPECT_EQ(p->Check("vm", V4("192.0.2.1")), AccessMode::kReadWrite);
  EXPECT_EQ(p->Check("", Unix()), AccessMode::kReadWrite);
}

TEST(AccessTest, NoMatchingRuleDenies) {
  auto p = P({"vm 10.0.0.0/8"});
  EXPECT_EQ(p->Check("vm", V4("10.1.2.3")), AccessMode::kReadWrite);
  EXPECT_EQ(p->Check("vm", V4("11.1.2.3")), AccessMode::kDeny);
  EXPECT_EQ(p->Check("db", V4("10.1.2.3")), AccessMode::kDeny);
  EXPECT_EQ(p->Check("vm", Unix()), AccessMode::kDeny);
}

TEST(AccessTest, FirstMatchWins) {
  auto p = P({"secret * deny", "gold* 10.0.0.0/8 ro", "* *"});
  EXPECT_EQ(p->Check("secret", Unix()), AccessMode::kDeny);
  EXPECT_EQ(p->Check("gold-1", V4("10.9.9.9")), AccessMode::kReadOnly);
  EXPECT_EQ(p->Check("gold-1", V4("172.16.0.1")), AccessMode::kReadWrite);
  EXPECT_EQ(p->Check("other", V6("::1")), AccessMode::kReadWrite);
}

TEST(AccessTest, ExportGlobs) {
  auto p = P({"vm-? *", "snap@* * ro", "exact *"});
  EXPECT_TRUE(p->Visible("vm-1", Unix()));
  EXPECT_FALSE(p->Visible("vm-10", Unix()));
  EXPECT_EQ(p->Check("snap@s1", Unix()), AccessMode::kReadOnly);
  EXPECT_FALSE(p->Visible("snap", Unix()));
  EXPECT_TRUE(p->Visible("exact", Unix()));
  EXPECT_FALSE(p->Visible("exact2", Unix()));
  EXPECT_FALSE(p->Visible("", Unix()));
}

TEST(AccessTest, Ipv4Cidr) {
  auto p = P({"* 192.168.4.0/22", "* 203.0.113.7", "* 198.51.100.0/31"});
  EXPECT_TRUE(p->Visible("x", V4("192.168.4.0")));
  EXPECT_TRUE(p->Visible("x", V4("192.168.7.255")));
  EXPECT_FALSE(p->Visible("x", V4("192.168.8.0")));
  EXPECT_FALSE(p->Visible("x", V4("192.168.3.255")));
  EXPECT_TRUE(p->Visible("x", V4("203.0.113.7")));
  EXPECT_FALSE(p->Visible("x", V4("203.0.113.8")));
  EXPECT_TRUE(p->Visible("x", V4("198.51.100.1")));
  EXPECT_FALSE(p->Visible("x", V4("198.51.100.2")));
  // A v4 block never matches v6 or Unix clients.
  EXPECT_FALSE(p->Visible("x", V6("2001:db8::1")));
  EXPECT_FALSE(p->Visible("x", Unix()));
}

TEST(AccessTest, ZeroPrefixMatchesItsFamilyOnly) {
  auto p4 = P({"* 0.0.0.0/0"});
  EXPECT_TRUE(p4->Visible("x", V4("1.2.3.4")));
  EXPECT_FALSE(p4->Visible("x", V6("2001:db8::1")));
  auto p6 = P({"* ::/0"});
  EXPECT_TRUE(p6->Visible("x", V6("2001:db8::1")));
  EXPECT_FALSE(p6->Visible("x", V4("1.2.3.4")));
}

TEST(AccessTest, Ipv6Cidr) {
  auto p = P({"* 2001:db8:abcd::/48", "* ::1", "* fe80::/10"});
  EXPECT_TRUE(p->Visible("x", V6("2001:db8:abcd:12::5")));
  EXPECT_FALSE(p->Visible("x", V6("2001:db8:abce::5")));
  EXPECT_TRUE(p->Visible("x", V6("::1")));
  EXPECT_FALSE(p->Visible("x", V6("::2")));
  EXPECT_TRUE(p->Visible("x", V6("febf::1")));
  EXPECT_FALSE(p->Visible("x", V6("fec0::1")));
}

TEST(AccessTest, MappedIpv4PeersMatchIpv4Rules) {
  auto p = P({"* 127.0.0.0/8"});
  ClientInfo c = V6("::ffff:127.0.0.1");
  EXPECT_EQ(c.kind, ClientInfo::Kind::kIPv4);
  EXPECT_EQ(ClientAddressString(c), "127.0.0.1");
  EXPECT_TRUE(p->Visible("x", c));
  // A mapped rule matches plain IPv4 peers too.
  auto q = P({"* ::ffff:10.0.0.0/104"});
  EXPECT_TRUE(q->Visible("x", V4("10.3.2.1")));
  EXPECT_FALSE(q->Visible("x", V4("11.3.2.1")));
  EXPECT_EQ(q->rules()[0].ToString(), "* 10.0.0.0/8 rw");
}

TEST(AccessTest, UnixAndTcpClasses) {
  auto p = P({"local unix", "remote tcp"});
  EXPECT_TRUE(p->Visible("local", Unix()));
  EXPECT_FALSE(p->Visible("local", V4("127.0.0.1")));
  EXPECT_TRUE(p->Visible("remote", V4("127.0.0.1")));
  EXPECT_TRUE(p->Visible("remote", V6("::1")));
  EXPECT_FALSE(p->Visible("remote", Unix()));
}

TEST(AccessTest, Identities) {
  auto p = P({"vm-* alice@*", "db bob@10.0.0.0/8 ro", "shared *@*", "mail ops@example.com@unix"});
  EXPECT_TRUE(p->Visible("vm-1", V4("1.1.1.1", "alice")));
  EXPECT_FALSE(p->Visible("vm-1", V4("1.1.1.1", "bob")));
  EXPECT_FALSE(p->Visible("vm-1", V4("1.1.1.1")));  // no identity
  EXPECT_EQ(p->Check("db", V4("10.0.0.1", "bob")), AccessMode::kReadOnly);
  EXPECT_FALSE(p->Visible("db", V4("11.0.0.1", "bob")));
  EXPECT_TRUE(p->Visible("shared", V4("1.1.1.1", "anyone")));
  EXPECT_FALSE(p->Visible("shared", V4("1.1.1.1")));
  EXPECT_TRUE(p->Visible("mail", Unix("ops@example.com")));
  EXPECT_FALSE(p->Visible("mail", Unix("ops")));
  auto g = P({"* team-*@*"});
  EXPECT_TRUE(g->Visible("x", Unix("team-a")));
  EXPECT_FALSE(g->Visible("x", Unix("teamb")));
}

TEST(AccessTest, UnknownClientMatchesOnlyAnyAddress) {
  ClientInfo c;  // e.g. a socket whose address could not be read
  EXPECT_TRUE(P({"* *"})->Visible("x", c));
  EXPECT_FALSE(P({"* tcp", "* unix", "* 0.0.0.0/0", "* ::/0"})->Visible("x", c));
}

TEST(AccessTest, CanonicalText) {
  auto p = P({"vm 10.1.2.3/8", "* ::1", "a b@unix ro", "c *@tcp deny"});
  EXPECT_EQ(p->rules()[0].ToString(), "vm 10.0.0.0/8 rw");
  EXPECT_EQ(p->rules()[1].ToString(), "* ::1/128 rw");
  EXPECT_EQ(p->rules()[2].ToString(), "a b@unix ro");
  EXPECT_EQ(p->rules()[3].ToString(), "c *@tcp deny");
}

TEST(AccessTest, BadRulesAreRejectedWithTheirNumber) {
  for (const char* bad : {"", "vm", "vm * rw extra", "vm * maybe", "vm 10.0.0.0/33",
                          "vm ::/129", "vm 10.0.0.0/", "vm 10.0.0.0/x", "vm 300.1.1.1",
                          "vm host.example.com", "vm @10.0.0.1", "vm 10.0.0.0/-1"}) {
    auto p = AccessPolicy::Parse({"* unix", bad});
    ASSERT_FALSE(p.ok()) << "'" << bad << "' parsed";
    EXPECT_EQ(p.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(p.status().ToString().find("access rule 2"), std::string::npos)
        << p.status().ToString();
  }
}

}  // namespace
}  // namespace hbiss::nbd
