// Connection tests: a scripted client speaks raw NBD over a socketpair (or a
// BufferTransport for malformed input) to a Connection serving MemoryExports.
#include "nbd/connection.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

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

  // Waits for Run() to return; valid after the server ended the connection.
  Status Join() {
    thread_.join();
    thread_ = std::thread([] {});
    return result_;
  }

  void Send(const std::string& s) { ASSERT_EQ(::write(fd_, s.data(), s.size()), ssize_t(s.size())); }
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

// Fails every read, to check engine errors reach the client as EIO.
class FailingReads : public ExportWrapper {
 public:
  using ExportWrapper::ExportWrapper;
  Status Read(uint64_t, std::span<uint8_t>) override { return Status::Corruption("bad crc"); }
};

class WrapProvider : public ExportProvider {
 public:
  explicit WrapProvider(std::shared_ptr<Export> e) : e_(std::move(e)) {}
  Result<std::vector<std::string>> List() override { return std::vector<std::string>{"w"}; }
  Result<ExportInfo> Describe(const std::string&) override {
    return ExportInfo{"w", e_->size(), false, ""};
  }
  Result<std::shared_ptr<Export>> Open(const std::string&) override { return e_; }

 private:
  std::shared_ptr<Export> e_;
};

TEST(Transmission, EngineErrorsBecomeEio) {
  MemoryExport mem("m", 1 << 16);
  WrapProvider p(std::make_shared<FailingReads>(&mem));
  std::string in = Be32(kClientFlagFixedNewstyle) + Option(kOptGo, InfoData("w")) +
                   RequestBytes(kCmdRead, 0, 1, 0, 512) +
                   RequestBytes(kCmdWrite, 0, 2, 0, 2) + "ok";
  auto t = std::make_unique<BufferTransport>(in);
  BufferTransport* bt = t.get();
  ConnectionOptions o;
  o.workers = 1;
  Connection c(std::move(t), &p, o);
  EXPECT_TRUE(c.Run().ok());
  std::string out = bt->output();
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
TEST(Malformed, RandomStreamsAreHandled) {
  std::mt19937_64 rng(12345);
  std::string good = Be32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) +
                     Option(kOptStructuredReply, "") +
                     Option(kOptSetMetaContext, MetaData("vm", {"base:allocation"})) +
                     Option(kOptGo, InfoData("vm", {kInfoBlockSize})) +
                     RequestBytes(kCmdWrite, kCmdFlagFua, 1, 0, 8) + "12345678" +
                     RequestBytes(kCmdRead, 0, 2, 0, 8) +
                     RequestBytes(kCmdBlockStatus, 0, 3, 0, 65536) +
                     RequestBytes(kCmdWriteZeroes, kCmdFlagFastZero, 4, 0, 4096) +
                     RequestBytes(kCmdDisc, 0, 5, 0, 0);
  MemoryProvider p;
  p.Add(std::make_shared<MemoryExport>("vm", 1 << 16));
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
