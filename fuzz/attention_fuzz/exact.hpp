/// \file
/// The exact engine's part of the fuzz target: the mask and magnitude are chosen by the fuzzer,
/// then the composition is run and checked. Its kernels are split over two translation units
/// (attention_fuzz.cpp and exact_distance_kernels.cpp), which compile in parallel.
#pragma once

#include <vector>

#include "problem.hpp"

namespace attention_fuzz {

template <class Composition, class Mask>
void run_exact(const Problem& p, const Composition& attention, const Mask& mask,
               bool nonnegative_weights) {
  const Mat out = attention(p.Q, p.K, p.V, p.layout());
  // A row whose visible log-weights all underflow to -inf (an extreme kernel parameter) outputs
  // zeros by definition (docs/numerics.md, section 3).
  check_output(
      p, out, nonnegative_weights,
      [&](Index b) {
        return std::optional(mask.bind(mask::Shape{p.nq, p.nk, b, p.sequences}));
      },
      true);
}

/// The mask, chosen by the fuzzer, then the composition with it.
template <class Kernel, class Magnitude>
void with_mask(FuzzedDataProvider& data, const Problem& p, Kernel kernel, Magnitude magnitude,
               bool nonnegative_weights) {
  ExecutionOptions options;
  options.key_tile = data.ConsumeIntegralInRange<Index>(1, 40);
  options.query_tile = data.ConsumeIntegralInRange<Index>(0, 40);
  switch (data.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: {
      const Attention<Kernel, Magnitude> attention(kernel, magnitude, {}, options);
      run_exact(p, attention, mask::None{}, nonnegative_weights);
      break;
    }
    case 1: {
      const Attention<Kernel, Magnitude, mask::Causal> attention(kernel, magnitude, {}, options);
      run_exact(p, attention, mask::Causal{}, nonnegative_weights);
      break;
    }
    case 2: {
      const mask::Window window(data.ConsumeIntegralInRange<Index>(-3, 40),
                                data.ConsumeIntegralInRange<Index>(-3, 40));
      const Attention<Kernel, Magnitude, mask::Window> attention(kernel, magnitude, window,
                                                                 options);
      run_exact(p, attention, window, nonnegative_weights);
      break;
    }
    case 3: {
      std::vector<Index> lengths;
      const Index count = data.ConsumeBool() ? 1 : p.sequences;
      for (Index b = 0; b < count; ++b)
        lengths.push_back(data.ConsumeIntegralInRange<Index>(-1, p.nk + 1));
      const auto padding = mask::KeyPadding::from_lengths(lengths);
      const Attention<Kernel, Magnitude, mask::KeyPadding> attention(kernel, magnitude, padding,
                                                                     options);
      run_exact(p, attention, padding, nonnegative_weights);
      break;
    }
    default: {
      Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> allowed(p.nq, p.nk);
      for (Index j = 0; j < p.nk; ++j)
        for (Index i = 0; i < p.nq; ++i) allowed(i, j) = data.ConsumeBool();
      const mask::Boolean boolean(allowed);
      const Attention<Kernel, Magnitude, mask::Boolean> attention(kernel, magnitude, boolean,
                                                                  options);
      run_exact(p, attention, boolean, nonnegative_weights);
      break;
    }
  }
}

template <class Kernel>
void with_magnitude(FuzzedDataProvider& data, const Problem& p, Kernel kernel,
                    bool nonnegative_weights) {
  if (data.ConsumeBool()) {
    with_mask(data, p, kernel, magnitude::None{}, nonnegative_weights);
  } else {
    const Real power = decode_parameter(data);
    const magnitude::Lp<Real> lp(
        power, data.ConsumeBool() ? std::optional<Real>(decode_parameter(data)) : std::nullopt);
    with_mask(data, p, kernel, lp, nonnegative_weights);
  }
}

/// The exact engine with a distance kernel (RBF, Laplacian, Matérn 5/2, rational quadratic),
/// `choice` 1 to 4 in the order of `exact` in attention_fuzz.cpp.
void exact_distance_kernel(FuzzedDataProvider& data, const Problem& p, int choice);

}  // namespace attention_fuzz
