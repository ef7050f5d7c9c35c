// The comparison catalogue: every ready-made kernel, magnitude and mask of kernattn as a
// configuration named by strings, run through one code path by `kernattn_compare` and by
// `kernattn_bench --grid`.
//
// A configuration is a kernel, a magnitude, a mask, a scalar type, N (queries = keys), d
// (d_v = d) and a thread count (plus M for the linear-time estimators). `make_case` turns it into
// a `Case`: the attention object and its inputs, ready to be called in a timed loop. Inputs are
// fixed-seed, entries uniform on [-sqrt 3, sqrt 3) (unit variance), so every tool sees the same
// problem for the same configuration.
//
// Flops: each call is credited with the products it needs for the pairs its mask lets through,
// not with N^2: (2 d + 2 d_v) per visible (query, key) pair for the exact kernels (a causal call
// is credited with N (N + 1) / 2 pairs; Attention-SH with the pooled keys each query sees), plus
// 2 d_t per pair for the positional kernel's positions, and the linear-time model of
// bench_common.hpp for the estimators. The engine also scores the hidden pairs of the tiles that
// a mask's edge crosses: that work is real but not credited.
//
// Adding a kernel: give it a name in `kernel_names()` (comparison.cpp) and a branch in
// `visit_exact_kernel` (comparison_cases.hpp); a magnitude or a mask: the same in
// `visit_magnitude` / `visit_mask` and their parsers.
#pragma once

#include <benchmark/benchmark.h>

#include <kernattn/kernattn.hpp>
#include <memory>
#include <string>
#include <vector>

namespace kernattn_bench {

using kernattn::Index;

/// One problem of the comparison, named by strings (see the top of the file).
struct Configuration {
  std::string kernel = "softmax";  // `kernel_names()`
  std::string magnitude = "none";  // "none" or "lp:<p>"
  std::string mask = "none";       // "none", "causal" or "window:<w>" (w keys before each query)
  std::string scalar = "float";    // "float" or "double"
  Index n = 1024;                  // N_q = N_k
  Index d = 64;                    // head dimension, d_v = d
  int threads = 1;
  Index frequencies = 256;  // M of the linear-time estimators

  /// "softmax/none/none/float/d:64/n:1024/threads:1" (with "/m:256" for the estimators).
  [[nodiscard]] std::string name() const;
  /// The same configuration with the softmax kernel and no magnitude: its difference reference.
  [[nodiscard]] Configuration softmax_reference() const;
};

/// Lists of values for each field of `Configuration`: every combination of them.
struct Grid {
  std::vector<std::string> kernels, magnitudes, masks, scalars;
  std::vector<Index> sizes, dimensions;
  int threads = 1;
  Index frequencies = 256;
};

/// Every combination of the grid's lists (scalar, d, kernel, magnitude, mask, N: the last varies
/// fastest), each checked by `validate`.
std::vector<Configuration> combinations(const Grid& grid);

/// `names` separated by `separator`, for messages that list the valid choices.
std::string joined(const std::vector<std::string>& names, const std::string& separator = ", ");

/// The exact kernels (`Attention<Kernel>`), the compositions (positional, bn, sh) and the
/// linear-time estimators (favor, fourier), in the order tables list them.
const std::vector<std::string>& kernel_names();
/// The kernels that run in the linear-time engine.
bool is_linear_time(const std::string& kernel);
/// Throws `kernattn::InvalidArgument` naming the field and listing the valid choices when a
/// field of `configuration` is not one of them (the combination itself is checked by
/// `make_case`).
void validate(const Configuration& configuration);

/// The flops credited to one call (see the top of the file).
double credited_flops(const Configuration& configuration);

/// Q, K, V (N x d each) of every configuration of these sizes, in double: entries uniform on
/// [-sqrt 3, sqrt 3) from a fixed-seed std::mt19937 (whose bits the standard fixes). A float
/// case rounds them.
struct ComparisonInputs {
  kernattn::Matrix<double> Q, K, V;
};
ComparisonInputs comparison_inputs(Index n, Index d);

/// One configuration, built: its attention and inputs, allocated once.
class Case {
 public:
  virtual ~Case() = default;
  /// One attention call into the preallocated output.
  virtual void run() = 0;
  /// The output of the last `run`, converted to double.
  [[nodiscard]] virtual kernattn::Matrix<double> output() const = 0;
};

/// Builds the case; throws `kernattn::InvalidArgument` for a combination that the library
/// refuses (Attention-BN under a causal mask) or that this catalogue does not cover (a window
/// mask in the linear-time engine).
std::unique_ptr<Case> make_case(const Configuration& configuration);
std::unique_ptr<Case> make_float_case(const Configuration& configuration);
std::unique_ptr<Case> make_double_case(const Configuration& configuration);

/// The timed loop of one configuration, credited with `credited_flops`.
void benchmark_configuration(benchmark::State& state, const Configuration& configuration);
/// Registers `benchmark_configuration` under "compare/" + `configuration.name()` (wall-clock
/// time, milliseconds).
benchmark::internal::Benchmark* register_configuration(const Configuration& configuration);

/// The full grid of `kernattn_bench --grid`: every kernel with no magnitude and with L^3, masks
/// none, causal and window:128, N in {256, 1024, 4096}, d in {32, 64, 128}, float and double,
/// one thread, without the combinations the library refuses.
std::vector<Configuration> full_grid();

}  // namespace kernattn_bench
