#pragma once
/// \file
/// The one parallel loop of the library. With OpenMP (compiled with -fopenmp, or through the
/// CMake target when OpenMP was found) iterations run on a team of threads; without it they run
/// in order on the calling thread. Each iteration must write only its own part of the output, so
/// results never depend on the thread count.

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>

#include "kernattn/core/errors.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace kernattn {

/// The number of threads a request of `requested` threads gets: 0 means the OpenMP default
/// (`OMP_NUM_THREADS`, else the number of cores); always 1 without OpenMP.
[[nodiscard]] inline int resolve_thread_count(int requested) {
  require(requested >= 0, "threads must be >= 0 (0 = the OpenMP default), got ", requested);
#ifdef _OPENMP
  return requested == 0 ? omp_get_max_threads() : requested;
#else
  return 1;
#endif
}

/// Calls `body(i)` for every i in [0, count) on up to `threads` threads (dynamic schedule).
///
/// Eigen's own GEMM stays single-threaded inside: every worker sets its OpenMP thread count
/// (a per-task setting) to 1, and Eigen does not parallelise inside a team of more than one
/// thread, so threads never multiply. An exception thrown by `body` is rethrown on the calling
/// thread after the loop; the remaining iterations are skipped.
template <class Body>
void parallel_for(Index count, int threads, Body&& body) {
  if (count <= 0) return;
#ifdef _OPENMP
  std::exception_ptr failure;
  std::mutex failure_guard;
  std::atomic<bool> failed{false};
  const int team = static_cast<int>(std::min<Index>(threads, count));
#pragma omp parallel num_threads(team)
  {
    omp_set_num_threads(1);
#pragma omp for schedule(dynamic, 1)
    for (Index i = 0; i < count; ++i) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        body(i);
      } catch (...) {
        const std::lock_guard lock(failure_guard);
        if (!failure) failure = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    }
  }
  if (failure) std::rethrow_exception(failure);
#else
  (void)threads;
  for (Index i = 0; i < count; ++i) body(i);
#endif
}

}  // namespace kernattn
