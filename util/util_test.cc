#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "util/coding.h"
#include "util/crc32c.h"
#include "util/status.h"

namespace hbiss {
namespace {

TEST(Crc32c, StandardCheckValue) {
  // The CRC32C check value from the Rocksoft catalogue.
  EXPECT_EQ(crc32c::Value("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c::Value("", 0), 0u);
}

TEST(Crc32c, Rfc3720Vectors) {
  char zeros[32] = {0};
  EXPECT_EQ(crc32c::Value(zeros, 32), 0x8a9136aau);
  char ones[32];
  std::memset(ones, 0xff, 32);
  EXPECT_EQ(crc32c::Value(ones, 32), 0x62a8ab43u);
}

TEST(Crc32c, ExtendEqualsWhole) {
  std::string s = "hello, log-structured world";
  uint32_t part = crc32c::Extend(crc32c::Value(s.data(), 5), s.data() + 5, s.size() - 5);
  EXPECT_EQ(part, crc32c::Value(s.data(), s.size()));
}

TEST(Crc32c, MaskRoundTrip) {
  uint32_t c = crc32c::Value("foo", 3);
  EXPECT_NE(crc32c::Mask(c), c);
  EXPECT_EQ(crc32c::Unmask(crc32c::Mask(c)), c);
}

TEST(Coding, FixedRoundTrip) {
  uint8_t buf[8];
  EncodeFixed64(buf, 0x0102030405060708ull);
  EXPECT_EQ(buf[0], 0x08);
  EXPECT_EQ(DecodeFixed64(buf), 0x0102030405060708ull);
  EncodeBE32(buf, 0x25609513u);
  EXPECT_EQ(buf[0], 0x25);
  EXPECT_EQ(DecodeBE32(buf), 0x25609513u);
  EncodeBE16(buf, 0xabcd);
  EXPECT_EQ(DecodeBE16(buf), 0xabcd);
}

TEST(Coding, VarintRoundTripAndTruncation) {
  for (uint64_t v : {0ull, 1ull, 127ull, 128ull, 300ull, ~0ull}) {
    std::string s;
    PutVarint64(&s, v);
    std::string_view in = s;
    uint64_t got = 0;
    ASSERT_TRUE(GetVarint64(&in, &got));
    EXPECT_EQ(got, v);
    EXPECT_TRUE(in.empty());
    std::string_view cut(s.data(), s.size() - 1);
    EXPECT_FALSE(GetVarint64(&cut, &got)) << v;
  }
  std::string overlong(11, '\xff');
  std::string_view in = overlong;
  uint64_t got;
  EXPECT_FALSE(GetVarint64(&in, &got));
}

TEST(Status, CodesAndContext) {
  Status s = Status::FromErrno("open /nope", ENOENT);
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_NE(s.ToString().find("open /nope"), std::string::npos);
  EXPECT_TRUE(Status::FromErrno("x", EAGAIN).retryable());
  EXPECT_EQ(Status::OK().ToString(), "OK");
  EXPECT_EQ(Status::Corruption("bad").WithContext("seg 3").message(), "seg 3: bad");
}

Result<int> Half(int v) {
  if (v % 2) return Status::InvalidArgument("odd");
  return v / 2;
}

Status UseHalf(int v, int* out) {
  HBISS_ASSIGN_OR_RETURN(*out, Half(v));
  return Status::OK();
}

TEST(Status, ResultAndMacros) {
  int out = 0;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  EXPECT_TRUE(UseHalf(3, &out).IsInvalidArgument());
}

}  // namespace
}  // namespace hbiss
