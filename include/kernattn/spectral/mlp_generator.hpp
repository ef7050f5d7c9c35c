#pragma once
/// \file
/// A dense network as the generator of an implicit sampler, with the parameter layout of the
/// official IKA PyTorch code (docs/conventions.md).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
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

  /// The trainable parameters (`DifferentiableGenerator`): per layer l (from 1), its weights
  /// ("layer<l>.weights", inputs x outputs, column-major) then its bias ("layer<l>.bias").
  [[nodiscard]] std::vector<std::string> parameter_names() const {
    std::vector<std::string> names;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      names.push_back("layer" + std::to_string(l + 1) + ".weights");
      names.push_back("layer" + std::to_string(l + 1) + ".bias");
    }
    return names;
  }
  /// The sizes of the blocks of `parameter_names()`.
  [[nodiscard]] std::vector<Index> parameter_sizes() const {
    std::vector<Index> sizes;
    for (const Layer& layer : layers_) {
      sizes.push_back(layer.weights.size());
      sizes.push_back(layer.bias.size());
    }
    return sizes;
  }
  /// Every weight and bias, in the order of `parameter_names()`.
  [[nodiscard]] Eigen::VectorXd parameters() const {
    Eigen::VectorXd values(parameter_count());
    Index at = 0;
    for (const Layer& layer : layers_) {
      values.segment(at, layer.weights.size()) = layer.weights.reshaped().template cast<double>();
      at += layer.weights.size();
      values.segment(at, layer.bias.size()) = layer.bias.template cast<double>();
      at += layer.bias.size();
    }
    return values;
  }
  /// The same network (shapes, form, slope) with other weights and biases.
  [[nodiscard]] MlpGenerator with_parameters(const Eigen::VectorXd& values) const {
    require(values.size() == parameter_count(), "MlpGenerator: with_parameters takes ",
            parameter_count(), " values (every weight and bias) but got ", values.size());
    std::vector<Layer> layers = layers_;
    Index at = 0;
    for (Layer& layer : layers) {
      layer.weights.reshaped() = values.segment(at, layer.weights.size()).template cast<T>();
      at += layer.weights.size();
      layer.bias = values.segment(at, layer.bias.size()).template cast<T>();
      at += layer.bias.size();
    }
    return MlpGenerator(std::move(layers), form_, negative_slope_);
  }
  [[nodiscard]] Index parameter_count() const {
    Index count = 0;
    for (const Layer& layer : layers_) count += layer.weights.size() + layer.bias.size();
    return count;
  }

  /// Backpropagation through the network: given the noise and \f$d\omega\f$ (M x outputs),
  /// \f$\partial\ell/\partial\theta\f$ in the order of `parameters()` (in double), and
  /// \f$\partial\ell/\partial\varepsilon\f$ into `d_noise` when it is not null. With \f$g\f$ the
  /// adjoint of a layer's output: \f$dW_l = x_l^\top g\f$, \f$db_l = \sum_m g_m\f$, the input's
  /// adjoint \f$g W_l^\top\f$, through \f$\sigma'\f$ (1 or the slope; at 0, the slope) of the
  /// layers before; the sign-symmetric form multiplies by \f$\mathrm{sign}(\varepsilon)\f$ at
  /// both ends (0 where \f$\varepsilon = 0\f$).
  [[nodiscard]] Eigen::VectorXd parameter_gradient(const Matrix<T>& noise,
                                                   const Matrix<T>& d_frequencies,
                                                   Matrix<T>* d_noise = nullptr) const {
    require(noise.cols() == input_dimension() && d_frequencies.rows() == noise.rows() &&
                d_frequencies.cols() == output_dimension(),
            "MlpGenerator: the noise is ", detail::shape_of(noise), " and dOmega ",
            detail::shape_of(d_frequencies), " but the network maps ", input_dimension(),
            " inputs to ", output_dimension(), " outputs per row");
    const bool symmetric = form_ == MlpForm::sign_symmetric;
    // The forward pass, keeping each layer's input and pre-activation.
    std::vector<Matrix<T>> inputs(layers_.size());
    std::vector<Matrix<T>> preactivations(layers_.size());
    inputs[0] = symmetric ? Matrix<T>(noise.cwiseAbs()) : noise;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      preactivations[l] = affine(inputs[l], layers_[l]);
      if (l + 1 < layers_.size())
        inputs[l + 1] = preactivations[l].unaryExpr(
            [slope = negative_slope_](T v) { return v > T(0) ? v : slope * v; });
    }
    Matrix<T> adjoint = d_frequencies;
    if (symmetric) adjoint.array() *= noise.array().sign();
    Eigen::VectorXd gradient(parameter_count());
    Index end = parameter_count();
    for (std::size_t l = layers_.size(); l-- > 0;) {
      const Layer& layer = layers_[l];
      if (l + 1 < layers_.size())
        adjoint.array() *=
            preactivations[l]
                .unaryExpr([slope = negative_slope_](T v) { return v > T(0) ? T(1) : slope; })
                .array();
      end -= layer.bias.size();
      gradient.segment(end, layer.bias.size()) =
          adjoint.colwise().sum().transpose().template cast<double>();
      end -= layer.weights.size();
      gradient.segment(end, layer.weights.size()) =
          (inputs[l].transpose() * adjoint).reshaped().template cast<double>();
      if (l > 0 || d_noise != nullptr) adjoint = (adjoint * layer.weights.transpose()).eval();
    }
    if (d_noise != nullptr) {
      if (symmetric) adjoint.array() *= noise.array().sign();
      *d_noise = adjoint;
    }
    return gradient;
  }

 private:
  /// \f$y = x W + b\f$ summed in one fixed order (the bias, then input 0, 1, ...) with a
  /// `std::fma` per step: the same bits on every machine, whatever the vector width. The inner
  /// loop runs down a column of x and y (contiguous), so that it vectorises.
  [[nodiscard]] static Matrix<T> affine(const Matrix<T>& x, const Layer& layer) {
    Matrix<T> y(x.rows(), layer.weights.cols());
    for (Index o = 0; o < y.cols(); ++o) {
      T* const out = y.col(o).data();
      std::fill(out, out + y.rows(), layer.bias(o));
      for (Index i = 0; i < x.cols(); ++i) {
        const T* const in = x.col(i).data();
        const T weight = layer.weights(i, o);
        for (Index m = 0; m < y.rows(); ++m) out[m] = std::fma(in[m], weight, out[m]);
      }
    }
    return y;
  }
  std::vector<Layer> layers_;
  MlpForm form_;
  T negative_slope_;
};

}  // namespace kernattn::spectral
