// Checks shared by the CPU and GPU PartitionScanner tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>

#include "index/partition_scanner.h"

namespace engram::index::testing_ref {

// A scan against the partition's own fp32 exact search for the same query:
// scores within 1e-5 relative, rank by rank, and all but one of the k rows
// the same (a near-tie may trade places). What fp32 copies must give; fp16
// copies are ~1e-3 off.
inline void ExpectLikeExactSearch(PartitionScanner& scanner,
                                  const std::shared_ptr<VectorPartition>& partition,
                                  std::span<const float> query, uint32_t k,
                                  const std::string& what) {
  auto got = scanner.Scan(partition, query, k);
  ASSERT_TRUE(got.ok()) << what << ": " << got.status();
  auto exact = partition->ExactSearch(query, k);
  ASSERT_EQ(got->size(), exact.size()) << what;
  size_t common = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    EXPECT_NEAR((*got)[i].score, exact[i].score, 1e-5 * (1 + std::fabs(exact[i].score)))
        << what << " rank " << i;
    for (const ScoredId& hit : exact) common += hit.id == (*got)[i].id;
  }
  EXPECT_GE(common + 1, exact.size()) << what;
}

}  // namespace engram::index::testing_ref
