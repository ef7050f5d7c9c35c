#pragma once
/// \file
/// A dense network as the generator of an implicit sampler, with the parameter layout of the
/// official IKA PyTorch code (docs/conventions.md).

#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::spectral {

/// The output form of an `MlpGenerator`.
enum class MlpForm {
  /// \f$\omega = h(z)\f$.
  plain,
  /// \f$\omega = \mathrm{sign}(z) \odot h(|z|)\f$, the official IKA form: odd in every
  /// coordinate, so a symmetric noise gives a symmetric spectral density.
  sign_symmetric
};

/// A multilayer perceptron \f$h\f$ with caller-given weights: layer \f$l\f$ maps
/// \f[ x_{l+1} = \sigma_l(W_l^\top x_l + b_l), \f]
/// \f$W_l\f$ an (inputs \f$\times\f$ outputs) matrix and \f$b_l\f$ a vector of outputs, with the
/// LeakyReLU \f$\sigma(y) = y\f$ for \f$y > 0\f$, \f$a y\f$ otherwise (negative slope \f$a\f$,
/// default 0.2) after every layer but the last, which is linear. The inputs \f$\times\f$ outputs
/// layout is that of the official PyTorch parameters (applied there by
/// `einsum('bijk,il->bljk')`), so they can be copied in as they are. With `MlpForm::sign_symmetric`
/// the generator is \f$\omega = \mathrm{sign}(z) \odot h(|z|)\f$ (needs as many outputs as
/// inputs).
///
/// A `FrequencyGenerator`: it maps a whole \f$M \times d_{in}\f$ batch at once, as
/// \f$X W_l\f$ plus the bias broadcast over rows, in precision T.
template <Real T>
class MlpGenerator {
 public:
  using Scalar = T;

  /// One dense layer: `weights` is inputs x outputs, `bias` has one entry per output.
  struct Layer {
    Matrix<T> weights;
    Vector<T> bias;
  };

  explicit MlpGenerator(std::vector<Layer> layers, MlpForm form = MlpForm::plain,
                        T negative_slope = T(0.2))
      : layers_(std::move(layers)), form_(form), negative_slope_(negative_slope) {
    require(!layers_.empty(), "MlpGenerator: at least one layer is needed, got 0");
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      require(layer.weights.rows() >= 1 && layer.weights.cols() >= 1, "MlpGenerator: layer ", l + 1,
              " weights are ", detail::shape_of(layer.weights),
              "; every layer needs at least one input and one output");
      if (l > 0)
        require(layer.weights.rows() == layers_[l - 1].weights.cols(), "MlpGenerator: layer ",
                l + 1, " weights are ", detail::shape_of(layer.weights), " but layer ", l,
                " outputs ", layers_[l - 1].weights.cols(), " values");
      require(layer.bias.size() == layer.weights.cols(), "MlpGenerator: layer ", l + 1,
              " bias has ", layer.bias.size(), " entries but its weights are ",
              detail::shape_of(layer.weights), " (", layer.weights.cols(), " outputs)");
      require(layer.weights.allFinite(), "MlpGenerator: layer ", l + 1, " weights must be finite");
      require(layer.bias.allFinite(), "MlpGenerator: layer ", l + 1, " bias must be finite");
    }
    require_finite(negative_slope_, "MlpGenerator", "negative_slope");
    require(form_ != MlpForm::sign_symmetric || output_dimension() == input_dimension(),
            "MlpGenerator: the sign-symmetric form needs as many outputs as inputs, got ",
            input_dimension(), " inputs and ", output_dimension(), " outputs");
  }

  [[nodiscard]] Index input_dimension() const { return layers_.front().weights.rows(); }
  [[nodiscard]] Index output_dimension() const { return layers_.back().weights.cols(); }
  [[nodiscard]] const std::vector<Layer>& layers() const { return layers_; }
  [[nodiscard]] MlpForm form() const { return form_; }
  [[nodiscard]] T negative_slope() const { return negative_slope_; }

  /// The frequencies for an \f$M \times d_{in}\f$ batch of noise, one row per sample.
  [[nodiscard]] Matrix<T> operator()(const Matrix<T>& noise) const {
    require(noise.cols() == input_dimension(), "MlpGenerator: the noise is ",
            detail::shape_of(noise), " but the network takes ", input_dimension(), " inputs");
    const bool symmetric = form_ == MlpForm::sign_symmetric;
    Matrix<T> x = symmetric ? Matrix<T>(noise.cwiseAbs()) : noise;
    const T slope = negative_slope_;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      Matrix<T> y = affine(x, layers_[l]);
      if (l + 1 < layers_.size())
        y = y.unaryExpr([slope](T v) { return v > T(0) ? v : slope * v; });
      x = std::move(y);
    }
    if (symmetric) x.array() *= noise.array().sign();
    return x;
  }

 private:
  /// \f$y = x W + b\f$ summed in one fixed order (the bias, then input 0, 1, ...) with a
  /// `std::fma` per step: the same bits on every machine, whatever the vector width.
  [[nodiscard]] static Matrix<T> affine(const Matrix<T>& x, const Layer& layer) {
    Matrix<T> y(x.rows(), layer.weights.cols());
    for (Index o = 0; o < y.cols(); ++o)
      for (Index m = 0; m < y.rows(); ++m) {
        T sum = layer.bias(o);
        for (Index i = 0; i < x.cols(); ++i) sum = std::fma(x(m, i), layer.weights(i, o), sum);
        y(m, o) = sum;
      }
    return y;
  }
  std::vector<Layer> layers_;
  MlpForm form_;
  T negative_slope_;
};

}  // namespace kernattn::spectral
