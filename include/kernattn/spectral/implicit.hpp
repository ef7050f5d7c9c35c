#pragma once
/// \file
/// Implicit spectral samplers (Song et al., Implicit Kernel Attention): frequencies
/// \f$\omega = g(\varepsilon)\f$ pushed forward from a base noise \f$\varepsilon\f$ by a
/// generator \f$g\f$, typically a small network (`MlpGenerator`). The kernel they estimate,
/// \f$\kappa(r) = E_\varepsilon[\cos(g(\varepsilon)\cdot r)]\f$, has no closed form.

#include <concepts>
#include <string>
#include <utility>
#include <vector>

#include "kernattn/spectral/gaussian.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn::spectral {

/// A batch map from noise to frequencies: `g(noise)` maps an \f$M \times d_{in}\f$ matrix of
/// noise (one sample per row, \f$d_{in}\f$ = `input_dimension()`) to the \f$M \times d_{out}\f$
/// matrix of frequencies (\f$d_{out}\f$ = `output_dimension()`), row by row.
///
/// The smallest user-defined generator (\f$\omega = 2\varepsilon\f$ in 4 dimensions; with
/// standard normal noise it is the Gaussian sampler of lengthscale 1/2):
/// \code
/// struct Doubling {
///   using Scalar = float;
///   kernattn::Index input_dimension() const { return 4; }
///   kernattn::Index output_dimension() const { return 4; }
///   kernattn::Matrix<float> operator()(const kernattn::Matrix<float>& noise) const {
///     return 2.0f * noise;
///   }
/// };
/// \endcode
template <class G>
concept FrequencyGenerator = Real<typename G::Scalar> &&
    requires(const G generator, const Matrix<typename G::Scalar>& noise) {
  { generator.input_dimension() } -> std::convertible_to<Index>;
  { generator.output_dimension() } -> std::convertible_to<Index>;
  { generator(noise) } -> std::convertible_to<Matrix<typename G::Scalar>>;
};

/// A generator whose weights can be trained (docs/gradients.md, "Spectral samplers"):
/// `parameter_names()`, `parameters()`, `with_parameters(values)` and
/// `parameter_gradient(noise, dOmega, &d_noise)`, the gradient of its parameters (in double) and,
/// when `d_noise` is not null, of the noise.
template <class G>
concept DifferentiableGenerator = FrequencyGenerator<G> &&
    requires(const G generator, const Eigen::VectorXd values,
             const Matrix<typename G::Scalar>& noise, Matrix<typename G::Scalar>* d_noise) {
  { generator.parameter_names() } -> std::convertible_to<std::vector<std::string>>;
  { generator.parameters() } -> std::convertible_to<Eigen::VectorXd>;
  { generator.with_parameters(values) } -> std::convertible_to<G>;
  { generator.parameter_gradient(noise, noise, d_noise) } -> std::convertible_to<Eigen::VectorXd>;
};

/// The implicit sampler \f$\omega = g(\varepsilon)\f$, \f$\varepsilon\f$ drawn from `Base` in
/// dimension \f$d_{in}\f$ = `generator.input_dimension()`; the frequencies have dimension
/// \f$d\f$ = `generator.output_dimension()`. `Base` defaults to the standard normal
/// (`Gaussian` of lengthscale 1); `MirroredGaussian` gives the official IKA noise.
///
/// Uniforms: `base.uniforms_per_frequency(d_in)` per frequency, turned into the noise by the
/// base, then into frequencies by the generator. Rows stay independent when the base's are.
template <FrequencyGenerator Generator, SpectralSampler Base = Gaussian<typename Generator::Scalar>>
requires std::same_as<typename Base::Scalar, typename Generator::Scalar>
class Implicit {
 public:
  using Scalar = typename Generator::Scalar;

  /// The generator over the default base: the standard normal when `Base` is `Gaussian`,
  /// otherwise a default-constructed `Base`. (A template, so that an explicit instantiation of
  /// `Implicit` over a base without a default compiles.)
  template <class B = Base>
  requires std::same_as<B, Gaussian<Scalar>> || std::default_initializable<B>
  explicit Implicit(Generator generator) : Implicit(std::move(generator), default_base<B>()) {}
  Implicit(Generator generator, Base base)
      : generator_(std::move(generator)), base_(std::move(base)) {}

  [[nodiscard]] const Generator& generator() const { return generator_; }
  [[nodiscard]] const Base& base() const { return base_; }

  /// The base's count for the noise dimension \f$d_{in}\f$ (independent of \f$d\f$, which must
  /// be \f$d_{out}\f$).
  [[nodiscard]] Index uniforms_per_frequency(Index) const {
    return base_.uniforms_per_frequency(generator_.input_dimension());
  }

  [[nodiscard]] Matrix<Scalar> frequencies_from_uniforms(const Matrix<double>& uniforms,
                                                         Index d) const {
    require_frequency_shape(uniforms.rows(), d, "Implicit");
    require(d == Index(generator_.output_dimension()), "Implicit: the dimension d = ", d,
            " differs from the generator's output dimension ",
            Index(generator_.output_dimension()));
    require_uniforms(uniforms, uniforms_per_frequency(d), "Implicit");
    const Matrix<Scalar> noise =
        base_.frequencies_from_uniforms(uniforms, generator_.input_dimension());
    Matrix<Scalar> frequencies = generator_(noise);
    require(frequencies.rows() == noise.rows() && frequencies.cols() == d,
            "Implicit: the generator returned ", detail::shape_of(frequencies), " for noise of ",
            detail::shape_of(noise), ", expected ", detail::shape_of(noise.rows(), d));
    require_finite_frequencies(frequencies, "Implicit",
                               "the generator's output overflowed (or its noise was not finite)");
    return frequencies;
  }

  /// The trainable parameters (`DifferentiableSampler`, with a `DifferentiableGenerator`): the
  /// generator's blocks ("generator.<name>"), then the base's when it has any ("base.<name>");
  /// the noise \f$\varepsilon\f$ stays that of the same uniforms.
  [[nodiscard]] std::vector<std::string> parameter_names() const requires
      DifferentiableGenerator<Generator> {
    std::vector<std::string> names = prefixed("generator", generator_.parameter_names());
    if constexpr (DifferentiableSampler<Base>)
      for (std::string& name : prefixed("base", base_.parameter_names()))
        names.push_back(std::move(name));
    return names;
  }
  [[nodiscard]] std::vector<Index> parameter_sizes() const requires
      DifferentiableGenerator<Generator> {
    std::vector<Index> sizes = parameter_sizes_of(generator_);
    if constexpr (DifferentiableSampler<Base>)
      for (const Index size : parameter_sizes_of(base_)) sizes.push_back(size);
    return sizes;
  }
  [[nodiscard]] Eigen::VectorXd parameters(Index = 0) const requires
      DifferentiableGenerator<Generator> {
    const Eigen::VectorXd own = generator_.parameters();
    if constexpr (DifferentiableSampler<Base>) {
      const Eigen::VectorXd theirs = base_.parameters(generator_.input_dimension());
      Eigen::VectorXd values(own.size() + theirs.size());
      values << own, theirs;
      return values;
    } else {
      return own;
    }
  }
  [[nodiscard]] Implicit with_parameters(const Eigen::VectorXd& values) const requires
      DifferentiableGenerator<Generator> {
    const Index own = generator_.parameters().size();
    const Index total = parameters().size();
    require(values.size() == total, "Implicit: with_parameters takes ", total,
            " values (parameter_names()) but got ", values.size());
    if constexpr (DifferentiableSampler<Base>)
      return Implicit(generator_.with_parameters(values.head(own)),
                      base_.with_parameters(values.tail(total - own)));
    else
      return Implicit(generator_.with_parameters(values), base_);
  }
  /// The generator's backward pass on the noise of `uniforms`, then the base's on the noise's
  /// gradient.
  [[nodiscard]] Eigen::VectorXd parameter_gradient(
      const Matrix<double>& uniforms, Index d,
      const Matrix<Scalar>& d_frequencies) const requires DifferentiableGenerator<Generator> {
    require_frequency_shape(uniforms.rows(), d, "Implicit");
    const Index d_in = generator_.input_dimension();
    require_uniforms(uniforms, uniforms_per_frequency(d), "Implicit");
    const Matrix<Scalar> noise = base_.frequencies_from_uniforms(uniforms, d_in);
    if constexpr (DifferentiableSampler<Base>) {
      Matrix<Scalar> d_noise;
      const Eigen::VectorXd own = generator_.parameter_gradient(noise, d_frequencies, &d_noise);
      const Eigen::VectorXd theirs = base_.parameter_gradient(uniforms, d_in, d_noise);
      Eigen::VectorXd gradient(own.size() + theirs.size());
      gradient << own, theirs;
      return gradient;
    } else {
      return generator_.parameter_gradient(noise, d_frequencies, nullptr);
    }
  }

 private:
  template <class B>
  static B default_base() {
    if constexpr (std::same_as<B, Gaussian<Scalar>>) {
      return B(Scalar(1));
    } else {
      return B{};
    }
  }

  Generator generator_;
  Base base_;
};

}  // namespace kernattn::spectral
