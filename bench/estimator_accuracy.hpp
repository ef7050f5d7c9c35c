// Accuracy against cost of the random-feature estimators (docs/random_features.md, "Accuracy
// against the number of features"), for `kernattn_compare --accuracy`.
//
// Each estimator runs in `LinearAttention` (float, no mask, not causal) with M frequencies and is
// compared with the exact attention of the kernel it estimates, computed in double on the same
// inputs (converted exactly), so that the reference carries no float error:
//  - fourier: `features::Fourier` of `spectral::Gaussian` at its default lengthscale d^(1/4),
//    times the magnitude `Lp(2)` at its default gamma 1/(2 sqrt d); exact: `Attention<Rbf, Lp>`
//    (variance sqrt d), which is softmax attention exp(q.k / sqrt d) (the difference is measured
//    and printed in `reference`);
//  - orthogonal: the same with `spectral::Orthogonal<Gaussian>`;
//  - fourier-matern32, fourier-matern52, fourier-rq: `features::Fourier` of `spectral::StudentT`
//    (3 and 5 degrees of freedom) and of `spectral::GammaScaleMixture` (alpha = 1), each at its
//    default lengthscale d^(1/4), times `Lp(2)`; exact: `Attention<Matern32 | Matern52 |
//    RationalQuadratic, Lp>` at the kernels' default lengthscale d^(1/4);
//  - favor: `features::Positive` (FAVOR+, orthogonal frequencies, input scale d^(-1/4)); exact:
//    `Attention<Exponential>`, softmax;
//  - implicit: `features::Fourier` of `spectral::Implicit<MlpGenerator>` (a fixed generator, see
//    estimator_accuracy.cpp) times `Lp(2)`. Its kernel has no closed form: the reference is the
//    same estimator in double with M_ref = 2^15 frequencies from an independent stream, which
//    carries its own error ~ M_ref^(-1/2).
//
// The metric: relative_error = the mean over `seeds` draws of ||out - out_exact||_F /
// ||out_exact||_F; draw s at M frequencies is stream s of seed 9100 + M, so draws are independent
// across seeds and across M. The inputs (`input_names()`, defined in estimator_accuracy.cpp) are
// fixed per (inputs, n, d); the first n rows are the same for every larger n.
#pragma once

#include <kernattn/kernattn.hpp>
#include <string>
#include <vector>

namespace kernattn_bench {

/// One point of an error-against-M curve.
struct AccuracyPoint {
  std::string estimator;    // `estimator_names()`
  std::string inputs;       // "unit" or "trained"
  kernattn::Index m, n, d;  // frequencies, tokens (Nq = Nk), head dimension (dv = d)
  double relative_error;    // mean over seeds of ||out - out_exact||_F / ||out_exact||_F
  double uniform_error;     // the same for equal weights on every key (the mean of V): an
                            // estimate above it says nothing about the kernel
  double time_ms;           // median time of one call of the estimator (float, linear engine)
  double exact_time_ms;     // median time of one call of the exact attention it estimates (float)
  std::string reference;    // the exact attention it is compared with, in words
};

/// "fourier", "orthogonal", "fourier-matern32", "fourier-matern52", "fourier-rq", "favor",
/// "implicit".
const std::vector<std::string>& estimator_names();
/// "unit", "trained".
const std::vector<std::string>& input_names();

/// One point per entry of `frequencies` (in that order) for `estimator` on `inputs` of n tokens
/// and head dimension d, with `threads` threads in every engine (0: the OpenMP default) and the
/// error averaged over `seeds` draws. Throws std::invalid_argument (`kernattn::InvalidArgument`),
/// naming the argument and listing the valid choices, for an unknown name, an empty
/// `frequencies`, an M < 1, n < 1, d < 1, threads < 0 or seeds < 1.
std::vector<AccuracyPoint> estimator_accuracy(const std::string& estimator,
                                              const std::string& inputs,
                                              const std::vector<kernattn::Index>& frequencies,
                                              kernattn::Index n, kernattn::Index d, int threads,
                                              int seeds);

}  // namespace kernattn_bench
