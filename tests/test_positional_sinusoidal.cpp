// The sinusoidal position encoding (kernattn/attention/sinusoidal.hpp; docs/math.md, section 4):
// Vaswani et al.'s formula, and an Rbf kernel on the encoded positions that depends only on the
// token offset, so that shifting every position leaves positional attention unchanged (against
// the product kernel's reference of tests/support/positional_reference.hpp).
#include <cmath>

#include "catch.hpp"
#include "kernattn/attention/sinusoidal.hpp"
#include "positional_reference.hpp"
#include "reference.hpp"

namespace test_positional_sinusoidal {

namespace {

using namespace positional_ref;
using ref::MatrixXd;

}  // namespace

TEMPLATE_TEST_CASE("Sinusoidal positions follow Vaswani et al.'s formula",
                   "[positional][sinusoidal]", float, double) {
  using T = TestType;
  constexpr double u = ref::unit_roundoff<T>;
  for (const Index dimension : {Index(1), Index(5), Index(8)})
    for (const double base : {10000.0, 100.0})
      for (const Index first : {Index(0), Index(13)}) {
        CAPTURE(dimension, base, first);
        const ref::Matrix<T> pe = kernattn::sinusoidal_positions<T>(40, dimension, base, first);
        REQUIRE(pe.rows() == 40);
        REQUIRE(pe.cols() == dimension);
        Index failures = 0;
        for (Index r = 0; r < 40; ++r)
          for (Index i = 0; 2 * i < dimension; ++i) {
            // PE(p, 2i) = sin(p / base^(2i/dt)), PE(p, 2i+1) = cos(p / base^(2i/dt)).
            const double angle = double(first + r) / std::pow(base, 2.0 * double(i) / dimension);
            // Rounding to T, plus the library's own angle (a power and a product in double,
            // against a power and a quotient here) carried by sin and cos: a few u_double |angle|.
            const auto near = [&](double got, double exact) {
              return std::abs(got - exact) <= u * std::abs(exact) + 8 * ref::u_double * (angle + 1);
            };
            if (!near(pe(r, 2 * i), std::sin(angle))) ++failures;
            if (2 * i + 1 < dimension && !near(pe(r, 2 * i + 1), std::cos(angle))) ++failures;
          }
        CHECK(failures == 0);
      }
  CHECK(kernattn::sinusoidal_positions<T>(0, 4).size() == 0);
}

TEMPLATE_TEST_CASE("An Rbf kernel on sinusoidal positions depends only on the token offset",
                   "[positional][sinusoidal]", float, double) {
  // With an even dimension, |PE(p) - PE(p')|^2 = sum_i 2 - 2 cos((p - p') w_i), w_i =
  // base^(-2i/dt): a function of |p - p'| alone.
  using T = TestType;
  constexpr double u = ref::unit_roundoff<T>;
  constexpr Index dt = 8, tokens = 60;
  const ref::Matrix<T> pe = kernattn::sinusoidal_positions<T>(tokens, dt);
  const kernels::Rbf<T> rbf;  // variance sqrt(dt)
  const double variance = default_variance(dt);
  for (const Index offset : {Index(0), Index(1), Index(2), Index(5), Index(17), Index(59)}) {
    double r2 = 0;
    for (Index i = 0; i < dt / 2; ++i)
      r2 += 2 - 2 * std::cos(double(offset) * std::pow(10000.0, -2.0 * double(i) / dt));
    const double exact = std::exp(-r2 / (2 * variance));
    // Every entry is within e = u + 8 u_double (|angle| + 1) of sin or cos (see above); each of the
    // dt differences (|.| <= 2) is then within 2e + 2u, their squares' sum (<= 4 dt) within
    // dt (4 (2e + 2u) + 4 dt u), and kappa within kappa (that / (2 variance) + 4u).
    const double e = u + 8 * ref::u_double * (double(tokens) + 1);
    const double r2_error = double(dt) * (4 * (2 * e + 2 * u) + 4 * double(dt) * u);
    const double bound = exact * (r2_error / (2 * variance) + 4 * u);
    CAPTURE(offset, exact, bound);
    Index failures = 0;
    for (Index p = 0; p + offset < tokens; ++p) {
      if (std::abs(double(rbf(pe.row(p), pe.row(p + offset))) - exact) > bound) ++failures;
      if (std::abs(double(rbf(pe.row(p + offset), pe.row(p))) - exact) > bound) ++failures;
    }
    CHECK(failures == 0);
  }

  SECTION("so shifting every position leaves positional attention unchanged") {
    Positional shifted = problem<T>(1501);
    const Positional original = shifted;
    shifted.Tq = sinusoidal<T>(Nq, Nk - Nq + 40);
    shifted.Tk = sinusoidal<T>(Nk, 40);
    const ref::KernelModel feature = ref::exponential(default_scale(D));
    const ref::KernelModel position = ref::rbf(default_variance(Dt));
    const ref::Visibility visible = ref::causal(Nq, Nk);
    const ref::Reference a =
        expected_output(original, feature, position, ref::unit_magnitude(), visible, u);
    const ref::Reference b =
        expected_output(shifted, feature, position, ref::unit_magnitude(), visible, u);
    const ref::Matrix<T> out_a = run<T>(original, kernels::Exponential<T>(), kernels::Rbf<T>(),
                                        magnitude::None{}, mask::Causal{});
    const ref::Matrix<T> out_b = run<T>(shifted, kernels::Exponential<T>(), kernels::Rbf<T>(),
                                        magnitude::None{}, mask::Causal{});
    check::require_matches<T>(out_a, a);
    check::require_matches<T>(out_b, b);
    // The exact outputs for the two sets of positions (each rounded to T) differ only by that
    // rounding, which moves a log-weight by less than the evaluation error the bounds cover; the
    // library's outputs then differ by at most the sum of the three.
    const MatrixXd exact_difference = (a.out - b.out).cwiseAbs();
    CHECK((exact_difference.array() <= (a.bound + b.bound).array()).all());
    check::require_close(out_a, out_b, a.bound + b.bound + exact_difference);
  }
}

}  // namespace test_positional_sinusoidal
