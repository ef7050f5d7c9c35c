// Pointwise functions: every kernel's operator()(q, k), the Lp magnitude's log_magnitude(k) and
// log_sum_exp, against formulas written out in double (tests/support/reference.hpp).
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace test_pointwise {

namespace {

template <class T>
using RowT = Eigen::Matrix<T, 1, Eigen::Dynamic>;

/// The kernel formula for head dimension d (the defaults depend on d).
using ModelForDimension = std::function<ref::KernelModel(Index d)>;

/// Compares kernel(q, k) with the formula on 30 random pairs for each d in {1, 3, 8, 16}. The
/// model's error bound e (on log kappa, or on kappa for direct kernels) is taken at the kernel's
/// precision plus the reference's own at u_double; log kappa off by e is kappa off by a factor
/// exp(e), and the final rounding of kappa adds u.
template <class T, class Kernel>
void check_pointwise(const Kernel& kernel, const ModelForDimension& model_for, std::uint32_t seed) {
  constexpr double u = ref::unit_roundoff<T>;
  for (const Index d : {1, 3, 8, 16}) {
    const ref::KernelModel model = model_for(d);
    const ref::Problem pairs = ref::random_problem<T>(30, 30, d, 1, seed + std::uint32_t(d));
    for (Index t = 0; t < 30; ++t) {
      const ref::Row q = pairs.Q.row(t), k = pairs.K.row(t);
      const double got = double(kernel(RowT<T>(q.cast<T>()), RowT<T>(k.cast<T>())));
      const double value = model.value(q, k);
      const double error = model.error(q, k, u) + model.error(q, k, ref::u_double);
      const double expected = model.direct ? value : std::exp(value);
      const double bound =
          model.direct ? error + u * std::abs(value) : expected * (std::expm1(error) + 2 * u);
      CAPTURE(d, t, got, expected, bound);
      CHECK(std::abs(got - expected) <= bound);
    }
  }
}

double default_scale(Index d) { return 1 / std::sqrt(double(d)); }
double default_lengthscale(Index d) { return std::pow(double(d), 0.25); }

}  // namespace

TEMPLATE_TEST_CASE("Each kernel's operator() follows its formula", "[kernels][pointwise]", float,
                   double) {
  using T = TestType;
  SECTION("Exponential: exp(s q.k), default s = 1/sqrt(d)") {
    check_pointwise<T>(
        kernels::Exponential<T>(), [](Index d) { return ref::exponential(default_scale(d)); }, 1);
    check_pointwise<T>(
        kernels::Exponential<T>(T(0.75)), [](Index) { return ref::exponential(0.75); }, 2);
  }
  SECTION("Rbf: exp(-|q-k|^2 / (2 sigma2)), default sigma2 = sqrt(d)") {
    check_pointwise<T>(
        kernels::Rbf<T>(), [](Index d) { return ref::rbf(std::sqrt(double(d))); }, 3);
    check_pointwise<T>(
        kernels::Rbf<T>(T(0.6)), [](Index) { return ref::rbf(double(T(0.6))); }, 4);
  }
  SECTION("Matern 1/2, 3/2, 5/2, default lengthscale d^(1/4)") {
    check_pointwise<T>(
        kernels::Matern12<T>(), [](Index d) { return ref::matern(1, default_lengthscale(d)); }, 5);
    check_pointwise<T>(
        kernels::Matern32<T>(), [](Index d) { return ref::matern(3, default_lengthscale(d)); }, 6);
    check_pointwise<T>(
        kernels::Matern52<T>(), [](Index d) { return ref::matern(5, default_lengthscale(d)); }, 7);
    check_pointwise<T>(
        kernels::Laplacian<T>(T(2.5)), [](Index) { return ref::matern(1, 2.5); }, 8);
    check_pointwise<T>(
        kernels::Matern32<T>(T(0.7)), [](Index) { return ref::matern(3, double(T(0.7))); }, 9);
    check_pointwise<T>(
        kernels::Matern52<T>(T(1.9)), [](Index) { return ref::matern(5, double(T(1.9))); }, 10);
  }
  SECTION("RationalQuadratic: (1 + r^2/(2 alpha l^2))^-alpha, defaults alpha = 1, l = d^(1/4)") {
    using RQ = kernels::RationalQuadratic<T>;
    check_pointwise<T>(
        RQ(), [](Index d) { return ref::rational_quadratic(1, default_lengthscale(d)); }, 11);
    check_pointwise<T>(
        RQ(T(2.5)), [](Index d) { return ref::rational_quadratic(2.5, default_lengthscale(d)); },
        12);
    check_pointwise<T>(
        RQ(T(0.3), T(1.4)),
        [](Index) { return ref::rational_quadratic(double(T(0.3)), double(T(1.4))); }, 13);
  }
  SECTION("Polynomial: (a q.k + c)^n, defaults n = 2, c = 1, a = 1/sqrt(d)") {
    using Poly = kernels::Polynomial<T>;
    check_pointwise<T>(
        Poly(), [](Index d) { return ref::polynomial(2, 1, default_scale(d)); }, 14);
    check_pointwise<T>(
        Poly(3), [](Index d) { return ref::polynomial(3, 1, default_scale(d)); }, 15);
    check_pointwise<T>(
        Poly(5, T(0), T(0.5)), [](Index) { return ref::polynomial(5, 0, 0.5); }, 16);
    check_pointwise<T>(
        Poly(2, T(3.5), T(0.25)), [](Index) { return ref::polynomial(2, 3.5, 0.25); }, 17);
    CHECK(Poly().degree() == 2);
    CHECK(Poly(3, T(0.5)).offset() == T(0.5));
  }
  SECTION("Linear: q.k") {
    check_pointwise<T>(
        kernels::Linear<T>(), [](Index) { return ref::linear(); }, 18);
  }
}

TEMPLATE_TEST_CASE("Stationary kernels are exactly 1 at q = k", "[kernels][pointwise]", float,
                   double) {
  using T = TestType;
  const RowT<T> q = ref::normal(1, 8, 19).cast<T>();
  CHECK(kernels::Rbf<T>()(q, q) == T(1));
  CHECK(kernels::Matern12<T>()(q, q) == T(1));
  CHECK(kernels::Matern32<T>()(q, q) == T(1));
  CHECK(kernels::Matern52<T>()(q, q) == T(1));
  CHECK(kernels::RationalQuadratic<T>(T(0.7))(q, q) == T(1));
}

namespace {

/// |log_magnitude - gamma |k|_p^a| within the model's bound (the library works in double
/// whatever T; the reference's own rounding obeys the same bound).
template <class T, class Magnitude>
void check_log_magnitude(const Magnitude& magnitude, const ref::MagnitudeModel& model,
                         const ref::Row& k) {
  const double got = magnitude.log_magnitude(RowT<T>(k.cast<T>()));
  const ref::Row exact_k = k.cast<T>().template cast<double>();
  const double expected = model.log_mu(exact_k);
  const double bound = 2 * model.error(exact_k, ref::u_double);
  CAPTURE(got, expected, bound);
  CHECK(std::isfinite(got));
  CHECK(std::abs(got - expected) <= bound);
}

}  // namespace

TEMPLATE_TEST_CASE("Lp log magnitude is gamma |k|_p^a", "[magnitude][pointwise]", float, double) {
  using T = TestType;
  for (const Index d : {1, 5, 16}) {
    const ref::MatrixXd keys = ref::normal(10, d, 20 + std::uint32_t(d));
    const double gamma = ref::default_gamma(d);
    for (Index t = 0; t < keys.rows(); ++t) {
      const ref::Row k = keys.row(t);
      CAPTURE(d, t);
      for (const double p : {1.0, 2.0, 3.0, 0.5, 7.25}) {
        CAPTURE(p);
        check_log_magnitude<T>(magnitude::Lp<T>(T(p)), ref::lp(p, gamma, 2), k);
        check_log_magnitude<T>(magnitude::Lp<T>(T(p), T(-0.375), T(1.25)), ref::lp(p, -0.375, 1.25),
                               k);
      }
      check_log_magnitude<T>(magnitude::L1<T>(), ref::lp(1, gamma, 2), k);
      check_log_magnitude<T>(magnitude::L1<T>(T(0.5), T(3)), ref::lp(1, 0.5, 3), k);
      check_log_magnitude<T>(magnitude::L2<T>(), ref::lp(2, gamma, 2), k);
      check_log_magnitude<T>(magnitude::L2<T>(T(0.5), T(0.75)), ref::lp(2, 0.5, 0.75), k);
      check_log_magnitude<T>(magnitude::Lp<T, 3>(), ref::lp(3, gamma, 2), k);
    }
  }
  SECTION("accessors") {
    const magnitude::Lp<T> lp(T(3), T(0.25), T(1.5));
    CHECK(lp.p() == T(3));
    CHECK(lp.exponent() == T(1.5));
    CHECK(lp.gamma(64) == 0.25);
    CHECK(magnitude::Lp<T>().gamma(64) == 1.0 / 16);
    CHECK(magnitude::L1<T>().p() == T(1));
  }
  SECTION("a zero key has magnitude 1 (log 0) for every p") {
    const ref::Row zero = ref::Row::Zero(4);
    for (const double p : {1.0, 2.0, 0.5, 3.0})
      CHECK(magnitude::Lp<T>(T(p)).log_magnitude(RowT<T>(zero.cast<T>())) == 0);
  }
}

TEST_CASE("Lp log magnitude of a huge key is finite and exact (log-domain norm)",
          "[magnitude][pointwise]") {
  SECTION("p = 40, entries 1e10: |k|^40 = 1e400 overflows double, gamma |k|_40^2 does not") {
    // All d entries equal c: |k|_p = c d^(1/p) exactly, so gamma |k|_p^a = gamma c^a d^(a/p).
    const Index d = 8;
    for (const double c : {1e10, double(float(1e10))}) {
      const ref::Row k = ref::Row::Constant(d, c);
      CHECK_FALSE(std::isfinite(std::pow(c, 40.0)));
      const double expected = ref::default_gamma(d) * c * c * std::pow(double(d), 2.0 / 40);
      const double got = c == 1e10
                             ? magnitude::Lp<double>(40).log_magnitude(k)
                             : magnitude::Lp<float>(40).log_magnitude(RowT<float>(k.cast<float>()));
      // The log-domain sum of d terms of size p log c ~ 921 errs by ~ (d + 4) u 921 in absolute
      // terms; scaled by a/p = 1/20 and exponentiated that is a relative error below 1e-12.
      CAPTURE(c, got, expected);
      CHECK(std::isfinite(got));
      CHECK(std::abs(got - expected) <= 1e-12 * expected);
    }
  }
  SECTION("p = 40, random entries of size ~1e10") {
    const ref::Row k = 1e10 * ref::normal(1, 6, 23);
    check_log_magnitude<double>(magnitude::Lp<double>(40), ref::lp(40, ref::default_gamma(6), 2),
                                k);
  }
}

TEST_CASE("Lp log magnitude never overflows in an intermediate power (p = 1 and 2 paths)",
          "[magnitude][pointwise]") {
  // lp.hpp: log mu = gamma |k|_p^a is computed "so no intermediate power
  // overflows, whatever p and the size of k". With a < p the result is finite even where |k|^p
  // (or a sum of |k_i|) is not representable.
  SECTION("p = 2, a = 1, entries 1e200: |k|_2 = 2e200 is finite, |k|_2^2 = 4e400 is not") {
    const ref::Row k = ref::Row::Constant(4, 1e200);
    const double got = magnitude::Lp<double>(2, 0.5, 1).log_magnitude(k);
    CAPTURE(got);
    CHECK(std::isfinite(got));
    CHECK(std::abs(got - 1e200) <= 1e-13 * 1e200);  // 0.5 * 2e200
  }
  SECTION("p = 1, a = 0.5, entries 1e308: |k|_1 = 4e308 overflows, sqrt(|k|_1) = 2e154 does not") {
    const ref::Row k = ref::Row::Constant(4, 1e308);
    const double got = magnitude::L1<double>(1.0, 0.5).log_magnitude(k);
    const double expected = 2 * std::sqrt(1e308);
    CAPTURE(got, expected);
    CHECK(std::isfinite(got));
    CHECK(std::abs(got - expected) <= 1e-13 * expected);
  }
}

TEMPLATE_TEST_CASE("Lp over a block of keys equals Lp key by key, bit for bit",
                   "[magnitude][pointwise]", float, double) {
  // add_log_magnitudes and add_log_magnitude_gradients take the keys eight at a time; a key's
  // value must not depend on its neighbours, its position in the block or the storage order.
  using T = TestType;
  constexpr Index d = 11;
  ref::MatrixXd keys = ref::normal(21, d, 31);
  keys.row(2).setZero();  // the key 0
  keys(4, 3) = 0;         // an entry 0
  keys.row(9) *= 1e-30;   // tiny, in the same group as ordinary keys
  keys.row(10) *= std::is_same_v<T, float> ? 1e30 : 1e250;  // huge
  keys.row(17) *= 1e3;
  const kernattn::Matrix<T> column_major = keys.cast<T>();
  const kernattn::RowMajorMatrix<T> row_major = column_major;
  for (const double p : {2.0, 3.0, 0.5, 1.5, 4.25, 17.0}) {
    for (const double exponent : {2.0, 0.75}) {
      CAPTURE(p, exponent);
      const magnitude::Lp<T> lp(T(p), T(0.3), T(exponent));
      Eigen::VectorXd from_column_major = Eigen::VectorXd::Zero(keys.rows());
      Eigen::VectorXd from_row_major = Eigen::VectorXd::Constant(keys.rows(), 1.0);
      lp.add_log_magnitudes(column_major, from_column_major);
      lp.add_log_magnitudes(row_major, from_row_major);
      // From row 1: the groups of eight fall elsewhere than in the value's pass.
      kernattn::RowMajorMatrix<double> gradients =
          kernattn::RowMajorMatrix<double>::Zero(keys.rows(), d);
      auto shifted = gradients.bottomRows(keys.rows() - 1);
      lp.add_log_magnitude_gradients(column_major.middleRows(1, keys.rows() - 1), shifted);
      for (Index j = 0; j < keys.rows(); ++j) {
        CAPTURE(j);
        const double alone = lp.log_magnitude(column_major.row(j));
        CHECK(std::isfinite(alone));
        CHECK(from_column_major(j) == alone);
        CHECK(from_row_major(j) == 1.0 + alone);
        if (j > 0) CHECK(gradients.row(j) == lp.log_magnitude_gradient(column_major.row(j)));
      }
      CHECK(from_column_major(2) == 0.0);
      CHECK((gradients.row(2).array() == 0.0).all());
    }
  }
  SECTION("Rbf's key term and Lp(2)'s log-magnitude cancel exactly, alone and over a block") {
    const kernels::Rbf<T> rbf;
    const magnitude::Lp<T> lp(T(2));
    Eigen::VectorXd sums = Eigen::VectorXd::Zero(keys.rows());
    rbf.add_log_key_terms(row_major, sums);
    lp.add_log_magnitudes(column_major, sums);
    for (Index j = 0; j < keys.rows(); ++j) {
      CAPTURE(j);
      // The double key of size 1e250 has no finite |k|^2: its magnitude saturates instead.
      if (std::is_same_v<T, double> && j == 10) continue;
      CHECK(rbf.log_key_term(column_major.row(j)) == -lp.log_magnitude(row_major.row(j)));
      CHECK(sums(j) == 0.0);
    }
  }
}

namespace {

/// log(sum exp(x)) the naive way, in double: fine for |x| < 700.
double naive_log_sum_exp(const Eigen::ArrayXd& x) { return std::log(x.exp().sum()); }

}  // namespace

TEST_CASE("Lp's log-magnitude gradient follows its formula and its central differences",
          "[magnitude][pointwise]") {
  // d/dk_i (gamma |k|_p^a) = gamma a |k|_p^(a - p) |k_i|^(p - 1) sign(k_i), for either sign of
  // gamma; one group of eight keys and two more, so the batch and the single-key forms both run.
  constexpr Index d = 7;
  const ref::MatrixXd keys = ref::normal(10, d, 47);
  for (const double p : {3.0, 1.5, 4.25, 7.25}) {
    for (const double gamma : {0.3, -0.375}) {
      for (const double exponent : {2.0, 0.75}) {
        CAPTURE(p, gamma, exponent);
        const magnitude::Lp<double> lp(p, gamma, exponent);
        Eigen::MatrixXd gradients = Eigen::MatrixXd::Zero(keys.rows(), d);
        lp.add_log_magnitude_gradients(keys, gradients);
        for (Index j = 0; j < keys.rows(); ++j) {
          const ref::Row k = keys.row(j);
          const double norm = std::pow(k.array().abs().pow(p).sum(), 1.0 / p);
          for (Index i = 0; i < d; ++i) {
            CAPTURE(j, i);
            const double expected = gamma * exponent * std::pow(norm, exponent - p) *
                                    std::pow(std::abs(k(i)), p - 1.0) * (k(i) < 0 ? -1.0 : 1.0);
            const double h = 1e-5;
            ref::Row plus = k;
            ref::Row minus = k;
            plus(i) += h;
            minus(i) -= h;
            const double central = (lp.log_magnitude(plus) - lp.log_magnitude(minus)) / (2 * h);
            CHECK(std::abs(gradients(j, i) - expected) <= 1e-13 * (1.0 + std::abs(expected)));
            CHECK(std::abs(central - expected) <= 1e-7 * (1.0 + std::abs(expected)));
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("log_sum_exp", "[log_sum_exp]", float, double) {
  using T = TestType;
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  constexpr T inf = std::numeric_limits<T>::infinity();
  constexpr double u = ref::unit_roundoff<T>;
  SECTION("matches the naive formula") {
    // m + log(sum exp(x - m)): u |m| for the final addition, (n + 3) u for the sum of n terms in
    // [0, 1] (at least 1) and the exp and log roundings.
    for (const Index n : {1, 2, 7, 50}) {
      const Array x = (5 * ref::normal(n, 1, 30 + std::uint32_t(n))).cast<T>().array();
      const Eigen::ArrayXd exact = x.template cast<double>();
      const double expected = naive_log_sum_exp(exact);
      const double bound = (u + ref::u_double) * (exact.abs().maxCoeff() + double(n) + 3);
      CAPTURE(n, expected, bound);
      CHECK(std::abs(double(kernattn::log_sum_exp(x)) - expected) <= bound);
    }
  }
  SECTION("accepts matrices and expressions") {
    const ref::Matrix<T> m = ref::normal(3, 4, 31).cast<T>();
    const double expected = naive_log_sum_exp(m.template cast<double>().reshaped().array());
    const double bound =
        (u + ref::u_double) * (m.template cast<double>().cwiseAbs().maxCoeff() + 15);
    CHECK(std::abs(double(kernattn::log_sum_exp(m)) - expected) <= bound);
    CHECK(std::abs(double(kernattn::log_sum_exp(m.array() + T(1))) - (expected + 1)) <=
          bound + 2 * u);
  }
  SECTION("huge values stay finite: entries around 1e4 (exp overflows float and double)") {
    const Array x = (Array(3) << T(1e4), T(1e4 - 1), T(1e4 - 2)).finished();
    const double expected = 1e4 + std::log(1 + std::exp(-1.0) + std::exp(-2.0));
    const T got = kernattn::log_sum_exp(x);
    CHECK(std::isfinite(got));
    CHECK(std::abs(double(got) - expected) <= (u + ref::u_double) * (1e4 + 6));
    const T negative = kernattn::log_sum_exp((-x).eval());
    CHECK(std::isfinite(negative));
    CHECK(std::abs(double(negative) - (-1e4 + 2 + std::log(1 + std::exp(-1.0) + std::exp(-2.0)))) <=
          (u + ref::u_double) * (1e4 + 6));
  }
  SECTION("edge cases: all -inf and empty give -inf, NaN gives NaN, +inf gives +inf") {
    CHECK(kernattn::log_sum_exp(Array::Constant(4, -inf)) == -inf);
    CHECK(kernattn::log_sum_exp(Array(0)) == -inf);
    CHECK(std::isnan(kernattn::log_sum_exp(
        (Array(3) << T(1), std::numeric_limits<T>::quiet_NaN(), T(2)).finished())));
    CHECK(std::isnan(
        kernattn::log_sum_exp((Array(2) << inf, std::numeric_limits<T>::quiet_NaN()).finished())));
    CHECK(kernattn::log_sum_exp((Array(3) << T(1), inf, T(2)).finished()) == inf);
    const T mixed = kernattn::log_sum_exp((Array(3) << -inf, T(0), T(0)).finished());
    CHECK(std::abs(double(mixed) - std::log(2.0)) <= 4 * u);
  }
}

}  // namespace test_pointwise
