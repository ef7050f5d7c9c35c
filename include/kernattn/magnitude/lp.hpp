#pragma once
/// \file
/// The generalised L^p magnitude of implicit kernel attention (docs/conventions.md).

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/log_sum_exp.hpp"
#include "kernattn/core/parameters.hpp"
#include "kernattn/core/row_groups.hpp"
#include "kernattn/magnitude/magnitude.hpp"

namespace kernattn::magnitude {

/// Marks an `Lp` whose p is given at run time.
inline constexpr int runtime_p = 0;

/// \f$\mu_p(k) = \exp(\gamma\,\lVert k\rVert_p^a)\f$, default \f$\gamma = s/2 = 1/(2\sqrt d)\f$,
/// \f$a = 2\f$ (the squared p-norm of the official IKA code). At p = 2 with the defaults it is the
/// magnitude that turns the RBF kernel into softmax attention.
///
/// `P` fixes p at compile time (`Lp<T, 1>`, `Lp<T, 2>`, or any positive integer);
/// `Lp<T>` takes any real p > 0 at run time. \f$\log\mu = \gamma\lVert k\rVert_p^a\f$ is computed
/// in double: from the sums of the entries' squares or sizes at p = 2 and p = 1, otherwise from the
/// key scaled by its largest entry m, \f$\log\lVert k\rVert_p = \log m +
/// \frac1p\log\sum_i(|k_i|/m)^p\f$, so no intermediate power overflows, whatever p and the size of
/// k. For a finite key it is finite: a value beyond \f$\pm\f$`max_log_magnitude` (a small p, a
/// large exponent or \f$\gamma\f$: \f$\lVert k\rVert_p\f$ grows like \f$d^{1/p}\f$) saturates
/// there, and keys that saturate weigh the same.
template <Real T, int P = runtime_p>
class Lp {
  static_assert(P >= 0, "Lp: a compile-time p must be a positive integer (0 = runtime p)");

 public:
  static constexpr bool is_unit = false;
  /// The largest \f$|\log\mu|\f$ returned, \f$2^{-4}\f$ of the largest double: room for the
  /// engines to add kernel terms and subtract maxima in double without overflow.
  static constexpr double max_log_magnitude = std::numeric_limits<double>::max() / 16.0;

  /// Runtime p (default 2), \f$\gamma\f$ (default \f$1/(2\sqrt d)\f$), exponent \f$a\f$ (default
  /// 2).
  explicit Lp(T p = T(2), std::optional<T> gamma = std::nullopt,
              T exponent = T(2)) requires(P == runtime_p)
      : p_(p), exponent_(exponent) {
    require_positive_finite(p, "Lp", "p");
    set_gamma(gamma);
    require_positive_finite(exponent_, "Lp", "exponent a");
  }

  /// Compile-time p = P, \f$\gamma\f$ (default \f$1/(2\sqrt d)\f$), exponent \f$a\f$ (default 2).
  explicit Lp(std::optional<T> gamma = std::nullopt, T exponent = T(2)) requires(P != runtime_p)
      : p_(T(P)), exponent_(exponent) {
    set_gamma(gamma);
    require_positive_finite(exponent_, "Lp", "exponent a");
  }

  [[nodiscard]] T p() const { return p_; }
  [[nodiscard]] T exponent() const { return exponent_; }
  /// \f$\gamma\f$ for head dimension d.
  [[nodiscard]] double gamma(Index d) const {
    return default_gamma_ ? 0.5 / std::sqrt(double(d)) : double(gamma_);
  }

  /// \f$\log\mu(k) = \gamma\,\lVert k\rVert_p^a\f$, clamped to \f$\pm\f$`max_log_magnitude`
  /// for a finite key. When a plain sum overflows although the result need not
  /// (\f$\lVert k\rVert_2^2\f$ beyond the largest double with a < 2, say), it is recomputed as
  /// \f$\mathrm{sign}(\gamma)\exp(\log|\gamma| + a\log\lVert k\rVert_p)\f$.
  ///
  /// At p = 2, \f$\lVert k\rVert_2^2\f$ sums its columns in order (`detail::row_squared_norm`,
  /// as `kernels::Rbf` does, so that their key terms cancel exactly); for p other than 1 and 2
  /// each key is scaled by its largest entry \f$m\f$ first: \f$\log\lVert k\rVert_p = \log m +
  /// \frac1p\log\sum_i (|k_i|/m)^p\f$, each power at most 1 (formed by multiplication for an
  /// integer p). Either is `add_log_magnitudes` for one key, bit for bit.
  template <class Row>
  [[nodiscard]] double log_magnitude(const Row& k) const {
    if (!is_p(1)) return group_log_magnitudes(k, 0, 1)(0);
    // Held in double first: Eigen vectorises the logarithms of a double vector, not of a cast.
    const Eigen::RowVectorXd key = k.template cast<double>();
    const double g = gamma(key.size());
    return clamped_log_magnitude(g, g * std::pow(key.template lpNorm<1>(), double(exponent_)),
                                 key.allFinite(), [&] { return log_norm(key); });
  }

  /// Adds \f$\log\mu(k_j)\f$ of every row j of `keys` to `log_terms(j)`, equal to
  /// `log_magnitude` row by row; for p other than 1 the keys are taken `detail::row_group` at a
  /// time, column by column, so the sums and powers are vectorised across keys whatever the
  /// storage.
  template <class Keys, class LogTerms>
  void add_log_magnitudes(const Keys& keys, LogTerms& log_terms) const {
    if (is_p(1)) {
      for (Index j = 0; j < keys.rows(); ++j) log_terms(j) += log_magnitude(keys.row(j));
      return;
    }
    detail::for_each_row_group(keys.rows(), [&](Index first, Index count) {
      const Lanes values = group_log_magnitudes(keys, first, count);
      for (Index r = 0; r < count; ++r) log_terms(first + r) += values(r);
    });
  }

  /// \f$\nabla\log\mu(k)\f$: \f$\partial_i = \gamma\,a\,\lVert k\rVert_p^{a-p}\,|k_i|^{p-1}
  /// \operatorname{sign}(k_i)\f$, in double, formed in the log domain like `log_magnitude` (at p =
  /// 2 directly, \f$2\gamma k\f$ when a = 2). Where no derivative exists it is 0: an entry \f$k_i =
  /// 0\f$ when \f$p \le 1\f$, the key 0 when \f$a \le p\f$; and 0 where `log_magnitude` saturates
  /// at \f$\pm\f$`max_log_magnitude`, which is constant there.
  ///
  /// For p > 1 (other than 2) it is formed from the scaled key of `log_magnitude`, \f$\partial_i =
  /// \gamma\,a\,\lVert k\rVert_p^{a-p} m^{p-1} (|k_i|/m)^{p-1}\operatorname{sign}(k_i)\f$, equal
  /// to `add_log_magnitude_gradients` for one key, bit for bit.
  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_magnitude_gradient(const Row& k) const {
    Eigen::RowVectorXd gradient = Eigen::RowVectorXd::Zero(k.size());
    add_group_gradients(k, 0, 1, gradient);
    return gradient;
  }

  /// Adds \f$\nabla\log\mu(k_j)\f$ of every row j of `keys` to row j of `gradients`, equal to
  /// `log_magnitude_gradient` row by row (taken `detail::row_group` keys at a time for p > 1 other
  /// than 2).
  template <class Keys, class Gradients>
  void add_log_magnitude_gradients(const Keys& keys, Gradients& gradients) const {
    detail::for_each_row_group(keys.rows(), [&](Index first, Index count) {
      add_group_gradients(keys, first, count, gradients);
    });
  }

  /// The trainable parameters (include/kernattn/core/parameters.hpp): p (a runtime p only),
  /// \f$\gamma\f$ and the exponent a.
  [[nodiscard]] static std::vector<std::string> parameter_names() {
    if constexpr (P == runtime_p)
      return {"p", "gamma", "exponent"};
    else
      return {"gamma", "exponent"};
  }
  [[nodiscard]] Eigen::VectorXd parameters(Index d) const {
    Eigen::VectorXd values(Index(parameter_names().size()));
    if constexpr (P == runtime_p)
      values << double(p_), gamma(d), double(exponent_);
    else
      values << gamma(d), double(exponent_);
    return values;
  }
  [[nodiscard]] Lp with_parameters(const Eigen::VectorXd& values) const {
    require_parameter_count(values, parameter_names(), "Lp");
    if constexpr (P == runtime_p)
      return Lp(T(values(0)), T(values(1)), T(values(2)));
    else
      return Lp(T(values(0)), T(values(1)));
  }

  /// \f$\partial\log\mu(k)/\partial\theta\f$ for the parameters in `parameter_names()` order, in
  /// double: with \f$n = \lVert k\rVert_p\f$, \f$\partial_\gamma = n^a\f$, \f$\partial_a =
  /// \gamma\,n^a\log n\f$ and \f$\partial_p = \gamma\,a\,n^a\,\partial_p\log n\f$,
  /// \f$\partial_p\log n = \big(\sum_i w_i\log|k_i| - \log n\big)/p\f$ with \f$w_i =
  /// |k_i|^p/\sum_l|k_l|^p\f$. All are 0 at the key 0 and where `log_magnitude` saturates.
  template <class Row>
  [[nodiscard]] Eigen::VectorXd log_magnitude_parameter_gradient(const Row& k) const {
    const Eigen::RowVectorXd key = k.template cast<double>();
    Eigen::VectorXd gradient = Eigen::VectorXd::Zero(Index(parameter_names().size()));
    const Index first = P == runtime_p ? 1 : 0;
    if (!key.allFinite() || (key.array() == 0.0).all() ||
        std::abs(log_magnitude(key)) >= max_log_magnitude)
      return gradient;
    const double g = gamma(key.size());
    const double a = double(exponent_);
    const double log_n = log_norm(key);
    const double power = std::exp(a * log_n);
    gradient(first) = power;
    gradient(first + 1) = g * power * log_n;
    if constexpr (P == runtime_p) {
      const double p = double(p_);
      const Eigen::ArrayXd logs = key.array().abs().log().transpose();
      double weighted = 0.0;
      for (Index i = 0; i < logs.size(); ++i)
        if (key(i) != 0.0) weighted += std::exp(p * (logs(i) - log_n)) * logs(i);
      gradient(0) = g * a * power * (weighted - log_n) / p;
    }
    return gradient;
  }

 private:
  using Lanes = detail::GroupLanes;

  /// Rows [first, first + count) of a call (at most `detail::row_group`; the other lanes hold the
  /// key 0): the largest entries \f$m\f$, \f$\log\lVert k\rVert_p = \log m + \frac1p\log\sum_i
  /// (|k_i|/m)^p\f$, \f$\log\mu\f$ as `log_magnitude` returns it, and which keys are finite.
  struct ScaledGroup {
    Lanes largest;
    Lanes scales;  ///< m, or 1 for the key 0: what the entries are divided by
    Lanes log_norms;
    Lanes log_magnitudes;
    Eigen::Array<bool, detail::row_group, 1> finite;
  };

  /// \f$\log\mu\f$ of rows [first, first + count) of `keys`: at p = 2 from
  /// `detail::group_squared_norms`, otherwise from the `scaled_group`.
  template <class Keys>
  [[nodiscard]] Lanes group_log_magnitudes(const Keys& keys, Index first, Index count) const {
    if (!is_p(2)) return scaled_group(detail::group_rows(keys, first, count), count).log_magnitudes;
    const Lanes squared = detail::group_squared_norms(keys, first, count);
    const Eigen::Array<bool, detail::row_group, 1> finite =
        detail::group_finite(keys, first, count);
    const double g = gamma(keys.cols());
    const double a = double(exponent_);
    Lanes values = Lanes::Zero();
    for (Index r = 0; r < count; ++r)
      values(r) =
          clamped_log_magnitude(g, g * (a == 2.0 ? squared(r) : std::pow(squared(r), a / 2.0)),
                                finite(r), [&] { return log_norm(row_of(keys, first + r)); });
    return values;
  }

  /// \f$x^e\f$ for x in [0, 1] and e > 0: by multiplication for an integer e up to 16, else
  /// \f$\exp(e\log x)\f$ (0 at x = 0).
  [[nodiscard]] static Lanes power(const Lanes& x, double e) {
    if (e == std::floor(e) && e <= 16.0) {
      Lanes result = x;
      for (int i = 1; i < int(e); ++i) result *= x;
      return result;
    }
    return (x > 0.0).select((e * x.log()).exp(), Lanes::Zero());
  }

  /// The `ScaledGroup` of a group's `count` keys, held in double in `rows`
  /// (`detail::group_rows`).
  [[nodiscard]] ScaledGroup scaled_group(const detail::GroupRows& rows, Index count) const {
    const Index d = rows.cols();
    const double p = double(p_);
    ScaledGroup group;
    group.largest.setZero();
    for (Index c = 0; c < d; ++c) group.largest = group.largest.max(rows.col(c).abs());
    group.finite = detail::finite_lanes(rows);
    group.scales = (group.largest > 0.0).select(group.largest, Lanes::Ones());
    Lanes sums = Lanes::Zero();
    for (Index c = 0; c < d; ++c) sums += power(rows.col(c).abs() / group.scales, p);
    group.log_norms = group.scales.log() + sums.log() / p;
    const double g = gamma(d);
    const Lanes sizes = (std::log(std::abs(g)) + double(exponent_) * group.log_norms).exp();
    for (Index r = 0; r < count; ++r) {
      if (!group.finite(r)) {
        // As the plain formula gives it (infinite or NaN); the engines reject such keys.
        const Eigen::RowVectorXd key = rows.row(r).matrix();
        group.log_magnitudes(r) = g * std::exp(double(exponent_) * log_norm(key));
      } else if (g == 0.0 || group.largest(r) == 0.0) {
        group.log_magnitudes(r) = 0.0;
      } else {
        group.log_magnitudes(r) =
            std::clamp(std::copysign(sizes(r), g), -max_log_magnitude, max_log_magnitude);
      }
    }
    return group;
  }

  /// Row `row` of `keys` in double.
  template <class Keys>
  [[nodiscard]] static Eigen::RowVectorXd row_of(const Keys& keys, Index row) {
    Eigen::RowVectorXd key(keys.cols());
    for (Index c = 0; c < keys.cols(); ++c) key(c) = double(keys(row, c));
    return key;
  }

  /// Adds the gradients of rows [first, first + count) of `keys` (at most `detail::row_group`) to
  /// those rows of `gradients`: from the scaled group for a finite key when p > 1 and its factor
  /// \f$\gamma a\lVert k\rVert_p^{a-p}m^{p-1}\f$ is within range, else `log_domain_gradient`.
  /// A key 0 or one whose \f$\log\mu\f$ saturates has none.
  template <class Keys, class Gradients>
  void add_group_gradients(const Keys& keys, Index first, Index count, Gradients& gradients) const {
    const double g = gamma(keys.cols());
    if (g == 0.0) return;
    const double p = double(p_);
    if (is_p(2) || is_p(1) || p < 1.0) {
      for (Index r = 0; r < count; ++r)
        gradients.row(first + r) += log_domain_gradient(row_of(keys, first + r));
      return;
    }
    const double a = double(exponent_);
    const detail::GroupRows rows = detail::group_rows(keys, first, count);
    const ScaledGroup group = scaled_group(rows, count);
    const Lanes log_factors =
        std::log(std::abs(g * a)) + (a - p) * group.log_norms + (p - 1.0) * group.scales.log();
    const Lanes factors = log_factors.exp();
    Eigen::Array<bool, detail::row_group, 1> scaled =
        Eigen::Array<bool, detail::row_group, 1>::Constant(false);
    for (Index r = 0; r < count; ++r) {
      if (group.finite(r) &&
          (group.largest(r) == 0.0 || std::abs(group.log_magnitudes(r)) >= max_log_magnitude))
        continue;  // no gradient
      scaled(r) = group.finite(r) && log_factors(r) < max_log_factor;
      if (!scaled(r)) gradients.row(first + r) += log_domain_gradient(rows.row(r).matrix());
    }
    if (!scaled.any()) return;
    // Whole columns of the group, sign(k_i) |factor| (|k_i| / m)^(p - 1) times sign(gamma); the
    // rows that are not scaled are then set to 0 (arithmetic on whole lanes, which Eigen
    // vectorises, where a select per entry would not be).
    detail::GroupRows signed_sizes(detail::row_group, keys.cols());
    const Lanes signed_factors = g < 0.0 ? Lanes(-factors) : factors;
    for (Index c = 0; c < keys.cols(); ++c)
      signed_sizes.col(c) =
          signed_factors * power(rows.col(c).abs() / group.scales, p - 1.0) * rows.col(c).sign();
    for (Index r = 0; r < detail::row_group; ++r)
      if (!scaled(r)) signed_sizes.row(r).setZero();
    gradients.middleRows(first, count) += signed_sizes.topRows(count).matrix();
  }

  /// Beyond this log-factor the gradient is formed entry by entry in the log domain.
  static constexpr double max_log_factor = 700.0;

  /// `log_magnitude_gradient` of one key in the log domain, entry by entry: \f$|\partial_i| =
  /// \exp(\log|\gamma a| + (a - p)\log\lVert k\rVert_p + (p - 1)\log|k_i|)\f$.
  template <class Row>
  [[nodiscard]] Eigen::RowVectorXd log_domain_gradient(const Row& k) const {
    const Eigen::RowVectorXd key = k.template cast<double>();
    const double g = gamma(key.size());
    const double a = double(exponent_);
    const Eigen::RowVectorXd zero = Eigen::RowVectorXd::Zero(key.size());
    if (g == 0.0) return zero;
    if (is_p(2) || is_p(1)) {
      if (key.allFinite() && std::abs(log_magnitude(key)) >= max_log_magnitude) return zero;
      if (is_p(2) && a == 2.0) return 2.0 * g * key;
    }
    // The logarithms of the entries, once: they give the norm, the saturation and the gradient.
    const double p = double(p_);
    const Eigen::Array<double, 1, Eigen::Dynamic> magnitudes = key.array().abs();
    const Eigen::Array<double, 1, Eigen::Dynamic> logs = magnitudes.log();
    const double log_norm_k = log_sum_exp((p * logs).eval()) / p;
    if (!is_p(2) && !is_p(1) && key.allFinite() &&
        std::abs(clamped_log_magnitude(g, g * std::exp(a * log_norm_k), true,
                                       [&] { return log_norm_k; })) >= max_log_magnitude)
      return zero;
    const Eigen::Array<double, 1, Eigen::Dynamic> sizes =
        (std::log(std::abs(g * a)) + (a - p) * log_norm_k + (p - 1.0) * logs).exp();
    const Eigen::Array<double, 1, Eigen::Dynamic> signed_sizes =
        ((key.array() < 0.0) != (g < 0.0)).select(-sizes, sizes);
    return (magnitudes == 0.0).select(0.0, signed_sizes).matrix();
  }

  /// Stores \f$\gamma\f$, or marks the default \f$1/(2\sqrt d)\f$ (a flag rather than a
  /// `std::optional` member, which GCC 14 wrongly reports as maybe uninitialized).
  void set_gamma(const std::optional<T>& gamma) {
    default_gamma_ = !gamma.has_value();
    gamma_ = gamma.value_or(T(0));
    require_finite(gamma_, "Lp", "gamma");
  }

  /// \f$\log\mu\f$ from its plain value `direct` \f$= \gamma\lVert k\rVert_p^a\f$ (g =
  /// \f$\gamma\f$): `direct` itself for a key with a non-finite entry (`finite` false); else, when
  /// `direct` overflows, \f$\mathrm{sign}(\gamma)\exp(\log|\gamma| + a\log\lVert k\rVert_p)\f$ with
  /// `key_log_norm()` giving \f$\log\lVert k\rVert_p\f$; clamped to
  /// \f$\pm\f$`max_log_magnitude`.
  template <class KeyLogNorm>
  [[nodiscard]] double clamped_log_magnitude(double g, double direct, bool finite,
                                             KeyLogNorm&& key_log_norm) const {
    if (!finite) return direct;
    if (g == 0.0) return 0.0;
    const double value =
        std::isfinite(direct)
            ? direct
            : std::copysign(std::exp(std::log(std::abs(g)) + double(exponent_) * key_log_norm()),
                            g);
    return std::clamp(value, -max_log_magnitude, max_log_magnitude);
  }

  /// \f$\log\lVert k\rVert_p = \mathrm{LSE}_i(p\log|k_i|)/p\f$: no power of an entry is formed.
  template <class Key>
  [[nodiscard]] double log_norm(const Eigen::MatrixBase<Key>& k) const {
    const double p = double(p_);
    return log_sum_exp((p * k.array().abs().log()).eval()) / p;
  }

  [[nodiscard]] bool is_p(int value) const {
    if constexpr (P != runtime_p) return P == value;
    return p_ == T(value);
  }

  T p_;
  T gamma_ = T(0);
  bool default_gamma_ = true;
  T exponent_;
};

/// \f$\mu(k) = \exp(\gamma\lVert k\rVert_1^a)\f$ with p fixed at compile time.
template <Real T>
using L1 = Lp<T, 1>;
/// \f$\mu(k) = \exp(\gamma\lVert k\rVert_2^a)\f$ with p fixed at compile time.
template <Real T>
using L2 = Lp<T, 2>;

}  // namespace kernattn::magnitude
