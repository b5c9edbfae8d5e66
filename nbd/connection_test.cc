// Connection tests: a scripted client speaks raw NBD over a socketpair (or a
// BufferTransport for malformed input) to a Connection serving MemoryExports.
#include "nbd/connection.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "nbd/memory_export.h"
#include "nbd/test_util.h"
#include "util/coding.h"

namespace hbiss::nbd {
namespace {

using namespace ::hbiss::nbd::testing;  // NOLINT: test helpers

std::string Option(uint32_t opt, const std::string& data) {
  return Be64(kIHaveOpt) + Be32(opt) + Be32(uint32_t(data.size())) + data;
}
std::string InfoData(const std::string& name, std::vector<uint16_t> infos = {}) {
  std::string d = Be32(uint32_t(name.size())) + name + Be16(uint16_t(infos.size()));
  for (uint16_t i : infos) d += Be16(i);
  return d;
}
std::string MetaData(const std::string& name, std::vector<std::string> queries) {
  std::string d = Be32(uint32_t(name.size())) + name + Be32(uint32_t(queries.size()));
  for (auto& q : queries) d += Be32(uint32_t(q.size())) + q;
  return d;
}
std::string RequestBytes(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t off,
                         uint32_t len) {
  uint8_t b[kRequestSize];
  EncodeRequest(Request{kRequestMagic, flags, type, cookie, off, len}, b);
  return std::string(reinterpret_cast<char*>(b), sizeof(b));
}

struct OptReply {
  uint32_t option = 0, type = 0;
  std::string data;
};

struct Chunk {  // a simple reply or one structured chunk
  bool structured = false;
  uint16_t flags = 0, type = 0;
  uint64_t cookie = 0;
  uint32_t error = 0;  // simple reply error, or the error of an error chunk
  std::string payload;
};

// A blocking raw NBD client over one end of a socketpair; the other end is
// served by a Connection on a background thread.
class Harness {
 public:
  explicit Harness(ConnectionOptions opts = {}) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fd_ = sv[0];
    provider_.Add(vm_);
    provider_.Add(ro_);
    conn_ = std::make_unique<Connection>(std::make_unique<FdTransport>(sv[1]), &provider_, opts);
    thread_ = std::thread([this] { result_ = conn_->Run(); });
  }
  ~Harness() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }

  Connection* conn() { return conn_.get(); }
  // Waits for Run() to return; valid after the server ended the connection.
  Status Join() {
    thread_.join();
    thread_ = std::thread([] {});
    return result_;
  }

  void Send(const std::string& s) { ASSERT_EQ(::write(fd_, s.data(), s.size()), ssize_t(s.size())); }
  // Like Send, but false (no SIGPIPE) once the server closed its end.
  bool TrySend(const std::string& s) {
    return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size());
  }
  // Reads exactly n bytes; returns fewer at end of stream.
  std::string Recv(size_t n) {
    std::string s(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::read(fd_, s.data() + got, n - got);
      if (r <= 0) break;
      got += size_t(r);
    }
    s.resize(got);
    return s;
  }
  bool AtEof() { return Recv(1).empty(); }

  void Hello(uint32_t client_flags = kClientFlagFixedNewstyle | kClientFlagNoZeroes) {
    std::string h = Recv(18);
    ASSERT_EQ(h.size(), 18u);
    EXPECT_EQ(Get64(h, 0), kNbdMagic);
    EXPECT_EQ(Get64(h, 8), kIHaveOpt);
    EXPECT_EQ(Get16(h, 16), kFlagFixedNewstyle | kFlagNoZeroes);
    Send(Be32(client_flags));
  }
  OptReply ReadOpt() {
    OptReply r;
    std::string h = Recv(20);
    if (h.size() != 20) return r;
    EXPECT_EQ(Get64(h, 0), kOptReplyMagic);
    r.option = Get32(h, 8);
    r.type = Get32(h, 12);
    r.data = Recv(Get32(h, 16));
    return r;
  }
  // Negotiates and enters transmission on `name`.
  void Go(const std::string& name, bool structured, bool meta) {
    Hello();
    if (structured) {
      Send(Option(kOptStructuredReply, ""));
      ASSERT_EQ(ReadOpt().type, kRepAck);
    }
    if (meta) {
      Send(Option(kOptSetMetaContext, MetaData(name, {"base:allocation"})));
      OptReply r = ReadOpt();
      ASSERT_EQ(r.type, kRepMetaContext);
      ASSERT_EQ(ReadOpt().type, kRepAck);
    }
    Send(Option(kOptGo, InfoData(name)));
    OptReply r = ReadOpt();
    ASSERT_EQ(r.type, kRepInfo);
    eflags_ = Get16(r.data, 10);
    ASSERT_EQ(ReadOpt().type, kRepAck);
  }
  Chunk ReadChunk() {
    Chunk c;
    std::string h = Recv(4);
    if (h.size() != 4) return c;
    uint32_t magic = Get32(h, 0);
    if (magic == kSimpleReplyMagic) {
      std::string rest = Recv(12);
      c.error = Get32(rest, 0);
      c.cookie = Get64(rest, 4);
      return c;
    }
    EXPECT_EQ(magic, kStructuredReplyMagic);
    std::string rest = Recv(16);
    c.structured = true;
    c.flags = Get16(rest, 0);
    c.type = Get16(rest, 2);
    c.cookie = Get64(rest, 4);
    c.payload = Recv(Get32(rest, 12));
    if (c.type & 0x8000) c.error = Get32(c.payload, 0);
    return c;
  }
  // One request, one reply without payload (simple reply or final chunk).
  uint32_t Cmd(uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
               const std::string& payload = "") {
    Send(RequestBytes(type, flags, ++cookie_, off, len) + payload);
    Chunk c = ReadChunk();
    EXPECT_EQ(c.cookie, cookie_);
    return c.error;
  }
  // Sends a LIST or SET_META_CONTEXT; returns its replies up to the final
  // one (ACK or an error), included.
  std::vector<OptReply> Meta(uint32_t opt, const std::string& name,
                             std::vector<std::string> queries) {
    Send(Option(opt, MetaData(name, std::move(queries))));
    std::vector<OptReply> out;
    do {
      out.push_back(ReadOpt());
    } while (out.back().type == kRepMetaContext);
    return out;
  }
  // The chunks of one structured reply, up to the one carrying DONE.
  std::vector<Chunk> ReadChunks() {
    std::vector<Chunk> out;
    do {
      out.push_back(ReadChunk());
    } while (out.back().structured && !(out.back().flags & kReplyFlagDone) &&
             !out.back().payload.empty());
    return out;
  }
  // A simple-reply READ: returns the data (empty on error, with *err set).
  std::string ReadSimple(uint64_t off, uint32_t len, uint32_t* err) {
    Send(RequestBytes(kCmdRead, 0, ++cookie_, off, len));
    Chunk c = ReadChunk();
    EXPECT_EQ(c.cookie, cookie_);
    *err = c.error;
    return c.error == 0 ? Recv(len) : "";
  }

  std::shared_ptr<MemoryExport> vm_ = std::make_shared<MemoryExport>("vm", 1 << 20);
  std::shared_ptr<MemoryExport> ro_ = std::make_shared<MemoryExport>("ro", 1 << 16, true);
  MemoryProvider provider_;
  std::unique_ptr<Connection> conn_;
  std::thread thread_;
  Status result_;
  int fd_ = -1;
  uint16_t eflags_ = 0;
  uint64_t cookie_ = 0;
};

TEST(Handshake, ListInfoAndUnknownOptions) {
  Harness h;
  h.Hello();
  h.Send(Option(kOptList, ""));
  OptReply r = h.ReadOpt();
  ASSERT_EQ(r.type, kRepServer);
  EXPECT_EQ(r.data, Be32(2) + "ro");
  r = h.ReadOpt();
  EXPECT_EQ(r.data, Be32(2) + "vm");
  EXPECT_EQ(h.ReadOpt().type, kRepAck);

  h.Send(Option(kOptList, "junk"));
  EXPECT_EQ(h.ReadOpt().type, kRepErrInvalid);
  for (uint32_t opt : {kOptStartTls, 4u, 11u, 12345u}) {
    h.Send(Option(opt, "some data"));
    r = h.ReadOpt();
    EXPECT_EQ(r.option, opt);
    EXPECT_EQ(r.type, kRepErrUnsup);
  }

  // INFO with every info type requested.
  h.Send(Option(kOptInfo, InfoData("vm", {kInfoBlockSize, kInfoName, kInfoDescription, 77})));
  std::map<uint16_t, std::string> infos;
  while (true) {
    r = h.ReadOpt();
    if (r.type != kRepInfo) break;
    infos[Get16(r.data, 0)] = r.data;
  }
  EXPECT_EQ(r.type, kRepAck);
  ASSERT_TRUE(infos.count(kInfoExport));
  EXPECT_EQ(infos[kInfoExport].size(), 12u);
  EXPECT_EQ(Get64(infos[kInfoExport], 2), 1u << 20);
  uint16_t flags = Get16(infos[kInfoExport], 10);
  for (uint16_t f : {kFlagHasFlags, kFlagSendFlush, kFlagSendFua, kFlagSendTrim,
                     kFlagSendWriteZeroes, kFlagSendFastZero, kFlagCanMultiConn,
                     kFlagSendCache}) {
    EXPECT_TRUE(flags & f) << f;
  }
  EXPECT_FALSE(flags & kFlagReadOnly);
  EXPECT_FALSE(flags & kFlagSendDf);  // no structured replies negotiated
  ASSERT_TRUE(infos.count(kInfoBlockSize));
  EXPECT_EQ(Get32(infos[kInfoBlockSize], 2), 1u);
  EXPECT_EQ(Get32(infos[kInfoBlockSize], 6), 4096u);
  EXPECT_EQ(Get32(infos[kInfoBlockSize], 10), kMaxPayload);
  EXPECT_EQ(infos[kInfoName].substr(2), "vm");
  EXPECT_FALSE(infos[kInfoDescription].substr(2).empty());

  // INFO without a block-size request sends no INFO_BLOCK_SIZE.
  h.Send(Option(kOptInfo, InfoData("ro")));
  r = h.ReadOpt();
  ASSERT_EQ(r.type, kRepInfo);
  EXPECT_TRUE(Get16(r.data, 10) & kFlagReadOnly);
  EXPECT_FALSE(Get16(r.data, 10) & kFlagSendTrim);
  EXPECT_EQ(h.ReadOpt().type, kRepAck);

  h.Send(Option(kOptInfo, InfoData("nope")));
  EXPECT_EQ(h.ReadOpt().type, kRepErrUnknown);
  h.Send(Option(kOptGo, Be32(100) + "vm" + Be16(0)));
  EXPECT_EQ(h.ReadOpt().type, kRepErrInvalid);

  // Still negotiating: GO works after all of that.
  h.Send(Option(kOptGo, InfoData("vm")));
  EXPECT_EQ(h.ReadOpt().type, kRepInfo);
  EXPECT_EQ(h.ReadOpt().type, kRepAck);
  EXPECT_EQ(h.Cmd(kCmdFlush, 0, 0, 0), 0u);
}

TEST(Handshake, MetaContexts) {
  Harness h;
  h.Hello();
  h.Send(Option(kOptSetMetaContext, MetaData("vm", {"base:allocation"})));
  EXPECT_EQ(h.ReadOpt().type, kRepErrInvalid);  // structured replies first
  h.Send(Option(kOptStructuredReply, ""));
  EXPECT_EQ(h.ReadOpt().type, kRepAck);

  h.Send(Option(kOptListMetaContext, MetaData("vm", {})));
  OptReply r = h.ReadOpt();
  ASSERT_EQ(r.type, kRepMetaContext);
  EXPECT_EQ(r.data.substr(4), "base:allocation");
  EXPECT_EQ(h.ReadOpt().type, kRepAck);
  h.Send(Option(kOptListMetaContext, MetaData("vm", {"base:"})));
  EXPECT_EQ(h.ReadOpt().type, kRepMetaContext);
  EXPECT_EQ(h.ReadOpt().type, kRepAck);
  h.Send(Option(kOptListMetaContext, MetaData("vm", {"qemu:dirty-bitmap:x", "x-y:z"})));
  EXPECT_EQ(h.ReadOpt().type, kRepAck);  // unknown namespaces are ignored
  h.Send(Option(kOptListMetaContext, Be32(2) + "vm" + Be32(5)));
  EXPECT_EQ(h.ReadOpt().type, kRepErrInvalid);
  h.Send(Option(kOptSetMetaContext, MetaData("nope", {"base:allocation"})));
  EXPECT_EQ(h.ReadOpt().type, kRepErrUnknown);

  h.Send(Option(kOptSetMetaContext, MetaData("vm", {"base:", "base:allocation"})));
  r = h.ReadOpt();
  ASSERT_EQ(r.type, kRepMetaContext);
  EXPECT_EQ(Get32(r.data, 0), kBaseAllocationId);
  EXPECT_EQ(r.data.substr(4), "base:allocation");
  EXPECT_EQ(h.ReadOpt().type, kRepAck);

  // The context was set for "vm": going to "ro" leaves block status off.
  h.Send(Option(kOptGo, InfoData("ro")));
  r = h.ReadOpt();
  EXPECT_TRUE(Get16(r.data, 10) & kFlagSendDf);
  EXPECT_EQ(h.ReadOpt().type, kRepAck);
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, 0, 4096), kEInval);
}

TEST(Handshake, ExportNameWithAndWithoutZeroes) {
  {
    Harness h;
    h.Hello(kClientFlagFixedNewstyle);
    h.Send(Option(kOptExportName, "vm"));
    std::string r = h.Recv(134);
    ASSERT_EQ(r.size(), 134u);
    EXPECT_EQ(Get64(r, 0), 1u << 20);
    EXPECT_EQ(r.substr(10), std::string(124, '\0'));
    EXPECT_EQ(h.Cmd(kCmdFlush, 0, 0, 0), 0u);
  }
  {
    Harness h;
    h.Hello();
    h.Send(Option(kOptExportName, "vm"));
    std::string r = h.Recv(10);
    EXPECT_EQ(Get64(r, 0), 1u << 20);
    EXPECT_EQ(h.Cmd(kCmdFlush, 0, 0, 0), 0u);
  }
  {
    Harness h;  // unknown export: no error reply is possible, so hang up
    h.Hello();
    h.Send(Option(kOptExportName, "nope"));
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
  }
}

TEST(Handshake, AbortAndBrokenStreams) {
  {
    Harness h;
    h.Hello();
    h.Send(Option(kOptAbort, ""));
    EXPECT_EQ(h.ReadOpt().type, kRepAck);
    EXPECT_TRUE(h.AtEof());
    EXPECT_TRUE(h.Join().ok());
  }
  {
    Harness h;  // unknown client flags
    h.Hello(1u << 7);
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
  }
  {
    Harness h;  // bad option magic
    h.Hello();
    h.Send(Be64(0x1234) + Be32(kOptList) + Be32(0));
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
  }
  {
    Harness h;  // an option claiming 4 GiB of data is refused without reading it
    h.Hello();
    h.Send(Be64(kIHaveOpt) + Be32(kOptGo) + Be32(0xffffffffu));
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
  }
  {
    Harness h;  // truncated option payload, then the client goes away
    h.Hello();
    h.Send(Be64(kIHaveOpt) + Be32(kOptGo) + Be32(100) + "vm");
    ::shutdown(h.fd_, SHUT_WR);
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
  }
}

TEST(Transmission, SimpleRepliesReadWriteFlushTrim) {
  Harness h;
  h.Go("vm", false, false);
  EXPECT_FALSE(h.eflags_ & kFlagSendDf);
  std::string data(8192, 'a');
  for (size_t i = 0; i < data.size(); i++) data[i] = char(i * 7);
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 4096, 8192, data), 0u);
  uint32_t err;
  EXPECT_EQ(h.ReadSimple(4096, 8192, &err), data);
  EXPECT_EQ(err, 0u);
  EXPECT_EQ(h.ReadSimple(4095, 2, &err), std::string(1, '\0') + data[0]);  // unaligned

  uint64_t flushes = h.vm_->flushes;
  EXPECT_EQ(h.Cmd(kCmdWrite, kCmdFlagFua, 0, 3, "xyz"), 0u);
  EXPECT_EQ(h.vm_->flushes, flushes + 1);  // FUA acknowledged after a flush
  EXPECT_EQ(h.Cmd(kCmdFlush, 0, 0, 0), 0u);
  EXPECT_EQ(h.vm_->flushes, flushes + 2);

  EXPECT_EQ(h.Cmd(kCmdTrim, 0, 4096, 4096), 0u);
  EXPECT_EQ(h.ReadSimple(4096, 4096, &err), std::string(4096, '\0'));
  EXPECT_EQ(h.Cmd(kCmdWriteZeroes, kCmdFlagNoHole, 8192, 10), 0u);
  EXPECT_EQ(h.vm_->no_hole_zeroes, 1u);
  EXPECT_EQ(h.ReadSimple(8192, 12, &err), std::string(10, '\0') + data.substr(4096 + 10, 2));
  EXPECT_EQ(h.Cmd(kCmdCache, 0, 0, 1 << 20), 0u);
  EXPECT_EQ(h.Cmd(kCmdWriteZeroes, kCmdFlagFastZero, 0, 4096), 0u);

  h.Send(RequestBytes(kCmdDisc, 0, 99, 0, 0));
  EXPECT_TRUE(h.AtEof());
  EXPECT_TRUE(h.Join().ok());
}

TEST(Transmission, BadRequestsGetErrorsAndConnectionStaysUsable) {
  Harness h;
  h.Go("vm", false, false);
  uint32_t err;
  const uint64_t size = 1 << 20;
  EXPECT_EQ(h.ReadSimple(size, 1, &err), "");
  EXPECT_EQ(err, kEInval);
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, size - 1, 2, "ab"), kENoSpc);  // payload still consumed
  EXPECT_EQ(h.Cmd(kCmdWriteZeroes, 0, size, 1), kENoSpc);
  EXPECT_EQ(h.Cmd(kCmdTrim, 0, size - 1, 2), kEInval);
  EXPECT_EQ(h.Cmd(kCmdRead, 0, 0, 0), kEInval);
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 0, 0), kEInval);
  EXPECT_EQ(h.Cmd(kCmdTrim, 0, 0, 0), kEInval);
  EXPECT_EQ(h.Cmd(kCmdWrite, kCmdFlagNoHole, 0, 2, "ab"), kEInval);
  EXPECT_EQ(h.Cmd(kCmdRead, kCmdFlagDf, 0, 1), kEInval);  // DF needs structured replies
  EXPECT_EQ(h.Cmd(kCmdWrite, 0x8000, 0, 2, "ab"), kEInval);
  EXPECT_EQ(h.Cmd(kCmdFlush, 0, 1, 0), kEInval);
  EXPECT_EQ(h.Cmd(42, 0, 0, 1), kEInval);
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, 0, 4096), kEInval);  // no meta context
  EXPECT_EQ(h.vm_->writes, 0u);  // nothing invalid reached the export
  EXPECT_EQ(h.vm_->trims, 0u);
  EXPECT_EQ(h.vm_->zeroes, 0u);

  // A WRITE longer than the maximum payload (and the export): its payload is
  // skipped, so the stream stays in step.
  std::string big(kMaxPayload + 4096, 'z');
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 0, uint32_t(big.size()), big), kENoSpc);
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 0, 2, "ok"), 0u);
  EXPECT_EQ(h.ReadSimple(0, 2, &err), "ok");
}

TEST(Transmission, ReadOnlyExport) {
  Harness h;
  h.Go("ro", false, false);
  EXPECT_TRUE(h.eflags_ & kFlagReadOnly);
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 0, 2, "ab"), kEPerm);
  EXPECT_EQ(h.Cmd(kCmdTrim, 0, 0, 4096), kEPerm);
  EXPECT_EQ(h.Cmd(kCmdWriteZeroes, 0, 0, 4096), kEPerm);
  uint32_t err;
  EXPECT_EQ(h.ReadSimple(0, 4, &err), std::string(4, '\0'));
  EXPECT_EQ(h.Cmd(kCmdFlush, 0, 0, 0), 0u);
}

TEST(Transmission, ServerWideReadOnly) {
  ConnectionOptions o;
  o.read_only = true;
  Harness h(o);
  h.Go("vm", false, false);
  EXPECT_TRUE(h.eflags_ & kFlagReadOnly);
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 0, 2, "ab"), kEPerm);
  EXPECT_EQ(h.vm_->writes, 0u);
}

TEST(Transmission, StructuredReadsErrorsAndBlockStatus) {
  Harness h;
  h.Go("vm", true, true);
  EXPECT_TRUE(h.eflags_ & kFlagSendDf);
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 8192, 4096, std::string(4096, 'q')), 0u);

  h.Send(RequestBytes(kCmdRead, kCmdFlagDf, 7, 8192, 10));
  Chunk c = h.ReadChunk();
  EXPECT_TRUE(c.structured);
  EXPECT_EQ(c.cookie, 7u);
  EXPECT_EQ(c.type, kReplyTypeOffsetData);
  EXPECT_EQ(c.flags, kReplyFlagDone);
  EXPECT_EQ(Get64(c.payload, 0), 8192u);
  EXPECT_EQ(c.payload.substr(8), std::string(10, 'q'));

  h.Send(RequestBytes(kCmdRead, 0, 8, 1 << 20, 10));
  c = h.ReadChunk();
  EXPECT_EQ(c.type, kReplyTypeError);
  EXPECT_EQ(c.flags, kReplyFlagDone);
  EXPECT_EQ(c.error, kEInval);
  EXPECT_EQ(Get16(c.payload, 4), c.payload.size() - 6);  // message length

  // Holes: [0,8K) never written, [8K,12K) data, [12K,16K) trimmed after a
  // write, [16K,20K) zeroed after a write, rest never written.
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 12288, 8192, std::string(8192, 'w')), 0u);
  EXPECT_EQ(h.Cmd(kCmdTrim, 0, 12288, 4096), 0u);
  EXPECT_EQ(h.Cmd(kCmdWriteZeroes, 0, 16384, 4096), 0u);
  h.Send(RequestBytes(kCmdBlockStatus, 0, 9, 0, 1 << 20));
  c = h.ReadChunk();
  ASSERT_EQ(c.type, kReplyTypeBlockStatus);
  EXPECT_EQ(c.flags, kReplyFlagDone);
  EXPECT_EQ(Get32(c.payload, 0), kBaseAllocationId);
  ASSERT_EQ(c.payload.size(), 4u + 3 * 8);
  EXPECT_EQ(Get32(c.payload, 4), 8192u);
  EXPECT_EQ(Get32(c.payload, 8), kStateHole | kStateZero);
  EXPECT_EQ(Get32(c.payload, 12), 4096u);
  EXPECT_EQ(Get32(c.payload, 16), 0u);
  EXPECT_EQ(Get32(c.payload, 20), (1u << 20) - 12288);
  EXPECT_EQ(Get32(c.payload, 24), kStateHole | kStateZero);

  h.Send(RequestBytes(kCmdBlockStatus, kCmdFlagReqOne, 10, 4096, 100));
  c = h.ReadChunk();
  ASSERT_EQ(c.payload.size(), 12u);
  EXPECT_EQ(Get32(c.payload, 4), 100u);  // never longer than asked with REQ_ONE

  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, 1 << 20, 1), kEInval);
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, 0, 0), kEInval);
}

// The (context id, name) pairs of META_CONTEXT replies; the final reply's
// type must be `last`.
std::vector<std::pair<uint32_t, std::string>> Contexts(const std::vector<OptReply>& rs,
                                                       uint32_t last = kRepAck) {
  std::vector<std::pair<uint32_t, std::string>> out;
  EXPECT_EQ(rs.back().type, last);
  for (size_t i = 0; i + 1 < rs.size(); i++) {
    EXPECT_EQ(rs[i].type, kRepMetaContext);
    out.emplace_back(Get32(rs[i].data, 0), rs[i].data.substr(4));
  }
  return out;
}

using Ctx = std::vector<std::pair<uint32_t, std::string>>;
const std::string kS1 = "qemu:dirty-bitmap:s1";
const std::string kS2 = "qemu:dirty-bitmap:s2";

TEST(Handshake, DirtyBitmapContextsListAndSet) {
  Harness h;
  h.vm_->StartDirtyBitmap("s1");
  h.vm_->StartDirtyBitmap("s2");
  h.Hello();
  h.Send(Option(kOptStructuredReply, ""));
  ASSERT_EQ(h.ReadOpt().type, kRepAck);

  // LIST: no query lists everything; namespace queries list theirs.
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "vm", {})),
            (Ctx{{0, "base:allocation"}, {0, kS1}, {0, kS2}}));
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "vm", {"qemu:"})), (Ctx{{0, kS1}, {0, kS2}}));
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "vm", {"qemu:dirty-bitmap:"})),
            (Ctx{{0, kS1}, {0, kS2}}));
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "vm", {"base:"})),
            (Ctx{{0, "base:allocation"}}));
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "vm", {kS2, "qemu:dirty-bitmap:nope"})),
            (Ctx{{0, kS2}}));
  // Each context once, however often the queries name it.
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "vm", {kS2, "qemu:", kS2})),
            (Ctx{{0, kS2}, {0, kS1}}));
  // Unknown names, other namespaces, a bare "qemu" and an export without
  // bitmaps: nothing, and no error.
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "vm",
                            {"qemu:dirty-bitmap:nope", "qemu:allocation-depth", "qemu", "x:"})),
            Ctx{});
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "ro", {"qemu:"})), Ctx{});
  EXPECT_EQ(Contexts(h.Meta(kOptListMetaContext, "ro", {})), (Ctx{{0, "base:allocation"}}));

  // SET: whole names only, ids 1 (base:allocation) then 2, 3, ...
  EXPECT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", {"qemu:", "qemu:dirty-bitmap:"})), Ctx{});
  EXPECT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", {"base:"})), Ctx{});
  EXPECT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm",
                            {"qemu:dirty-bitmap:nope", kS2, "base:allocation", kS2})),
            (Ctx{{kBaseAllocationId, "base:allocation"}, {kFirstDirtyBitmapId, kS2}}));
  EXPECT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", {kS2, kS1})),
            (Ctx{{kFirstDirtyBitmapId, kS2}, {kFirstDirtyBitmapId + 1, kS1}}));

  // More bitmaps than a connection may hold: TOO_BIG, and nothing selected.
  for (int i = 3; i <= int(kMaxDirtyBitmapContexts) + 1; i++) {
    h.vm_->StartDirtyBitmap("s" + std::to_string(i));
  }
  std::vector<std::string> many{"base:allocation"};
  for (int i = 1; i <= int(kMaxDirtyBitmapContexts) + 1; i++) {
    many.push_back("qemu:dirty-bitmap:s" + std::to_string(i));
  }
  EXPECT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", many), kRepErrTooBig), Ctx{});
  EXPECT_EQ(h.vm_->dirty_builds, 0u);  // negotiation builds no map
  h.Send(Option(kOptGo, InfoData("vm")));
  EXPECT_EQ(h.ReadOpt().type, kRepInfo);
  EXPECT_EQ(h.ReadOpt().type, kRepAck);
  EXPECT_EQ(h.vm_->dirty_builds, 0u);
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, 0, 4096), kEInval);  // no context selected
}

// The descriptors a BLOCK_STATUS chunk carries.
std::vector<std::pair<uint32_t, uint32_t>> Descriptors(const std::string& payload) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (size_t at = 4; at + 8 <= payload.size(); at += 8) {
    out.emplace_back(Get32(payload, at), Get32(payload, at + 4));
  }
  return out;
}

// The descriptors of [off, off+len) for a model of one flag value per block.
std::vector<std::pair<uint32_t, uint32_t>> ModelDescriptors(const std::vector<uint32_t>& flags,
                                                            uint64_t off, uint64_t len) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (uint64_t pos = off; pos < off + len;) {
    const uint64_t b = pos / 4096;
    const uint64_t next = std::min((b + 1) * 4096, off + len);
    if (!out.empty() && out.back().second == flags[b]) {
      out.back().first += uint32_t(next - pos);
    } else {
      out.emplace_back(uint32_t(next - pos), flags[b]);
    }
    pos = next;
  }
  return out;
}

TEST(Transmission, DirtyBitmapAndBaseAllocationTogether) {
  Harness h;
  const uint64_t size = 1 << 20, blocks = size / 4096;
  // Before the bitmap starts: [0, 64K) written. None of it is dirty.
  ASSERT_TRUE(h.vm_->Write(0, std::vector<uint8_t>(65536, 1)).ok());
  h.vm_->StartDirtyBitmap("s1");
  h.vm_->StartDirtyBitmap("s2");
  std::vector<uint32_t> dirty(blocks, 0);
  auto mark = [&](uint64_t off, uint64_t len) {
    for (uint64_t b = off / 4096; b <= (off + len - 1) / 4096; b++) dirty[b] = kStateDirty;
  };
  ASSERT_TRUE(h.vm_->Write(8192, std::vector<uint8_t>(4096, 2)).ok());
  mark(8192, 4096);
  ASSERT_TRUE(h.vm_->Trim(20480, 8192).ok());
  mark(20480, 8192);
  ASSERT_TRUE(h.vm_->WriteZeroes(40960, 1000, true).ok());  // a partial block
  mark(40960, 1000);
  ASSERT_TRUE(h.vm_->Write(100000, std::vector<uint8_t>(10, 3)).ok());  // unaligned
  mark(100000, 10);
  ASSERT_TRUE(h.vm_->Write(size - 4096, std::vector<uint8_t>(4096, 4)).ok());  // the last block
  mark(size - 4096, 4096);

  h.Hello();
  h.Send(Option(kOptStructuredReply, ""));
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  ASSERT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", {kS1, "base:allocation"})),
            (Ctx{{kBaseAllocationId, "base:allocation"}, {kFirstDirtyBitmapId, kS1}}));
  h.Send(Option(kOptGo, InfoData("vm")));
  ASSERT_EQ(h.ReadOpt().type, kRepInfo);
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  EXPECT_EQ(h.vm_->dirty_builds, 1u);  // built once, at GO (s2 was not selected)

  // A write after GO is in base:allocation but not in the bitmap (it is a
  // point-in-time view as of negotiation).
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 512 * 1024, 4096, std::string(4096, 'n')), 0u);

  auto status = [&](uint16_t flags, uint64_t off, uint32_t len) {
    h.Send(RequestBytes(kCmdBlockStatus, flags, ++h.cookie_, off, len));
    std::vector<Chunk> cs = h.ReadChunks();
    for (const Chunk& c : cs) EXPECT_EQ(c.cookie, h.cookie_);
    return cs;
  };
  auto alloc = h.vm_->BlockStatus(0, size);
  ASSERT_TRUE(alloc.ok());
  std::vector<uint32_t> holes(blocks, 0);
  for (const Extent& e : *alloc) {
    for (uint64_t b = e.offset / 4096; b < (e.offset + e.length) / 4096; b++) {
      holes[b] = e.hole ? (kStateHole | kStateZero) : 0;
    }
  }
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint32_t>>{
           {0, size}, {4096, 40000}, {100001, 3}, {size - 8192, 8192}, {24576, 200000}}) {
    SCOPED_TRACE(off);
    std::vector<Chunk> cs = status(0, off, len);
    ASSERT_EQ(cs.size(), 2u);
    EXPECT_EQ(cs[0].type, kReplyTypeBlockStatus);
    EXPECT_EQ(cs[0].flags, 0u);
    EXPECT_EQ(Get32(cs[0].payload, 0), kBaseAllocationId);
    EXPECT_EQ(Descriptors(cs[0].payload), ModelDescriptors(holes, off, len));
    EXPECT_EQ(cs[1].type, kReplyTypeBlockStatus);
    EXPECT_EQ(cs[1].flags, kReplyFlagDone);
    EXPECT_EQ(Get32(cs[1].payload, 0), kFirstDirtyBitmapId);
    EXPECT_EQ(Descriptors(cs[1].payload), ModelDescriptors(dirty, off, len));
  }

  // REQ_ONE: one descriptor per context, never longer than asked.
  std::vector<Chunk> cs = status(kCmdFlagReqOne, 4096, 8192);
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(Descriptors(cs[0].payload), (std::vector<std::pair<uint32_t, uint32_t>>{{8192, 0}}));
  EXPECT_EQ(Descriptors(cs[1].payload), (std::vector<std::pair<uint32_t, uint32_t>>{{4096, 0}}));

  // Beyond the end, or empty: EINVAL, one error chunk, and the connection goes on.
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, size - 4096, 8192), kEInval);
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, size, 1), kEInval);
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, 0, 0), kEInval);
  EXPECT_EQ(status(0, 0, 4096).size(), 2u);
}

TEST(Transmission, DirtyBitmapAlone) {
  Harness h;
  h.vm_->StartDirtyBitmap("s1");
  ASSERT_TRUE(h.vm_->Write(4096, std::vector<uint8_t>(4096, 1)).ok());
  h.vm_->max_dirty_runs = 1;  // coarsened: still covers the change
  ASSERT_TRUE(h.vm_->Write(65536, std::vector<uint8_t>(4096, 1)).ok());
  h.Hello();
  h.Send(Option(kOptStructuredReply, ""));
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  ASSERT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", {kS1})), (Ctx{{kFirstDirtyBitmapId, kS1}}));
  h.Send(Option(kOptGo, InfoData("vm")));
  ASSERT_EQ(h.ReadOpt().type, kRepInfo);
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  h.Send(RequestBytes(kCmdBlockStatus, 0, 5, 0, 1 << 20));
  std::vector<Chunk> cs = h.ReadChunks();
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(cs[0].flags, kReplyFlagDone);
  EXPECT_EQ(Get32(cs[0].payload, 0), kFirstDirtyBitmapId);
  // One coarse dirty run, covering both writes.
  uint64_t pos = 0, dirty_start = 0, dirty_end = 0;
  int dirty_runs = 0;
  for (auto [len, flags] : Descriptors(cs[0].payload)) {
    if (flags == kStateDirty) {
      dirty_runs++;
      dirty_start = pos;
      dirty_end = pos + len;
    } else {
      EXPECT_EQ(flags, 0u);
    }
    pos += len;
  }
  EXPECT_EQ(pos, 1u << 20);
  EXPECT_EQ(dirty_runs, 1);
  EXPECT_LE(dirty_start, 4096u);
  EXPECT_GE(dirty_end, 65536u + 4096);
}

TEST(Handshake, ExportNameBuildsTheSelectedMapsToo) {
  Harness h;
  h.vm_->StartDirtyBitmap("s1");
  ASSERT_TRUE(h.vm_->Write(8192, std::vector<uint8_t>(4096, 1)).ok());
  h.Hello();
  h.Send(Option(kOptStructuredReply, ""));
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  ASSERT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", {kS1})).size(), 1u);
  h.Send(Option(kOptExportName, "vm"));
  ASSERT_EQ(Get64(h.Recv(10), 0), 1u << 20);
  EXPECT_EQ(h.vm_->dirty_builds, 1u);
  h.Send(RequestBytes(kCmdBlockStatus, 0, 1, 0, 16384));
  std::vector<Chunk> cs = h.ReadChunks();
  ASSERT_EQ(cs.size(), 1u);
  EXPECT_EQ(Descriptors(cs[0].payload), (std::vector<std::pair<uint32_t, uint32_t>>{
                                            {8192, 0}, {4096, kStateDirty}, {4096, 0}}));
}

TEST(Handshake, DirtyBitmapsOfAnotherExportAreNotUsed) {
  Harness h;
  h.vm_->StartDirtyBitmap("s1");
  h.Hello();
  h.Send(Option(kOptStructuredReply, ""));
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  ASSERT_EQ(Contexts(h.Meta(kOptSetMetaContext, "vm", {kS1})).size(), 1u);
  h.Send(Option(kOptGo, InfoData("ro")));
  ASSERT_EQ(h.ReadOpt().type, kRepInfo);
  ASSERT_EQ(h.ReadOpt().type, kRepAck);
  EXPECT_EQ(h.vm_->dirty_builds, 0u);
  EXPECT_EQ(h.Cmd(kCmdBlockStatus, 0, 0, 4096), kEInval);
}

// Fails every read, to check engine errors reach the client as EIO.
class FailingReads : public ExportWrapper {
 public:
  using ExportWrapper::ExportWrapper;
  Status Read(uint64_t, std::span<uint8_t>) override { return Status::Corruption("bad crc"); }
};

// Runs one connection (one worker, so deterministic) on the client stream
// `in`, which must end it cleanly; returns what the server sent, and the
// export it entered transmission on in *export_name.
std::string Replay(ExportProvider* p, const std::string& in, std::string* export_name = nullptr) {
  auto t = std::make_unique<BufferTransport>(in);
  BufferTransport* bt = t.get();
  ConnectionOptions o;
  o.workers = 1;
  Connection c(std::move(t), p, o);
  EXPECT_TRUE(c.Run().ok());
  if (export_name != nullptr) *export_name = c.export_name();
  return bt->output();
}

// Serves one export as "w", offering the dirty bitmaps it is given.
class WrapProvider : public ExportProvider {
 public:
  explicit WrapProvider(std::shared_ptr<Export> e, std::vector<std::string> bitmaps = {})
      : e_(std::move(e)), bitmaps_(std::move(bitmaps)) {}
  Result<std::vector<std::string>> List() override { return std::vector<std::string>{"w"}; }
  Result<ExportInfo> Describe(const std::string&) override {
    return ExportInfo{"w", e_->size(), false, ""};
  }
  Result<std::shared_ptr<Export>> Open(const std::string&) override { return e_; }
  Result<std::vector<std::string>> DirtyBitmaps(const std::string&) override { return bitmaps_; }

 private:
  std::shared_ptr<Export> e_;
  const std::vector<std::string> bitmaps_;
};

// Dirty bitmaps cannot be built.
class NoBitmap : public ExportWrapper {
 public:
  using ExportWrapper::ExportWrapper;
  Result<std::shared_ptr<const DirtyMap>> DirtyBitmap(const std::string&) override {
    return Status::IOError("the store is down");
  }
};

TEST(Handshake, ADirtyBitmapThatCannotBeBuiltFailsTheGo) {
  MemoryExport mem("m", 1 << 16);
  WrapProvider p(std::make_shared<NoBitmap>(&mem), {"b"});
  std::string meta = Option(kOptSetMetaContext, MetaData("w", {"qemu:dirty-bitmap:b"}));
  std::string in = Be32(kClientFlagFixedNewstyle) + Option(kOptStructuredReply, "") + meta +
                   Option(kOptGo, InfoData("w")) + Option(kOptAbort, "");
  std::string export_name = "unset";
  std::string out = Replay(&p, in, &export_name);
  // hello(18), STRUCTURED_REPLY ACK(20), META_CONTEXT(20 + 4 + name) + ACK(20),
  // then the GO's error with its message, then ABORT's ACK.
  size_t at = 18 + 20 + 24 + std::string("qemu:dirty-bitmap:b").size() + 20;
  ASSERT_GT(out.size(), at + 20);
  EXPECT_EQ(Get32(out, at + 8), kOptGo);
  EXPECT_EQ(Get32(out, at + 12), kRepErrUnknown);
  std::string msg = out.substr(at + 20, Get32(out, at + 16));
  // Generic: the reason (a store error) is in the server log only.
  EXPECT_EQ(msg.find("store is down"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dirty bitmap"), std::string::npos) << msg;
  EXPECT_NE(msg.find("see the server log"), std::string::npos) << msg;
  EXPECT_EQ(export_name, "");  // never entered transmission
}

TEST(Transmission, EngineErrorsBecomeEio) {
  MemoryExport mem("m", 1 << 16);
  WrapProvider p(std::make_shared<FailingReads>(&mem));
  std::string in = Be32(kClientFlagFixedNewstyle) + Option(kOptGo, InfoData("w")) +
                   RequestBytes(kCmdRead, 0, 1, 0, 512) +
                   RequestBytes(kCmdWrite, 0, 2, 0, 2) + "ok";
  std::string out = Replay(&p, in);
  // hello(18) + INFO reply(20+12) + ACK(20), then two simple replies.
  ASSERT_EQ(out.size(), 18u + 32 + 20 + 16 + 16);
  EXPECT_EQ(Get32(out, 70 + 4), kEIo);
  EXPECT_EQ(Get64(out, 70 + 8), 1u);
  EXPECT_EQ(Get32(out, 86 + 4), 0u);
  EXPECT_EQ(mem.writes, 1u);
}

TEST(Transmission, BrokenStreamsEndOnlyThatConnection) {
  {
    Harness h;  // bad request magic
    h.Go("vm", false, false);
    h.Send(std::string(kRequestSize, 'x'));
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
  }
  {
    Harness h;  // a WRITE claiming 4 GiB is refused without reading it
    h.Go("vm", false, false);
    h.Send(RequestBytes(kCmdWrite, 0, 1, 0, 0xffffffffu));
    Chunk c = h.ReadChunk();
    EXPECT_EQ(c.error, 0u);  // no reply at all: connection closed
    EXPECT_FALSE(h.Join().ok());
  }
  {
    Harness h;  // truncated WRITE payload
    h.Go("vm", false, false);
    h.Send(RequestBytes(kCmdWrite, 0, 1, 0, 4096) + "short");
    ::shutdown(h.fd_, SHUT_WR);
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
    EXPECT_EQ(h.vm_->writes, 0u);
  }
  {
    Harness h;  // truncated request header
    h.Go("vm", false, false);
    h.Send(RequestBytes(kCmdRead, 0, 1, 0, 1).substr(0, 10));
    ::shutdown(h.fd_, SHUT_WR);
    EXPECT_TRUE(h.AtEof());
    EXPECT_FALSE(h.Join().ok());
  }
}

TEST(Transmission, PipelinedRequestsCompleteOutOfOrderSafely) {
  ConnectionOptions o;
  o.workers = 8;
  Harness h(o);
  h.Go("vm", true, false);
  const int kN = 200;
  std::string batch;
  for (int i = 0; i < kN; i++) {
    batch += RequestBytes(kCmdWrite, i % 3 == 0 ? kCmdFlagFua : 0, 1000 + i, uint64_t(i) * 4096,
                          4096) +
             std::string(4096, char('A' + i % 26));
  }
  std::thread sender([&] { h.Send(batch); });
  std::map<uint64_t, uint32_t> seen;
  for (int i = 0; i < kN; i++) {
    Chunk c = h.ReadChunk();
    seen[c.cookie] = c.error;
  }
  sender.join();
  ASSERT_EQ(seen.size(), size_t(kN));
  for (auto& [cookie, err] : seen) {
    EXPECT_GE(cookie, 1000u);
    EXPECT_EQ(err, 0u);
  }
  std::string reads;
  for (int i = 0; i < kN; i++) reads += RequestBytes(kCmdRead, 0, 5000 + i, uint64_t(i) * 4096, 4096);
  h.Send(reads);
  for (int i = 0; i < kN; i++) {
    Chunk c = h.ReadChunk();
    int idx = int(c.cookie) - 5000;
    ASSERT_GE(idx, 0);
    ASSERT_LT(idx, kN);
    EXPECT_EQ(c.payload.substr(8), std::string(4096, char('A' + idx % 26)));
  }
}

TEST(Transmission, ShutdownUnblocksRun) {
  Harness h;
  h.Go("vm", false, false);
  h.conn_->Shutdown();
  EXPECT_TRUE(h.AtEof());
  EXPECT_FALSE(h.Join().ok());
}

// Random and mutated byte streams must never crash, hang or over-allocate.
// --- Limits (issue 11) --------------------------------------------------------

using std::chrono::milliseconds;
using std::chrono::steady_clock;

long ElapsedMs(steady_clock::time_point since) {
  return long(std::chrono::duration_cast<milliseconds>(steady_clock::now() - since).count());
}

TEST(Limits, HandshakeTimeoutDropsASilentClient) {
  ConnectionOptions o;
  o.handshake_timeout = milliseconds(200);
  Harness h(o);
  auto start = steady_clock::now();
  ASSERT_EQ(h.Recv(18).size(), 18u);  // the greeting, then nothing from us
  EXPECT_TRUE(h.AtEof());
  EXPECT_GE(ElapsedMs(start), 150);
  EXPECT_LT(ElapsedMs(start), 5000);
}

TEST(Limits, HandshakeTimeoutCoversTheWholeHandshakeNotEachRead) {
  // A client that keeps sending options (each well within the timeout) is
  // still dropped once the whole handshake took longer than it.
  ConnectionOptions o;
  o.handshake_timeout = milliseconds(400);
  Harness h(o);
  h.Hello();
  auto start = steady_clock::now();
  bool eof = false;
  for (int i = 0; i < 40 && !eof; i++) {
    eof = !h.TrySend(Option(kOptStructuredReply, "")) || h.ReadOpt().type != kRepAck;
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_TRUE(eof);
  EXPECT_LT(ElapsedMs(start), 1500);
}

TEST(Limits, IdleTimeoutClosesAQuietConnectionOnly) {
  ConnectionOptions o;
  o.idle_timeout = milliseconds(300);
  Harness h(o);
  h.Go("vm", false, false);
  // Requests more often than the timeout keep it open.
  for (int i = 0; i < 5; i++) {
    EXPECT_EQ(h.Cmd(kCmdFlush, 0, 0, 0), 0u);
    std::this_thread::sleep_for(milliseconds(150));
  }
  auto start = steady_clock::now();
  EXPECT_TRUE(h.AtEof());
  EXPECT_GE(ElapsedMs(start), 100);
  EXPECT_EQ(h.Join().code(), Status::Code::kAborted);
}

TEST(Limits, AStalledWritePayloadIsDroppedAndItsBufferReleased) {
  BufferBudget budget(64 << 20);
  ConnectionOptions o;
  o.io_timeout = milliseconds(300);
  o.buffers = &budget;
  Harness h(o);
  h.Go("vm", false, false);
  // A 1 MiB WRITE header, 100 bytes of its payload, then nothing.
  h.Send(RequestBytes(kCmdWrite, 0, 1, 0, 1 << 20) + std::string(100, 'x'));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(budget.used(), 1u << 20);  // reserved before the payload is read
  auto start = steady_clock::now();
  EXPECT_TRUE(h.AtEof());
  EXPECT_LT(ElapsedMs(start), 5000);
  Status s = h.Join();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(budget.used(), 0u);
  EXPECT_EQ(budget.peak(), 1u << 20);
}

TEST(Limits, HalfARequestHeaderThenSilenceIsDropped) {
  ConnectionOptions o;
  o.io_timeout = milliseconds(300);
  o.idle_timeout = milliseconds(5000);
  Harness h(o);
  h.Go("vm", false, false);
  h.Send(RequestBytes(kCmdFlush, 0, 1, 0, 0).substr(0, 10));
  auto start = steady_clock::now();
  EXPECT_TRUE(h.AtEof());
  EXPECT_LT(ElapsedMs(start), 3000);  // io_timeout, not the idle timeout
  EXPECT_FALSE(h.Join().ok());
}

TEST(Limits, IdleWaitsNeverSplitARequest) {
  // A request whose header arrives in pieces, slower than the idle timeout,
  // is read whole: once a request has begun it has io_timeout to arrive.
  ConnectionOptions o;
  o.idle_timeout = milliseconds(200);
  Harness h(o);
  h.Go("vm", false, false);
  std::string req = RequestBytes(kCmdFlush, 0, 5, 0, 0);
  h.Send(req.substr(0, 10));
  std::this_thread::sleep_for(milliseconds(400));
  h.Send(req.substr(10));
  Chunk c = h.ReadChunk();
  EXPECT_EQ(c.cookie, 5u);
  EXPECT_EQ(c.error, 0u);
}

TEST(Limits, RequestsWaitForTheBufferBudget) {
  BufferBudget budget(64 << 10);
  ConnectionOptions o;
  o.buffers = &budget;
  Harness h(o);
  h.Go("vm", false, false);
  ASSERT_TRUE(budget.Acquire(64 << 10, steady_clock::now()));  // all of it
  std::thread release([&] {
    std::this_thread::sleep_for(milliseconds(300));
    budget.Release(64 << 10);
  });
  auto start = steady_clock::now();
  EXPECT_EQ(h.Cmd(kCmdWrite, 0, 0, 4096, std::string(4096, 'a')), 0u);
  EXPECT_GE(ElapsedMs(start), 200);  // waited for the budget (backpressure)
  uint32_t err = 0;
  EXPECT_EQ(h.ReadSimple(0, 4096, &err), std::string(4096, 'a'));
  EXPECT_EQ(err, 0u);
  release.join();
  h.Send(RequestBytes(kCmdDisc, 0, 99, 0, 0));
  EXPECT_TRUE(h.Join().ok());
  EXPECT_EQ(budget.used(), 0u);
}

TEST(Limits, BufferBudgetGrantsAnOversizedRequestAlone) {
  BufferBudget b(100);
  EXPECT_TRUE(b.Acquire(60, steady_clock::now()));
  EXPECT_FALSE(b.Acquire(50, steady_clock::now() + milliseconds(20)));
  EXPECT_FALSE(b.Acquire(500, steady_clock::now() + milliseconds(20)));
  b.Release(60);
  EXPECT_TRUE(b.Acquire(500, steady_clock::now()));  // alone: granted
  EXPECT_FALSE(b.Acquire(1, steady_clock::now() + milliseconds(20)));
  b.Release(500);
  b.SetCapacity(10);
  EXPECT_TRUE(b.Acquire(10, steady_clock::now()));
  EXPECT_EQ(b.used(), 10u);
  EXPECT_EQ(b.peak(), 500u);
}

TEST(Limits, WorkersStartOnlyWhenRequestsOverlap) {
  ThreadBudget threads(100);
  ConnectionOptions o;
  o.workers = 8;
  o.threads = &threads;
  Harness h(o);
  h.Go("vm", false, false);
  for (int i = 0; i < 20; i++) EXPECT_EQ(h.Cmd(kCmdFlush, 0, 0, 0), 0u);  // one at a time
  // One thread runs a request while one more waits for the next: never 8.
  EXPECT_EQ(threads.used(), 1);
  h.Send(RequestBytes(kCmdDisc, 0, 99, 0, 0));
  EXPECT_TRUE(h.Join().ok());
  EXPECT_EQ(h.conn()->threads_used(), 2);
  EXPECT_EQ(threads.used(), 0);  // slots given back
}

TEST(Limits, NoThreadSlotMeansOneThreadNotAFailure) {
  ThreadBudget threads(0);
  ConnectionOptions o;
  o.workers = 8;
  o.threads = &threads;
  Harness h(o);
  h.Go("vm", false, false);
  std::string burst;
  for (int i = 0; i < 32; i++) burst += RequestBytes(kCmdRead, 0, 1000 + i, 0, 4096);
  h.Send(burst);
  for (int i = 0; i < 32; i++) {
    Chunk c = h.ReadChunk();
    EXPECT_EQ(c.error, 0u);
    EXPECT_EQ(h.Recv(4096).size(), 4096u);
  }
  EXPECT_EQ(threads.used(), 0);
}

TEST(Limits, ARefusalAnswersEveryOptionWithPolicy) {
  ConnectionOptions o;
  o.refuse = "the server has 3 connections, the most it allows; try again later";
  Harness h(o);
  h.Hello();
  for (uint32_t opt : {kOptList, kOptGo, kOptInfo, kOptStructuredReply}) {
    h.Send(Option(opt, opt == kOptGo || opt == kOptInfo ? InfoData("vm") : ""));
    OptReply r = h.ReadOpt();
    EXPECT_EQ(r.option, opt);
    EXPECT_EQ(r.type, kRepErrPolicy);
    EXPECT_EQ(r.data, o.refuse);
  }
  h.Send(Option(kOptAbort, ""));
  EXPECT_EQ(h.ReadOpt().type, kRepAck);
  EXPECT_TRUE(h.Join().ok());
  EXPECT_EQ(h.conn()->export_name(), "");
  EXPECT_EQ(h.conn()->refusals(), 4u);
}

// Admits `room` connections per export.
class CountingGate : public ExportGate {
 public:
  explicit CountingGate(int room) : room_(room) {}
  bool Enter(const std::string& name, std::string* why) override {
    if (in_[name] >= room_) {
      *why = "export '" + name + "' is full";
      return false;
    }
    in_[name]++;
    return true;
  }
  void Leave(const std::string& name) override { in_[name]--; }
  int in(const std::string& name) { return in_[name]; }

 private:
  const int room_;
  std::map<std::string, int> in_;
};

TEST(Limits, TheGateRefusesGoWithPolicyButNotInfo) {
  CountingGate gate(0);
  ConnectionOptions o;
  o.gate = &gate;
  Harness h(o);
  h.Hello();
  h.Send(Option(kOptInfo, InfoData("vm")));
  EXPECT_EQ(h.ReadOpt().type, kRepInfo);  // INFO holds nothing: answered
  EXPECT_EQ(h.ReadOpt().type, kRepAck);
  h.Send(Option(kOptGo, InfoData("vm")));
  OptReply r = h.ReadOpt();
  EXPECT_EQ(r.type, kRepErrPolicy);
  EXPECT_EQ(r.data, "export 'vm' is full");
  EXPECT_EQ(gate.in("vm"), 0);
}

TEST(Limits, TheGateCountsAConnectionUntilItEnds) {
  CountingGate gate(1);
  {
    ConnectionOptions o;
    o.gate = &gate;
    Harness h(o);
    h.Go("vm", false, false);
    EXPECT_EQ(gate.in("vm"), 1);
    h.Send(RequestBytes(kCmdDisc, 0, 1, 0, 0));
    EXPECT_TRUE(h.Join().ok());
  }
  EXPECT_EQ(gate.in("vm"), 0);
}

TEST(Limits, RefusedRequestsAreCounted) {
  Harness h;
  h.Go("vm", false, false);
  for (int i = 0; i < 25; i++) {
    EXPECT_EQ(h.Cmd(kCmdRead, 0, 2 << 20, 4096), kEInval);  // past the end
  }
  EXPECT_EQ(h.conn()->refusals(), 25u);
}

class PathInErrors : public ExportWrapper {
 public:
  using ExportWrapper::ExportWrapper;
  Status Read(uint64_t, std::span<uint8_t>) override {
    return Status::IOError("/srv/hbiss/volumes/w/log/seg/0000000000000001: Input/output error");
  }
};

TEST(Limits, ClientErrorTextNamesNoInternalDetail) {
  // Engine errors carry store paths; the client is told only what failed.
  MemoryExport mem("m", 1 << 16);
  WrapProvider p(std::make_shared<PathInErrors>(&mem));
  std::string in = Be32(kClientFlagFixedNewstyle) + Option(kOptStructuredReply, "") +
                   Option(kOptGo, InfoData("w")) + RequestBytes(kCmdRead, 0, 1, 0, 512);
  std::string out = Replay(&p, in);
  EXPECT_EQ(out.find("/srv"), std::string::npos) << out;
  EXPECT_EQ(out.find("Input/output"), std::string::npos) << out;
  EXPECT_NE(out.find("I/O error; see the server log"), std::string::npos);
}

TEST(Malformed, RandomStreamsAreHandled) {
  std::mt19937_64 rng(12345);
  std::string good = Be32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) +
                     Option(kOptStructuredReply, "") +
                     Option(kOptSetMetaContext,
                            MetaData("vm", {"base:allocation", "qemu:dirty-bitmap:s1"})) +
                     Option(kOptGo, InfoData("vm", {kInfoBlockSize})) +
                     RequestBytes(kCmdWrite, kCmdFlagFua, 1, 0, 8) + "12345678" +
                     RequestBytes(kCmdRead, 0, 2, 0, 8) +
                     RequestBytes(kCmdBlockStatus, 0, 3, 0, 65536) +
                     RequestBytes(kCmdWriteZeroes, kCmdFlagFastZero, 4, 0, 4096) +
                     RequestBytes(kCmdDisc, 0, 5, 0, 0);
  MemoryProvider p;
  auto vm = std::make_shared<MemoryExport>("vm", 1 << 16);
  vm->StartDirtyBitmap("s1");
  p.Add(vm);
  for (int iter = 0; iter < 3000; iter++) {
    std::string in = good;
    int edits = 1 + int(rng() % 8);
    for (int e = 0; e < edits; e++) {
      size_t at = rng() % in.size();
      switch (rng() % 3) {
        case 0: in[at] = char(rng()); break;
        case 1: in.erase(at, 1 + rng() % 8); break;
        default: in.insert(at, std::string(1 + rng() % 8, char(rng()))); break;
      }
      // push_back, not `in = "x"`: GCC 12 -O3 reports a false -Wrestrict for
      // that assignment (GCC PR 105651).
      if (in.empty()) in.push_back('x');
    }
    ConnectionOptions o;
    o.workers = iter % 2 == 0 ? 1 : 3;
    Connection c(std::make_unique<BufferTransport>(in, false), &p, o);
    (void)c.Run();
  }
}

}  // namespace
}  // namespace hbiss::nbd
