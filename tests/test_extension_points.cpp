// The smallest user-defined kernel, magnitude and mask, exactly as the concept headers document
// them, plug into Attention and give the kernel smoother of their formulas.
#include <cmath>

#include "catch.hpp"
#include "kernattn/kernattn.hpp"

namespace test_extension_points {

namespace {

// kernels/kernel.hpp: a dot-product kernel with a temperature.
struct Tempered {
  using Scalar = float;
  using Form = kernattn::kernels::DotProductForm;
  static constexpr bool has_key_term = false;
  float temperature = 2.0f;
  float dot_scale(kernattn::Index) const { return 1.0f / temperature; }
  template <class Row>
  double log_key_term(const Row&) const {
    return 0.0;
  }
  template <class Row>
  float operator()(const Row& q, const Row& k) const {
    return std::exp(q.dot(k) / temperature);
  }
};

// magnitude/magnitude.hpp: mu(k) = exp(k_0).
struct FirstFeature {
  static constexpr bool is_unit = false;
  template <class Row>
  double log_magnitude(const Row& k) const {
    return double(k(0));
  }
};

// mask/mask.hpp: every query sees only even keys.
struct EvenKeys {
  struct Bound {
    kernattn::mask::Coverage coverage(kernattn::mask::Range, kernattn::mask::Range) const {
      return kernattn::mask::Coverage::partial;
    }
    bool visible(kernattn::Index, kernattn::Index j) const { return j % 2 == 0; }
  };
  Bound bind(const kernattn::mask::Shape&) const { return {}; }
};

static_assert(kernattn::kernels::Kernel<Tempered>);
static_assert(kernattn::magnitude::Magnitude<FirstFeature>);
static_assert(kernattn::mask::Mask<EvenKeys>);
static_assert(!kernattn::kernels::Kernel<int>);
static_assert(!kernattn::mask::Mask<FirstFeature>);

}  // namespace

TEST_CASE("User-defined kernel, magnitude and mask from the concept documentation", "[concepts]") {
  const kernattn::Index nq = 9, nk = 13, d = 5, dv = 3;
  const Eigen::MatrixXd Qd = Eigen::MatrixXd::Random(nq, d);
  const Eigen::MatrixXd Kd = Eigen::MatrixXd::Random(nk, d);
  const Eigen::MatrixXd Vd = Eigen::MatrixXd::Random(nk, dv);

  // Naive double reference: w_ij = exp(q.k / 2 + k_0) for even j, normalised.
  Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(nq, dv);
  for (kernattn::Index i = 0; i < nq; ++i) {
    double total = 0.0;
    for (kernattn::Index j = 0; j < nk; j += 2) {
      const double w = std::exp(Qd.row(i).dot(Kd.row(j)) / 2.0 + Kd(j, 0));
      expected.row(i) += w * Vd.row(j);
      total += w;
    }
    expected.row(i) /= total;
  }

  kernattn::Attention<Tempered, FirstFeature, EvenKeys> attention;
  const Eigen::MatrixXf got = attention(Qd.cast<float>(), Kd.cast<float>(), Vd.cast<float>());
  // float inputs and arithmetic: a few units of float roundoff on O(1) values.
  CHECK((got.cast<double>() - expected).cwiseAbs().maxCoeff() < 1e-5);
  CHECK(attention.kernel()(Qd.row(0).cast<float>().eval(), Kd.row(0).cast<float>().eval()) ==
        Approx(std::exp(Qd.row(0).dot(Kd.row(0)) / 2.0)).epsilon(1e-6));
}

}  // namespace test_extension_points
