#pragma once
/// \file
/// The Matérn family at half-integer smoothness, and the Laplacian kernel (Matérn 1/2).

#include <cmath>
#include <limits>
#include <numbers>

#include "kernattn/core/parameter.hpp"
#include "kernattn/core/parameters.hpp"
#include "kernattn/kernels/kernel.hpp"

namespace kernattn::kernels {

/// Matérn kernel with smoothness \f$\nu = \f$ `TwiceNu`/2, \f$r = \lVert q-k\rVert\f$,
/// lengthscale \f$\ell\f$ (default \f$d^{1/4}\f$):
///  - \f$\nu = 1/2\f$: \f$\kappa = e^{-r/\ell}\f$;
///  - \f$\nu = 3/2\f$: \f$\kappa = (1 + \sqrt3\, r/\ell)\, e^{-\sqrt3\, r/\ell}\f$;
///  - \f$\nu = 5/2\f$: \f$\kappa = (1 + \sqrt5\, r/\ell + 5r^2/(3\ell^2))\, e^{-\sqrt5\,
///  r/\ell}\f$.
/// Evaluated in the log domain from squared distances (`DistanceForm`).
template <Real T, int TwiceNu>
class Matern {
  static_assert(TwiceNu == 1 || TwiceNu == 3 || TwiceNu == 5,
                "Matern is implemented for nu = 1/2, 3/2 and 5/2 (TwiceNu = 1, 3 or 5)");

 public:
  using Scalar = T;
  using Form = DistanceForm;

  /// \f$\ell = d^{1/4}\f$.
  Matern() = default;
  /// A fixed lengthscale \f$\ell > 0\f$.
  explicit Matern(T lengthscale) : lengthscale_(lengthscale, "Matern", "lengthscale") {}

  [[nodiscard]] T lengthscale(Index d) const { return lengthscale_.resolve(d); }

  /// The trainable parameter (include/kernattn/core/parameters.hpp): the lengthscale \f$\ell\f$.
  [[nodiscard]] static std::vector<std::string> parameter_names() { return {"lengthscale"}; }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    return Eigen::VectorXd::Constant(1, double(lengthscale(d)));
  }
  [[nodiscard]] Matern with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "Matern");
    return Matern(T(values(0)));
  }
  /// Adds \f$\sum G\,\partial\log\kappa/\partial\ell\f$ over a block of squared distances
  /// \f$r^2\f$ and their weights G to `sums(0)`: \f$\log\kappa\f$ depends on \f$r^2/\ell^2\f$, so
  /// \f$\partial\log\kappa/\partial\ell = -(2r^2/\ell)\,d\log\kappa/d(r^2)\f$.
  template <class Distances, class Weights>
  void add_log_parameter_gradients(const Distances& squared_distances, const Weights& weights,
                                   Index d, Eigen::VectorXd& sums) const {
    Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic> derivative = squared_distances;
    log_derivative_from_squared_distance(derivative, d);
    sums(0) += -2.0 / double(lengthscale(d)) *
               double((weights * squared_distances.max(T(0)) * derivative).sum());
  }

  /// Replaces each squared distance \f$r^2\f$ by \f$\log\kappa(r)\f$.
  template <class Block>
  void log_from_squared_distance(Block&& block, Index d) const {
    const T rate = root_of_2nu() / lengthscale(d);
    // x = sqrt(2 nu) r / l. Eigen's vectorised float sqrt of infinity is NaN, so an infinite
    // squared distance is clamped to the largest finite one: its weight still underflows to
    // exactly 0 next to any key at a finite distance.
    if constexpr (TwiceNu == 1) {
      block = block.max(T(0)).min(std::numeric_limits<T>::max()).sqrt() * -rate;
    } else {
      block = block.max(T(0)).min(std::numeric_limits<T>::max()).sqrt() * rate;
      if constexpr (TwiceNu == 3) {
        block = block.log1p() - block;
      } else {
        // Only inside the logarithm is x capped at c = sqrt(max)/2, so that x^2 stays finite:
        // for x > c that changes log(1 + x + x^2/3) by at most 2 log(x/c), far below the
        // rounding of the term -x (> c) it is added to, so distant keys keep their order.
        const T cap = std::sqrt(std::numeric_limits<T>::max()) / T(2);
        block = (T(1) + block.min(cap) + block.min(cap).square() / T(3)).log() - block;
      }
    }
  }

  /// For \f$\nu = 3/2, 5/2\f$, \f$\log\kappa = -x + \log P(x)\f$ with \f$x = \sqrt{2\nu}\,r/\ell\f$
  /// and the polynomial \f$P(x) = 1 + x\f$ or \f$1 + x + x^2/3\f$: a function object that maps a
  /// squared distance \f$r^2\f$ (a scalar or an Eigen packet) to the exponent \f$-x\f$ and the
  /// prefactor \f$P(\min(x, c))\f$, with \f$c = \sqrt{\max}/2\f$ as in
  /// `log_from_squared_distance` (so \f$1 \le P < \infty\f$). The exact engine's block path forms
  /// the weights as \f$P\,e^{-x - m}\f$ with one logarithm per row (docs/performance.md).
  [[nodiscard]] auto exponent_and_prefactor(Index d) const requires(TwiceNu != 1) {
    return ExponentAndPrefactor{root_of_2nu() / lengthscale(d)};
  }

  /// Replaces each squared distance \f$r^2\f$ by \f$d\log\kappa/d(r^2)\f$; with \f$c =
  /// \sqrt{2\nu}/\ell\f$ and \f$x = c\,r\f$:
  ///  - \f$\nu = 1/2\f$: \f$-c/(2r)\f$, and 0 at \f$r = 0\f$, where \f$-c\,r\f$ has no gradient (0
  ///    is in its superdifferential, and is what `torch.cdist` gives there);
  ///  - \f$\nu = 3/2\f$: \f$-c^2 / (2(1 + x))\f$;
  ///  - \f$\nu = 5/2\f$: \f$-c^2 (1 + x) / (6(1 + x + x^2/3))\f$.
  template <class Block>
  void log_derivative_from_squared_distance(Block&& block, Index d) const {
    const T rate = root_of_2nu() / lengthscale(d);
    block = block.max(T(0)).min(std::numeric_limits<T>::max());
    if constexpr (TwiceNu == 1) {
      block = (block == T(0)).select(T(0), T(-0.5) * rate / block.sqrt());
    } else if constexpr (TwiceNu == 3) {
      block = T(-0.5) * rate * rate / (T(1) + rate * block.sqrt());
    } else {
      const T cap = std::sqrt(std::numeric_limits<T>::max()) / T(2);
      const auto x = (rate * block.sqrt()).min(cap);
      block = (-rate * rate / T(6)) * (T(1) + x) / (T(1) + x + x.square() / T(3));
    }
  }

  template <class Q, class K>
  [[nodiscard]] T operator()(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k) const {
    const T x = root_of_2nu() * (q - k).norm() / lengthscale(q.size());
    if constexpr (TwiceNu == 1) return std::exp(-x);
    if constexpr (TwiceNu == 3) return (T(1) + x) * std::exp(-x);
    return (T(1) + x + x * x / T(3)) * std::exp(-x);
  }

 private:
  /// \f$(-x, P(\min(x, c)))\f$ of \f$r^2\f$, \f$x = \text{rate}\cdot r\f$, clamped like
  /// `log_from_squared_distance`.
  struct ExponentAndPrefactor {
    T rate;
    template <class V>
    void operator()(const V& squared_distance, V& exponent, V& prefactor) const {
      using namespace Eigen::internal;
      const V clamped =
          pmin(pmax(squared_distance, pset1<V>(T(0))), pset1<V>(std::numeric_limits<T>::max()));
      const V x = pmul(psqrt(clamped), pset1<V>(rate));
      const V capped = pmin(x, pset1<V>(std::sqrt(std::numeric_limits<T>::max()) / T(2)));
      exponent = pnegate(x);
      if constexpr (TwiceNu == 3) {
        prefactor = padd(pset1<V>(T(1)), capped);
      } else {
        prefactor = padd(padd(pset1<V>(T(1)), capped), pdiv(pmul(capped, capped), pset1<V>(T(3))));
      }
    }
  };

  static constexpr T root_of_2nu() {
    if constexpr (TwiceNu == 1) return T(1);
    if constexpr (TwiceNu == 3) return std::numbers::sqrt3_v<T>;
    return T(2.236067977499789696409173668731276235L);  // sqrt(5)
  }

  DimensionDefault<T, SoftmaxLengthscale> lengthscale_;
};

template <Real T>
using Matern12 = Matern<T, 1>;
template <Real T>
using Matern32 = Matern<T, 3>;
template <Real T>
using Matern52 = Matern<T, 5>;

/// The Laplacian kernel \f$\kappa(q,k) = \exp(-\lVert q-k\rVert_2/\ell)\f$: Matérn 1/2.
template <Real T>
using Laplacian = Matern<T, 1>;

}  // namespace kernattn::kernels
