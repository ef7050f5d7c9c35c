// The comparison catalogue (comparison.hpp): names, validation, flop credits and the timed loop.
#include "comparison.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <random>
#include <sstream>

#include "comparison_cases.hpp"

namespace kernattn_bench {

namespace {

const std::vector<std::string>& linear_time_names() {
  static const std::vector<std::string> names{"favor", "fourier"};
  return names;
}

/// The number after `prefix` in `text`, which must be all of it; false otherwise. (strtod rather
/// than std::from_chars, which some standard libraries lack for floating point.)
bool parse_after(const std::string& text, const std::string& prefix, double& value) {
  if (text.rfind(prefix, 0) != 0 || text.size() == prefix.size()) return false;
  const char* first = text.c_str() + prefix.size();
  char* end = nullptr;
  value = std::strtod(first, &end);
  return end == text.c_str() + text.size() && !std::isspace(static_cast<unsigned char>(*first));
}

/// Visible (query, key) pairs of an N x N problem under the configuration's mask: row i (from 0)
/// sees `keys_seen(i)` keys.
template <class KeysSeen>
double visible_pairs(Index n, KeysSeen keys_seen) {
  double pairs = 0;
  for (Index i = 0; i < n; ++i) pairs += double(keys_seen(i));
  return pairs;
}

double credited_pairs(const Configuration& c) {
  const Index n = c.n;
  if (c.kernel == "sh") {
    constexpr Index r = comparison_detail::kPoolingFactor;
    // Complete windows before the query, plus its own (partial) window.
    if (c.mask == "causal") return visible_pairs(n, [](Index i) { return i / r + 1; });
    return double(n) * double((n + r - 1) / r);
  }
  if (c.mask == "causal") return visible_pairs(n, [](Index i) { return i + 1; });
  if (c.mask != "none") {
    const Index w = comparison_detail::window_width(c.mask);
    return visible_pairs(n, [w](Index i) { return std::min(i, w) + 1; });
  }
  return double(n) * double(n);
}

}  // namespace

namespace comparison_detail {

double lp_exponent(const std::string& magnitude) {
  double p = 0;
  const bool parsed = parse_after(magnitude, "lp:", p);
  kernattn::require(parsed && std::isfinite(p) && p > 0,
                    "magnitude must be none or lp:<p> with a finite p > 0, got '", magnitude, "'");
  return p;
}

Index window_width(const std::string& mask) {
  double w = -1;
  const bool parsed = parse_after(mask, "window:", w);
  kernattn::require(parsed && w >= 0 && w == std::floor(w) && w < 1e15,
                    "mask must be one of none, causal, window:<w> (w >= 0 keys before each "
                    "query), got '",
                    mask, "'");
  return Index(w);
}

}  // namespace comparison_detail

std::string Configuration::name() const {
  std::ostringstream out;
  out << kernel << '/' << magnitude << '/' << mask << '/' << scalar << "/d:" << d << "/n:" << n
      << "/threads:" << threads;
  if (is_linear_time(kernel)) out << "/m:" << frequencies;
  return out.str();
}

Configuration Configuration::softmax_reference() const {
  Configuration reference = *this;
  reference.kernel = "softmax";
  reference.magnitude = "none";
  return reference;
}

ComparisonInputs comparison_inputs(Index n, Index d) {
  std::mt19937 generator(20240521u);
  const auto fill = [&] {
    kernattn::Matrix<double> m(n, d);
    for (Index j = 0; j < d; ++j)
      for (Index i = 0; i < n; ++i)
        m(i, j) = (double(generator()) / 4294967296.0 * 2.0 - 1.0) * 1.7320508075688772;
    return m;
  };
  ComparisonInputs inputs;
  inputs.Q = fill();
  inputs.K = fill();
  inputs.V = fill();
  return inputs;
}

std::string joined(const std::vector<std::string>& names, const std::string& separator) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : separator) + name;
  return out;
}

const std::vector<std::string>& kernel_names() {
  static const std::vector<std::string> names{
      "softmax", "rbf",        "laplacian", "matern32", "matern52", "rq",     "polynomial",
      "linear",  "positional", "bn",        "sh",       "favor",    "fourier"};
  return names;
}

bool is_linear_time(const std::string& kernel) {
  const auto& names = linear_time_names();
  return std::find(names.begin(), names.end(), kernel) != names.end();
}

void validate(const Configuration& c) {
  const auto& kernels = kernel_names();
  kernattn::require(std::find(kernels.begin(), kernels.end(), c.kernel) != kernels.end(),
                    "unknown kernel '", c.kernel, "'; valid: ", joined(kernels));
  if (c.magnitude != "none") comparison_detail::lp_exponent(c.magnitude);
  if (c.mask != "none" && c.mask != "causal") comparison_detail::window_width(c.mask);
  kernattn::require(c.scalar == "float" || c.scalar == "double", "unknown scalar type '", c.scalar,
                    "'; valid: float, double");
  kernattn::require(c.n >= 1, "n must be >= 1, got ", c.n);
  kernattn::require(c.d >= 1, "d must be >= 1, got ", c.d);
  kernattn::require(c.threads >= 0, "threads must be >= 0 (0: the OpenMP default), got ",
                    c.threads);
  kernattn::require(c.frequencies >= 1, "m must be >= 1, got ", c.frequencies);
}

double credited_flops(const Configuration& c) {
  const double N = double(c.n);
  const double d = double(c.d);
  if (is_linear_time(c.kernel)) {
    const double M = double(c.frequencies);
    const double features = c.kernel == "fourier" ? 2 * M : M;
    // The frequency products of Q and K, the state phi(K)^T V and the read phi(Q) S.
    return 2.0 * 2.0 * N * d * M + 4.0 * N * features * d;
  }
  const double per_pair = c.kernel == "positional"
                              ? 2.0 * (d + double(comparison_detail::kPositionDim)) + 2.0 * d
                              : 4.0 * d;
  return per_pair * credited_pairs(c);
}

std::unique_ptr<Case> make_case(const Configuration& configuration) {
  validate(configuration);
  return configuration.scalar == "float" ? make_float_case(configuration)
                                         : make_double_case(configuration);
}

void benchmark_configuration(benchmark::State& state, const Configuration& configuration) {
  const auto attention = make_case(configuration);
  for (auto _ : state) {
    attention->run();
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(credited_flops(configuration) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.SetItemsProcessed(state.iterations() * configuration.n);
}

benchmark::internal::Benchmark* register_configuration(const Configuration& configuration) {
  return benchmark::RegisterBenchmark(("compare/" + configuration.name()).c_str(),
                                      [configuration](benchmark::State& state) {
                                        benchmark_configuration(state, configuration);
                                      })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

std::vector<Configuration> combinations(const Grid& grid) {
  std::vector<Configuration> all;
  for (const auto& scalar : grid.scalars)
    for (const Index d : grid.dimensions)
      for (const auto& kernel : grid.kernels)
        for (const auto& magnitude : grid.magnitudes)
          for (const auto& mask : grid.masks)
            for (const Index n : grid.sizes) {
              Configuration c{kernel, magnitude, mask,         scalar,
                              n,      d,         grid.threads, grid.frequencies};
              validate(c);
              all.push_back(std::move(c));
            }
  return all;
}

std::vector<Configuration> full_grid() {
  std::vector<Configuration> grid;
  for (Configuration& c : combinations({kernel_names(),
                                        {"none", "lp:3"},
                                        {"none", "causal", "window:128"},
                                        {"float", "double"},
                                        {256, 1024, 4096},
                                        {32, 64, 128}}))
    if (!(c.kernel == "bn" && c.mask != "none") &&
        !((c.kernel == "sh" || is_linear_time(c.kernel)) && c.mask == "window:128"))
      grid.push_back(std::move(c));
  return grid;
}

}  // namespace kernattn_bench
