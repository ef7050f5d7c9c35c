/// \file
/// Explicit instantiations of the main templates for float and double: every member that is not
/// itself a template is compiled, so a broken member fails the build rather than a user's.
/// Compositions whose parts all have a default value: Clang 14 also instantiates the default
/// constructor of the others, although its constraint fails.

#include <kernattn/kernattn.hpp>

namespace kernattn {

#define KERNATTN_INSTANTIATE(T)                                                                 \
  template class kernels::Exponential<T>;                                                       \
  template class kernels::Rbf<T>;                                                               \
  template class kernels::Matern<T, 3>;                                                         \
  template class kernels::RationalQuadratic<T>;                                                 \
  template class kernels::Polynomial<T>;                                                        \
  template class kernels::Linear<T>;                                                            \
  template class kernels::Product<kernels::Exponential<T>, kernels::Rbf<T>>;                    \
  template class kernels::RandomFeature<features::Fourier<T>>;                                  \
  template class kernels::RandomFeature<features::Positive<T>>;                                 \
  template class kernels::IkaEnergy<features::Yaglom<T>>;                                       \
  template class magnitude::Lp<T>;                                                              \
  template class magnitude::FeaturePart<magnitude::Lp<T>>;                                      \
  template class features::Fourier<T>;                                                          \
  template class features::Positive<T>;                                                         \
  template class features::Yaglom<T>;                                                           \
  template class spectral::Gaussian<T>;                                                         \
  template class spectral::StudentT<T>;                                                         \
  template class spectral::Cauchy<T>;                                                           \
  template class spectral::Laplace<T>;                                                          \
  template class spectral::GammaScaleMixture<T>;                                                \
  template class spectral::GaussianMixture<T>;                                                  \
  template class spectral::MirroredGaussian<T>;                                                 \
  template class spectral::Orthogonal<spectral::Gaussian<T>>;                                   \
  template class spectral::MlpGenerator<T>;                                                     \
  template class spectral::Implicit<spectral::MlpGenerator<T>>;                                 \
  template class Attention<kernels::Exponential<T>, magnitude::None, mask::Causal>;             \
  template class Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>;                    \
  template class Attention<kernels::Polynomial<T>, magnitude::None, mask::None>;                \
  template class Attention<kernels::Product<kernels::Exponential<T>, kernels::Rbf<T>>,          \
                           magnitude::None, mask::None>;                                        \
  template class LinearAttention<features::Positive<T>, magnitude::None, mask::Causal>;         \
  template class LinearAttention<features::Fourier<T>, magnitude::Lp<T>, mask::None>;           \
  template class GraphAttention<kernels::Rbf<T>, magnitude::Lp<T>>;                             \
  template class GraphAttention<kernels::RandomFeature<features::Fourier<T>>>;                  \
  template class PositionalAttention<kernels::Exponential<T>, kernels::Rbf<T>>;                 \
  template class MultiHead<Attention<kernels::Exponential<T>>>;                                 \
  template class MultiHead<LinearAttention<features::Fourier<T>>, coupling::GaussianCopula>;    \
  template class BatchNormalized<Attention<kernels::Exponential<T>>>;                           \
  template class ScaledHead<Attention<kernels::Exponential<T>, magnitude::None, mask::Causal>>; \
  template class ScaledHead<LinearAttention<features::Positive<T>>>;

KERNATTN_INSTANTIATE(float)
KERNATTN_INSTANTIATE(double)

}  // namespace kernattn
