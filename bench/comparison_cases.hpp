// The configurations of comparison.hpp turned into types: one `make_case_for<T>` per scalar,
// instantiated in comparison_float.cpp and comparison_double.cpp.
#pragma once

#include <cstdint>
#include <kernattn/kernattn.hpp>
#include <memory>
#include <string>
#include <utility>

#include "comparison.hpp"

namespace kernattn_bench::comparison_detail {

namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;
namespace mask = kernattn::mask;
namespace features = kernattn::features;
namespace spectral = kernattn::spectral;

/// The dimension of the positions of the positional kernel (sinusoidal, shared by the heads).
constexpr Index kPositionDim = 16;
/// The pooling factor of Attention-SH.
constexpr Index kPoolingFactor = 4;
constexpr std::uint64_t kFrequencySeed = 20240521u;

/// p of "lp:<p>".
double lp_exponent(const std::string& magnitude);
/// w of "window:<w>".
Index window_width(const std::string& mask);

/// Q, K, V of a configuration (`comparison_inputs`) in T, and the output.
template <class T>
struct Inputs {
  kernattn::Matrix<T> Q, K, V, out;

  explicit Inputs(const ComparisonInputs& inputs)
      : Q(inputs.Q.cast<T>()),
        K(inputs.K.cast<T>()),
        V(inputs.V.cast<T>()),
        out(kernattn::Matrix<T>::Zero(inputs.Q.rows(), inputs.V.cols())) {}
};

/// A case that calls `call(inputs)` on its own inputs.
template <class T, class Call>
class CallCase final : public Case {
 public:
  CallCase(const Configuration& configuration, Call call)
      : inputs_(comparison_inputs(configuration.n, configuration.d)), call_(std::move(call)) {}
  void run() override { call_(inputs_); }
  [[nodiscard]] kernattn::Matrix<double> output() const override {
    return inputs_.out.template cast<double>();
  }

 private:
  Inputs<T> inputs_;
  Call call_;
};

template <class T, class Call>
std::unique_ptr<Case> make_call_case(const Configuration& configuration, Call call) {
  return std::make_unique<CallCase<T, Call>>(configuration, std::move(call));
}

/// A case whose attention takes (Q, K, V, out).
template <class T, class Engine>
std::unique_ptr<Case> make_engine_case(const Configuration& configuration, Engine engine) {
  return make_call_case<T>(configuration, [engine = std::move(engine)](Inputs<T>& inputs) {
    engine.compute(inputs.Q, inputs.K, inputs.V, inputs.out);
  });
}

template <class T, class Visit>
decltype(auto) visit_magnitude(const Configuration& configuration, Visit&& visit) {
  if (configuration.magnitude == "none") return visit(magnitude::None{});
  return visit(magnitude::Lp<T>(T(lp_exponent(configuration.magnitude))));
}

template <class Visit>
decltype(auto) visit_mask(const Configuration& configuration, Visit&& visit) {
  if (configuration.mask == "none") return visit(mask::None{});
  if (configuration.mask == "causal") return visit(mask::Causal{});
  return visit(mask::Window(window_width(configuration.mask), 0));
}

/// The exact kernels by name (`kernel_names()`); false when `kernel` is not one of them.
template <class T, class Visit>
bool visit_exact_kernel(const std::string& kernel, Visit&& visit) {
  if (kernel == "softmax") return visit(kernels::Exponential<T>{}), true;
  if (kernel == "rbf") return visit(kernels::Rbf<T>{}), true;
  if (kernel == "laplacian") return visit(kernels::Laplacian<T>{}), true;
  if (kernel == "matern32") return visit(kernels::Matern32<T>{}), true;
  if (kernel == "matern52") return visit(kernels::Matern52<T>{}), true;
  if (kernel == "rq") return visit(kernels::RationalQuadratic<T>{}), true;
  if (kernel == "polynomial") return visit(kernels::Polynomial<T>{}), true;
  if (kernel == "linear") return visit(kernels::Linear<T>{}), true;
  return false;
}

template <class T, class Magnitude, class Mask>
std::unique_ptr<Case> make_composition_case(const Configuration& c, Magnitude magnitude, Mask mask,
                                            const kernattn::ExecutionOptions& options) {
  using Softmax = kernattn::Attention<kernels::Exponential<T>, Magnitude, Mask>;
  const Softmax softmax({}, magnitude, mask, options);
  // Attention-BN refuses, when called, a mask under which queries see different keys.
  if (c.kernel == "bn") return make_engine_case<T>(c, kernattn::BatchNormalized<Softmax>(softmax));
  if (c.kernel == "sh") {
    kernattn::require(c.mask == "none" || c.mask == "causal",
                      "sh (Attention-SH) takes the masks none and causal here, got ", c.mask);
    kernattn::ScaledHead scaled(softmax, kPoolingFactor);
    scaled.set_threads(c.threads);  // its groups of queries under a causal mask
    return make_engine_case<T>(c, std::move(scaled));
  }
  // positional: softmax over the features times an RBF kernel over sinusoidal positions.
  const kernattn::PositionalAttention<kernels::Exponential<T>, kernels::Rbf<T>, Magnitude, Mask>
      positional({}, {}, magnitude, mask, options);
  return make_call_case<T>(c, [positional, positions = kernattn::sinusoidal_positions<T>(
                                               c.n, kPositionDim)](Inputs<T>& inputs) {
    positional.compute(inputs.Q, positions, inputs.K, positions, inputs.V, inputs.out);
  });
}

template <class T, class Magnitude, class Mask>
std::unique_ptr<Case> make_linear_time_case(const Configuration& c, Magnitude magnitude,
                                            Mask mask) {
  kernattn::LinearOptions options;
  options.threads = c.threads;
  const kernattn::random::RandomStream stream{kFrequencySeed, 0};
  if constexpr (std::is_same_v<Mask, mask::None> || std::is_same_v<Mask, mask::Causal>) {
    if (c.kernel == "favor")
      return make_engine_case<T>(
          c,
          kernattn::LinearAttention<features::Positive<T>, Magnitude, Mask>(
              features::Positive<T>::draw(c.frequencies, c.d, stream), magnitude, mask, options));
    return make_engine_case<T>(
        c, kernattn::LinearAttention<features::Fourier<T>, Magnitude, Mask>(
               features::Fourier<T>::draw(spectral::Gaussian<T>{}, c.frequencies, c.d, stream),
               magnitude, mask, options));
  } else {
    kernattn::require(false, c.kernel,
                      " runs in the linear-time engine, which takes the masks "
                      "none and causal, not ",
                      c.mask);
    return nullptr;
  }
}

template <class T>
std::unique_ptr<Case> make_case_for(const Configuration& c) {
  validate(c);
  kernattn::ExecutionOptions options;
  options.threads = c.threads;
  return visit_magnitude<T>(c, [&](auto magnitude) {
    return visit_mask(c, [&](auto mask) -> std::unique_ptr<Case> {
      using Magnitude = decltype(magnitude);
      using Mask = decltype(mask);
      if (is_linear_time(c.kernel)) return make_linear_time_case<T>(c, magnitude, mask);
      std::unique_ptr<Case> exact;
      if (visit_exact_kernel<T>(c.kernel, [&](auto kernel) {
            exact = make_engine_case<T>(c, kernattn::Attention<decltype(kernel), Magnitude, Mask>(
                                               kernel, magnitude, mask, options));
          }))
        return exact;
      return make_composition_case<T>(c, magnitude, mask, options);
    });
  });
}

}  // namespace kernattn_bench::comparison_detail
