// FileLock::Check's rule (CheckLeaseAge) without a cluster: a lock is
// trusted while its lease was renewed (or acquired) within the limit.
#include <gtest/gtest.h>

#include <chrono>

#include "hdfs/client.h"
#include "store/store.h"

namespace hbiss::hdfs {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(LeaseCheckTest, ALockIsTrustedUpToTheLimitAndNotAfter) {
  const milliseconds limit(ClientOptions{}.lease_self_fence_ms);
  EXPECT_EQ(limit, seconds(40));
  EXPECT_TRUE(CheckLeaseAge(seconds(0), limit).ok());
  EXPECT_TRUE(CheckLeaseAge(seconds(39), limit).ok());
  EXPECT_TRUE(CheckLeaseAge(limit, limit).ok());
  Status s = CheckLeaseAge(seconds(41), limit);
  EXPECT_TRUE(s.IsIOError());
  EXPECT_NE(s.ToString().find("41 s"), std::string::npos) << s.ToString();
}

TEST(LeaseCheckTest, AHealthyRenewerStaysFarFromTheLimit) {
  const ClientOptions o;
  // Three renewals in a row may fail before a lock is in doubt.
  EXPECT_GE(o.lease_self_fence_ms, 3 * o.lease_renew_interval_ms);
  // The HDFS lock fences itself after the store-wide limit (store.h).
  EXPECT_EQ(o.lease_self_fence_ms, store::kLeaseSelfFenceSeconds * 1000);
}

}  // namespace
}  // namespace hbiss::hdfs
