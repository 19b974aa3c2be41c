#include <gtest/gtest.h>

#include <optional>

#include "server/rpc_runner.h"

namespace engram::server {
namespace {

TEST(WriteBudgetTest, LeasesHoldBytesUntilTheyEnd) {
  WriteBudget budget(100);
  std::optional<absl::StatusOr<WriteBudget::Lease>> first(budget.Acquire(60));
  ASSERT_TRUE(first->ok());
  absl::StatusOr<WriteBudget::Lease> refused = budget.Acquire(41);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("max_inflight_write_mb"), std::string::npos);
  {
    absl::StatusOr<WriteBudget::Lease> fits = budget.Acquire(40);
    EXPECT_TRUE(fits.ok());
  }
  EXPECT_TRUE(budget.Acquire(40).ok());  // the 40 came back
  first.reset();
  // Alone, a request larger than the whole budget passes (max_message_bytes
  // decides what fits); beside another, it does not.
  std::optional<absl::StatusOr<WriteBudget::Lease>> big(budget.Acquire(500));
  EXPECT_TRUE(big->ok());
  EXPECT_FALSE(budget.Acquire(1).ok());
  big.reset();
  EXPECT_TRUE(budget.Acquire(1).ok());
}

TEST(WriteBudgetTest, AMovedLeaseGivesItsBytesBackOnce) {
  WriteBudget budget(10);
  {
    absl::StatusOr<WriteBudget::Lease> lease = budget.Acquire(10);
    ASSERT_TRUE(lease.ok());
    WriteBudget::Lease moved = *std::move(lease);
    EXPECT_FALSE(budget.Acquire(1).ok());
  }
  EXPECT_TRUE(budget.Acquire(10).ok());
  absl::StatusOr<WriteBudget::Lease> a = budget.Acquire(5);
  absl::StatusOr<WriteBudget::Lease> b = budget.Acquire(5);
  EXPECT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(budget.Acquire(1).ok());
}

}  // namespace
}  // namespace engram::server
