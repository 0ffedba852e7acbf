// Deterministic parallel loops over OpenMP.
//
// [0, n) is cut into chunks of `grain` items (the last one shorter). The cut depends only on n and
// grain, never on the thread count, so a caller that writes one partial result per chunk and
// reduces them in chunk order gets bit-identical results with 1 or 64 threads.
// Calls made from inside a parallel region run serially (no nested oversubscription).
#pragma once

#include <cstdint>
#include <functional>

#include "qforge/status.h"

namespace qforge {

// Number of chunks parallel_for cuts [0, n) into: ceil(n / grain), 0 when n <= 0.
int64_t chunk_count(int64_t n, int64_t grain);

// Calls fn(chunk, begin, end) once per chunk, chunks spread over threads. An exception thrown by
// fn is rethrown in the caller (the one from the lowest chunk index) after all chunks ran.
void parallel_for(int64_t n, int64_t grain,
                  const std::function<void(int64_t chunk, int64_t begin, int64_t end)>& fn);

// Same, for bodies that can fail: returns the error of the lowest failing chunk index, so the
// reported error does not depend on scheduling. All chunks run even when one fails.
Status parallel_for_status(int64_t n, int64_t grain,
                           const std::function<Status(int64_t chunk, int64_t begin, int64_t end)>& fn);

// Threads a parallel_for may use (omp_get_max_threads()).
int max_threads();

// Limits the threads used by parallel_for for the lifetime of the object (e.g. --threads).
class ScopedThreadLimit {
 public:
  explicit ScopedThreadLimit(int threads);
  ~ScopedThreadLimit();
  ScopedThreadLimit(const ScopedThreadLimit&) = delete;
  ScopedThreadLimit& operator=(const ScopedThreadLimit&) = delete;

 private:
  int previous_;
};

}  // namespace qforge
