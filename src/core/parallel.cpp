#include "qforge/parallel.h"

#include <omp.h>

#include <exception>
#include <vector>

namespace qforge {

int64_t chunk_count(int64_t n, int64_t grain) {
  if (n <= 0) return 0;
  if (grain < 1) grain = 1;
  return n / grain + (n % grain != 0 ? 1 : 0);
}

void parallel_for(int64_t n, int64_t grain,
                  const std::function<void(int64_t chunk, int64_t begin, int64_t end)>& fn) {
  if (grain < 1) grain = 1;
  const int64_t chunks = chunk_count(n, grain);
  if (chunks == 0) return;
  auto run_chunk = [&](int64_t c) {
    int64_t begin = c * grain;
    int64_t end = (n - begin > grain) ? begin + grain : n;
    fn(c, begin, end);
  };
  if (chunks == 1 || omp_in_parallel() || omp_get_max_threads() == 1) {
    for (int64_t c = 0; c < chunks; ++c) run_chunk(c);
    return;
  }
  // Exceptions must not cross the OpenMP region boundary: keep them per chunk.
  std::vector<std::exception_ptr> errors(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    try {
      run_chunk(c);
    } catch (...) {
      errors[static_cast<size_t>(c)] = std::current_exception();
    }
  }
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

Status parallel_for_status(int64_t n, int64_t grain,
                           const std::function<Status(int64_t chunk, int64_t begin, int64_t end)>& fn) {
  std::vector<Status> results(static_cast<size_t>(chunk_count(n, grain)));
  parallel_for(n, grain, [&](int64_t chunk, int64_t begin, int64_t end) {
    results[static_cast<size_t>(chunk)] = fn(chunk, begin, end);
  });
  for (auto& s : results) {
    if (!s.is_ok()) return s;
  }
  return Status::ok();
}

int max_threads() { return omp_get_max_threads(); }

ScopedThreadLimit::ScopedThreadLimit(int threads) : previous_(omp_get_max_threads()) {
  if (threads > 0) omp_set_num_threads(threads);
}

ScopedThreadLimit::~ScopedThreadLimit() { omp_set_num_threads(previous_); }

}  // namespace qforge
