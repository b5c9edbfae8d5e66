#include "nbd/protocol.h"

#include <gtest/gtest.h>

#include "nbd/connection.h"
#include "nbd/test_util.h"
#include "util/coding.h"

namespace hbiss::nbd {
namespace {

using namespace ::hbiss::nbd::testing;  // NOLINT: test helpers

TEST(Protocol, RequestRoundTrip) {
  Request r{kRequestMagic, kCmdFlagFua, kCmdWrite, 0x0102030405060708ull, 1ull << 40, 4096};
  uint8_t buf[kRequestSize];
  EncodeRequest(r, buf);
  EXPECT_EQ(buf[0], 0x25);  // big-endian magic first
  EXPECT_EQ(buf[3], 0x13);
  Request d = DecodeRequest(buf);
  EXPECT_EQ(d.magic, r.magic);
  EXPECT_EQ(d.flags, r.flags);
  EXPECT_EQ(d.type, r.type);
  EXPECT_EQ(d.cookie, r.cookie);
  EXPECT_EQ(d.offset, r.offset);
  EXPECT_EQ(d.length, r.length);
}

TEST(Protocol, InfoRequestParses) {
  InfoRequest r;
  ASSERT_TRUE(ParseInfoRequest(Be32(3) + "vm1" + Be16(2) + Be16(kInfoBlockSize) + Be16(1), &r));
  EXPECT_EQ(r.name, "vm1");
  ASSERT_EQ(r.infos.size(), 2u);
  EXPECT_EQ(r.infos[0], kInfoBlockSize);
  EXPECT_EQ(r.infos[1], kInfoName);
  ASSERT_TRUE(ParseInfoRequest(Be32(0) + Be16(0), &r));  // default export, no infos
  EXPECT_EQ(r.name, "");
}

TEST(Protocol, InfoRequestRejectsMalformed) {
  InfoRequest r;
  EXPECT_FALSE(ParseInfoRequest("", &r));
  EXPECT_FALSE(ParseInfoRequest(Be32(0) + "x", &r));                    // < 6 bytes
  EXPECT_FALSE(ParseInfoRequest(Be32(10) + "vm1" + Be16(0), &r));       // name overruns
  EXPECT_FALSE(ParseInfoRequest(Be32(3) + "vm1" + Be16(2) + Be16(3), &r));  // count lies
  EXPECT_FALSE(ParseInfoRequest(Be32(3) + "vm1" + Be16(0) + "extra", &r));  // trailing
  EXPECT_FALSE(ParseInfoRequest(Be32(3) + std::string("a\0b", 3) + Be16(0), &r));  // NUL
  EXPECT_FALSE(ParseInfoRequest(Be32(0xffffffffu) + Be16(0), &r));
  std::string big(kMaxStringSize + 1, 'a');
  EXPECT_FALSE(ParseInfoRequest(Be32(uint32_t(big.size())) + big + Be16(0), &r));
}

TEST(Protocol, MetaContextParses) {
  MetaContextRequest r;
  std::string d = Be32(2) + "vm" + Be32(2) + Be32(15) + "base:allocation" + Be32(5) + "base:";
  ASSERT_TRUE(ParseMetaContextRequest(d, &r));
  EXPECT_EQ(r.export_name, "vm");
  ASSERT_EQ(r.queries.size(), 2u);
  EXPECT_EQ(r.queries[0], "base:allocation");
  EXPECT_EQ(r.queries[1], "base:");
  ASSERT_TRUE(ParseMetaContextRequest(Be32(0) + Be32(0), &r));
  EXPECT_TRUE(r.queries.empty());
}

TEST(Protocol, MetaContextRejectsMalformed) {
  MetaContextRequest r;
  EXPECT_FALSE(ParseMetaContextRequest("", &r));
  EXPECT_FALSE(ParseMetaContextRequest(Be32(2) + "vm", &r));               // no count
  EXPECT_FALSE(ParseMetaContextRequest(Be32(0) + Be32(1), &r));           // count lies
  EXPECT_FALSE(ParseMetaContextRequest(Be32(0) + Be32(0xffffffffu), &r));  // huge count
  EXPECT_FALSE(ParseMetaContextRequest(Be32(0) + Be32(1) + Be32(99) + "x", &r));
  EXPECT_FALSE(ParseMetaContextRequest(Be32(0) + Be32(0) + "junk", &r));  // trailing
}

// --- ValidateRequest -------------------------------------------------------

class Validate : public ::testing::Test {
 protected:
  TransmissionState st{1 << 20,
                       kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendTrim |
                           kFlagSendWriteZeroes | kFlagSendFastZero | kFlagSendDf |
                           kFlagCanMultiConn | kFlagSendCache,
                       true, true};
  uint32_t Check(uint16_t type, uint16_t flags, uint64_t off, uint32_t len) {
    std::string why;
    uint32_t e = ValidateRequest(Request{kRequestMagic, flags, type, 1, off, len}, st, &why);
    if (e != 0) {
      EXPECT_FALSE(why.empty());
    }
    return e;
  }
};

TEST_F(Validate, AcceptsGoodRequests) {
  EXPECT_EQ(Check(kCmdRead, 0, 0, 4096), 0u);
  EXPECT_EQ(Check(kCmdRead, kCmdFlagDf, 0, 4096), 0u);
  EXPECT_EQ(Check(kCmdRead, kCmdFlagFua, 0, 1), 0u);  // FUA is valid on every command
  EXPECT_EQ(Check(kCmdWrite, kCmdFlagFua, (1 << 20) - 512, 512), 0u);
  EXPECT_EQ(Check(kCmdFlush, 0, 0, 0), 0u);
  EXPECT_EQ(Check(kCmdTrim, kCmdFlagFua, 0, 1 << 20), 0u);
  EXPECT_EQ(Check(kCmdCache, 0, 7, 9), 0u);
  EXPECT_EQ(Check(kCmdWriteZeroes, kCmdFlagNoHole | kCmdFlagFastZero, 0, 1 << 20), 0u);
  EXPECT_EQ(Check(kCmdBlockStatus, kCmdFlagReqOne, 0, 1 << 20), 0u);
}

TEST_F(Validate, RangeErrors) {
  EXPECT_EQ(Check(kCmdRead, 0, 1 << 20, 1), kEInval);
  EXPECT_EQ(Check(kCmdRead, 0, (1 << 20) - 1, 2), kEInval);
  EXPECT_EQ(Check(kCmdRead, 0, ~0ull, 2), kEInval);  // offset + length overflows
  EXPECT_EQ(Check(kCmdWrite, 0, 1 << 20, 1), kENoSpc);
  EXPECT_EQ(Check(kCmdWriteZeroes, 0, 1 << 20, 4096), kENoSpc);
  EXPECT_EQ(Check(kCmdTrim, 0, 1 << 20, 4096), kEInval);
  EXPECT_EQ(Check(kCmdBlockStatus, 0, 1 << 20, 4096), kEInval);
  EXPECT_EQ(Check(kCmdCache, 0, 1 << 20, 4096), kEInval);
}

TEST_F(Validate, ZeroLengthIsInvalid) {
  for (uint16_t t : {kCmdRead, kCmdWrite, kCmdTrim, kCmdCache, kCmdWriteZeroes,
                     kCmdBlockStatus}) {
    EXPECT_EQ(Check(t, 0, 0, 0), kEInval) << CommandName(t);
  }
}

TEST_F(Validate, FlagErrors) {
  EXPECT_EQ(Check(kCmdRead, 1 << 9, 0, 1), kEInval);  // unknown bit
  EXPECT_EQ(Check(kCmdWrite, kCmdFlagNoHole, 0, 1), kEInval);
  EXPECT_EQ(Check(kCmdTrim, kCmdFlagFastZero, 0, 1), kEInval);
  EXPECT_EQ(Check(kCmdWrite, kCmdFlagDf, 0, 1), kEInval);
  EXPECT_EQ(Check(kCmdRead, kCmdFlagReqOne, 0, 1), kEInval);
  EXPECT_EQ(Check(kCmdFlush, 0, 0, 1), kEInval);
  EXPECT_EQ(Check(kCmdFlush, 0, 1, 0), kEInval);
  EXPECT_EQ(Check(99, 0, 0, 1), kEInval);
  st.structured = false;
  EXPECT_EQ(Check(kCmdRead, kCmdFlagDf, 0, 1), kEInval);
  st.eflags &= uint16_t(~kFlagSendFastZero);
  EXPECT_EQ(Check(kCmdWriteZeroes, kCmdFlagFastZero, 0, 1), kEInval);
  st.eflags &= uint16_t(~kFlagSendFua);
  EXPECT_EQ(Check(kCmdWrite, kCmdFlagFua, 0, 1), kEInval);
}

TEST_F(Validate, LengthLimits) {
  st.size = 1ull << 40;
  EXPECT_EQ(Check(kCmdRead, 0, 0, kMaxPayload), 0u);
  EXPECT_EQ(Check(kCmdRead, 0, 0, kMaxPayload + 1), kEOverflow);  // structured
  EXPECT_EQ(Check(kCmdWrite, 0, 0, kMaxPayload + 1), kEInval);
  EXPECT_EQ(Check(kCmdTrim, 0, 0, 0xffffffffu), 0u);  // no payload: no limit
  st.structured = false;
  EXPECT_EQ(Check(kCmdRead, 0, 0, kMaxPayload + 1), kEInval);
}

TEST_F(Validate, ReadOnlyAndBlockStatus) {
  st.eflags |= kFlagReadOnly;
  EXPECT_EQ(Check(kCmdWrite, 0, 0, 1), kEPerm);
  EXPECT_EQ(Check(kCmdTrim, 0, 0, 1), kEPerm);
  EXPECT_EQ(Check(kCmdWriteZeroes, 0, 0, 1), kEPerm);
  EXPECT_EQ(Check(kCmdWrite, 0, 1 << 20, 1), kEPerm);  // read-only wins over range
  EXPECT_EQ(Check(kCmdRead, 0, 0, 1), 0u);
  st.base_allocation = false;
  EXPECT_EQ(Check(kCmdBlockStatus, 0, 0, 1), kEInval);
  st.dirty_bitmaps = 1;  // a dirty bitmap alone is a meta context too
  EXPECT_EQ(Check(kCmdBlockStatus, 0, 0, 1), 0u);
}

TEST(Protocol, StatusMapping) {
  EXPECT_EQ(NbdErrorFromStatus(Status::OK()), 0u);
  EXPECT_EQ(NbdErrorFromStatus(Status::InvalidArgument("x")), kEInval);
  EXPECT_EQ(NbdErrorFromStatus(Status::NoSpace("x")), kENoSpc);
  EXPECT_EQ(NbdErrorFromStatus(Status::Corruption("x")), kEIo);
  EXPECT_EQ(NbdErrorFromStatus(Status::IOError("x")), kEIo);
  EXPECT_EQ(NbdErrorFromStatus(Status::Aborted("x")), kEShutdown);
}

}  // namespace
}  // namespace hbiss::nbd
