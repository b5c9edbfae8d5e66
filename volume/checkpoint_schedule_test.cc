#include "volume/checkpoint_schedule.h"

#include <gtest/gtest.h>

#include <chrono>

namespace hbiss::volume {
namespace {

using Clock = CheckpointSchedule::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t kInterval = 1 << 20;

// Far enough from the clock's epoch that a first forced request is allowed.
const Clock::time_point kT0 = Clock::time_point{} + std::chrono::hours(1);

TEST(CheckpointScheduleTest, DueAfterAnIntervalOfLog) {
  CheckpointSchedule c(kInterval);
  EXPECT_FALSE(c.Due(false));
  c.AddLog(kInterval - 1);
  EXPECT_FALSE(c.Due(false));
  c.AddLog(1);
  EXPECT_TRUE(c.Due(false));
  EXPECT_FALSE(c.Due(true));  // never while stopping
  ASSERT_TRUE(c.TryBegin(false, false, false));
  // Beginning restarts the interval: the log counts from there.
  EXPECT_EQ(c.log_since_last(), 0u);
  EXPECT_FALSE(c.Due(false));
  c.AddLog(kInterval / 2);
  EXPECT_FALSE(c.Due(false));
  c.AddLog(kInterval / 2);
  EXPECT_TRUE(c.Due(false));
}

TEST(CheckpointScheduleTest, BegunOnlyAtABatchBoundaryOutsideAnOperation) {
  CheckpointSchedule c(kInterval);
  c.AddLog(kInterval);
  EXPECT_FALSE(c.TryBegin(false, /*op_in_progress=*/true, false));
  EXPECT_FALSE(c.TryBegin(false, false, /*batch_open=*/true));
  EXPECT_FALSE(c.TryBegin(/*stopping=*/true, false, false));
  EXPECT_TRUE(c.Due(false));  // refusals change nothing
  EXPECT_EQ(c.log_since_last(), kInterval);
  EXPECT_TRUE(c.TryBegin(false, false, false));
  EXPECT_FALSE(c.TryBegin(false, false, false));  // not due any more
}

TEST(CheckpointScheduleTest, RequestWaitsForTheFirstCheckpointBegunAfterIt) {
  CheckpointSchedule c(kInterval);
  // One begun before the request: finishing it does not answer the request
  // (it encodes a map from before the caller asked).
  c.AddLog(kInterval);
  ASSERT_TRUE(c.TryBegin(false, false, false));
  const uint64_t ticket = c.Request();
  EXPECT_TRUE(c.requested());
  EXPECT_TRUE(c.Due(false));
  EXPECT_FALSE(c.Done(ticket));
  c.Finished(Status::OK(), milliseconds(1), milliseconds(2), 100);
  EXPECT_FALSE(c.Done(ticket));
  // The request's own.
  ASSERT_TRUE(c.TryBegin(false, false, false));
  EXPECT_FALSE(c.requested());
  EXPECT_FALSE(c.Done(ticket));
  c.Finished(Status::IOError("disk"), milliseconds(3), milliseconds(4), 0);
  EXPECT_TRUE(c.Done(ticket));
  EXPECT_TRUE(c.last_status().IsIOError());
}

TEST(CheckpointScheduleTest, FinishedKeepsTheStatsOfTheLastWrittenOnly) {
  CheckpointSchedule c(kInterval);
  c.Request();
  ASSERT_TRUE(c.TryBegin(false, false, false));
  c.Finished(Status::OK(), milliseconds(10), milliseconds(20), 4096);
  EXPECT_EQ(c.written(), 1u);
  EXPECT_EQ(c.bytes(), 4096u);
  EXPECT_EQ(c.encode_time(), milliseconds(10));
  EXPECT_EQ(c.write_time(), milliseconds(20));
  EXPECT_TRUE(c.last_status().ok());
  c.Request();
  ASSERT_TRUE(c.TryBegin(false, false, false));
  c.Finished(Status::IOError("full"), milliseconds(30), milliseconds(40), 8192);
  EXPECT_EQ(c.written(), 1u);
  EXPECT_EQ(c.bytes(), 4096u);
  EXPECT_EQ(c.encode_time(), milliseconds(10));
  EXPECT_FALSE(c.last_status().ok());
}

TEST(CheckpointScheduleTest, AbandonedAnswersWaitersWithTheError) {
  CheckpointSchedule c(kInterval);
  const uint64_t ticket = c.Request();
  ASSERT_TRUE(c.TryBegin(false, false, false));
  c.Abandoned(Status::NoSpace("full"));
  EXPECT_TRUE(c.Done(ticket));
  EXPECT_TRUE(c.last_status().IsNoSpace());
  EXPECT_EQ(c.written(), 0u);
  // Not due again by itself: the next interval, or a new request.
  EXPECT_FALSE(c.Due(false));
}

TEST(CheckpointScheduleTest, ForcedRequestsAreRateLimitedByTimeAndCost) {
  CheckpointSchedule c(kInterval);
  ASSERT_TRUE(c.MayForce(kT0));
  c.Force(kT0);
  EXPECT_TRUE(c.Due(false));
  EXPECT_FALSE(c.MayForce(kT0 + seconds(60)));  // one is pending
  ASSERT_TRUE(c.TryBegin(false, false, false));
  // A checkpoint that took 1 s: the next forced one waits 50 s, not 5.
  c.Finished(Status::OK(), milliseconds(400), milliseconds(600), 1);
  EXPECT_FALSE(c.MayForce(kT0 + CheckpointSchedule::kForceEvery));
  EXPECT_FALSE(c.MayForce(kT0 + seconds(49)));
  EXPECT_TRUE(c.MayForce(kT0 + seconds(50)));
  c.Force(kT0 + seconds(50));
  ASSERT_TRUE(c.TryBegin(false, false, false));
  // A cheap one: kForceEvery is the bound.
  c.Finished(Status::OK(), milliseconds(1), milliseconds(1), 1);
  EXPECT_FALSE(c.MayForce(kT0 + seconds(54)));
  EXPECT_TRUE(c.MayForce(kT0 + seconds(55)));
}

TEST(CheckpointScheduleTest, ZeroIntervalIsAlwaysDue) {
  CheckpointSchedule c(0);
  EXPECT_TRUE(c.Due(false));
  ASSERT_TRUE(c.TryBegin(false, false, false));
  EXPECT_TRUE(c.Due(false));
}

}  // namespace
}  // namespace hbiss::volume
