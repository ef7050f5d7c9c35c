// Decoding (attention/linear_decoder.hpp): token by token, appending key t and asking query t of
// a LinearDecoder gives row t of causal LinearAttention over the whole sequence (float rounding
// bound), for signed and positive feature maps with and without a magnitude; a block of queries
// sees every key appended; non-finite keys poison it as in the engine; wrong shapes are rejected
// and leave the state unchanged.
#include <cmath>
#include <limits>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_decoding {

namespace {

using kernattn::Matrix;

constexpr Index n = 40, d = 6, dv = 3;

/// Decodes the sequence token by token and compares each step with the causal engine's row.
template <class T, class Map, class Magnitude>
void check_decoding(const Map& map, const Magnitude& magnitude, std::uint32_t seed) {
  const Matrix<T> Q = ref::normal(n, d, seed, 0.2).cast<T>();
  const Matrix<T> K = ref::normal(n, d, seed + 1, 0.2).cast<T>();
  const Matrix<T> V = ref::normal(n, dv, seed + 2).cast<T>();
  const Matrix<T> expected =
      kernattn::LinearAttention<Map, Magnitude, kernattn::mask::Causal>(map, magnitude)(Q, K, V);
  kernattn::LinearDecoder<Map, Magnitude> decoder(map, dv, magnitude);
  CHECK(decoder.attend(Q.topRows(2)).isZero());
  const double bound = (std::is_same_v<T, float> ? 1e-5 : 1e-12) * V.cwiseAbs().maxCoeff();
  for (Index t = 0; t < n; ++t) {
    decoder.append(K.row(t), V.row(t));
    CAPTURE(t);
    CHECK((decoder.attend(Q.row(t)) - expected.row(t)).cwiseAbs().maxCoeff() <= bound);
  }
  CHECK(decoder.length() == n);
  // A block of queries after the whole sequence sees every key: the non-causal engine.
  const Matrix<T> all = kernattn::LinearAttention<Map, Magnitude>(map, magnitude)(Q, K, V);
  CHECK((decoder.attend(Q) - all).cwiseAbs().maxCoeff() <= bound);
}

}  // namespace

TEMPLATE_TEST_CASE("LinearDecoder decodes causal linear attention token by token", "[decoding]",
                   float, double) {
  using T = TestType;
  const kernattn::random::RandomStream stream{41, 3};
  SECTION("positive features (FAVOR+), no magnitude and L^3") {
    using Positive = kernattn::features::Positive<T>;
    const Positive map = Positive::draw(32, d, stream);
    check_decoding<T>(map, kernattn::magnitude::None{}, 371);
    check_decoding<T>(map, kernattn::magnitude::Lp<T>(T(3)), 372);
  }
  SECTION("Fourier features of the RBF kernel (signed: the guard)") {
    using Fourier = kernattn::features::Fourier<T>;
    check_decoding<T>(Fourier::draw(kernattn::spectral::Gaussian<T>(T(1.5)), 32, d, stream),
                      kernattn::magnitude::None{}, 373);
  }
}

TEST_CASE("LinearDecoder: poisoned by a non-finite key, and wrong shapes", "[decoding][errors]") {
  using Positive = kernattn::features::Positive<double>;
  kernattn::LinearDecoder<Positive> decoder(
      Positive::draw(16, d, kernattn::random::RandomStream{42, 1}), dv);
  const Matrix<double> K = ref::normal(3, d, 381), V = ref::normal(3, dv, 382);
  decoder.append(K, V);
  const Matrix<double> before = decoder.attend(K);
  REQUIRE_INVALID_ARGUMENT(decoder.append(Matrix<double>::Zero(1, d + 1), V.topRows(1)),
                           "keys are 1x7 and values 1x3");
  REQUIRE_INVALID_ARGUMENT(decoder.append(K.topRows(2), V), "keys are 2x6 and values 3x3");
  REQUIRE_INVALID_ARGUMENT(decoder.attend(Matrix<double>::Zero(1, 2)), "queries are 1x2");
  CHECK(decoder.length() == 3);
  CHECK(decoder.attend(K) == before);
  Matrix<double> poisoned = K.topRows(1);
  poisoned(0, 2) = std::numeric_limits<double>::quiet_NaN();
  decoder.append(poisoned, V.topRows(1));
  CHECK(decoder.attend(K).array().isNaN().all());
}

}  // namespace test_decoding
