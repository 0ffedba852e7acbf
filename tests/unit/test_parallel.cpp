#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "qforge/parallel.h"

namespace qforge {
namespace {

TEST(Parallel, ChunkCount) {
  EXPECT_EQ(chunk_count(0, 4), 0);
  EXPECT_EQ(chunk_count(-3, 4), 0);
  EXPECT_EQ(chunk_count(1, 4), 1);
  EXPECT_EQ(chunk_count(8, 4), 2);
  EXPECT_EQ(chunk_count(9, 4), 3);
  EXPECT_EQ(chunk_count(5, 0), 5);  // grain < 1 is treated as 1
}

TEST(Parallel, CoversEveryIndexOnceWithFixedChunks) {
  for (int64_t n : {0, 1, 7, 64, 1000, 1001}) {
    const int64_t grain = 16;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::vector<int64_t> begins(static_cast<size_t>(chunk_count(n, grain)), -1);
    parallel_for(n, grain, [&](int64_t chunk, int64_t begin, int64_t end) {
      begins[chunk] = begin;
      EXPECT_EQ(begin, chunk * grain);
      EXPECT_LE(end - begin, grain);
      EXPECT_GT(end, begin);
      for (int64_t i = begin; i < end; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    for (size_t c = 0; c < begins.size(); ++c) EXPECT_EQ(begins[c], int64_t(c) * grain);
  }
}

// Per-chunk partial sums reduced in chunk order do not depend on the thread count.
double chunked_sum(const std::vector<double>& v, int threads) {
  ScopedThreadLimit limit(threads);
  const int64_t grain = 37;
  std::vector<double> partial(static_cast<size_t>(chunk_count(int64_t(v.size()), grain)), 0.0);
  parallel_for(int64_t(v.size()), grain, [&](int64_t chunk, int64_t begin, int64_t end) {
    double s = 0;
    for (int64_t i = begin; i < end; ++i) s += v[i];
    partial[chunk] = s;
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

TEST(Parallel, DeterministicAcrossThreadCounts) {
  std::vector<double> v(10007);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(double(i)) * 1e6 + 1e-3 * double(i);
  const double one = chunked_sum(v, 1);
  for (int t : {2, 3, 8}) EXPECT_EQ(chunked_sum(v, t), one) << t << " threads";
}

TEST(Parallel, LowestFailingChunkIsReported) {
  Status s = parallel_for_status(100, 10, [](int64_t chunk, int64_t, int64_t) {
    if (chunk == 3 || chunk == 7) return invalid_argument("chunk " + std::to_string(chunk));
    return Status::ok();
  });
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.message(), "chunk 3");
  EXPECT_TRUE(parallel_for_status(100, 10, [](int64_t, int64_t, int64_t) { return Status::ok(); }).is_ok());
}

TEST(Parallel, ExceptionsAreRethrownInCaller) {
  EXPECT_THROW(parallel_for(100, 1,
                            [](int64_t chunk, int64_t, int64_t) {
                              if (chunk == 42) throw std::runtime_error("boom");
                            }),
               std::runtime_error);
}

TEST(Parallel, NestedCallsRunSerially) {
  std::atomic<int> total{0};
  parallel_for(8, 1, [&](int64_t, int64_t, int64_t) {
    parallel_for(10, 3, [&](int64_t, int64_t b, int64_t e) { total += int(e - b); });
  });
  EXPECT_EQ(total.load(), 80);
}

TEST(Parallel, ScopedThreadLimitRestores) {
  const int before = max_threads();
  {
    ScopedThreadLimit limit(1);
    EXPECT_EQ(max_threads(), 1);
  }
  EXPECT_EQ(max_threads(), before);
}

}  // namespace
}  // namespace qforge
