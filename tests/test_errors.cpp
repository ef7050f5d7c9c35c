// Bad input: every inconsistent shape, out-of-range or non-finite parameter and bad mask throws
// kernattn::InvalidArgument (also catchable as std::invalid_argument) with a message that names
// the argument (and, for shapes, the shapes).
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_errors {

namespace {

using Matrix = ref::Matrix<float>;

constexpr float not_a_number = std::numeric_limits<float>::quiet_NaN();
constexpr float infinity = std::numeric_limits<float>::infinity();

Matrix random(Index rows, Index cols) { return ref::normal(rows, cols, 601).cast<float>(); }

}  // namespace

TEST_CASE("Shape mismatches name the argument and both shapes", "[errors][shapes]") {
  const kernattn::Attention<kernels::Exponential<float>> attention;
  const Matrix Q = random(5, 64), K = random(7, 64), V = random(7, 3);
  SECTION("K columns != Q columns") {
    REQUIRE_INVALID_ARGUMENT(attention(Q, random(7, 63), V), "K has 63 columns but Q has 64");
    REQUIRE_INVALID_ARGUMENT(attention(Q, random(7, 63), V), "Q is 5x64, K is 7x63");
  }
  SECTION("V rows != K rows") {
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, random(6, 3)), "V has 6 rows but K has 7");
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, random(6, 3)), "K is 7x64, V is 6x3");
  }
  SECTION("out of the wrong shape") {
    Matrix wrong_rows(4, 3), wrong_cols(5, 4);
    REQUIRE_INVALID_ARGUMENT(attention.compute(Q, K, V, wrong_rows),
                             "out is 4x3 but the attention output is 5x3");
    REQUIRE_INVALID_ARGUMENT(attention.compute(Q, K, V, wrong_cols),
                             "out is 5x4 but the attention output is 5x3");
  }
  SECTION("d = 0") {
    REQUIRE_INVALID_ARGUMENT(attention(Matrix(5, 0), Matrix(7, 0), V), "head dimension d");
  }
  SECTION("a batch layout that does not divide the rows") {
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, V, {2, 1}),
                             "must have a multiple of 2 rows for 2 sequences");
    REQUIRE_INVALID_ARGUMENT(attention(random(6, 64), K, V, {2, 1}), "K (7x64)");
  }
  SECTION("a batch layout that does not divide the columns") {
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, V, {1, 3}),
                             "must have a multiple of 3 columns for 3 heads");
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, random(7, 3), {1, 2}), "V (7x3)");
  }
  SECTION("zero sequences or heads") {
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, V, {0, 1}),
                             "BatchLayout: sequences and heads must be >= 1, got 0 and 1");
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, V, {1, 0}),
                             "BatchLayout: sequences and heads must be >= 1, got 1 and 0");
    REQUIRE_INVALID_ARGUMENT(attention(Q, K, V, {-1, 1}), "BatchLayout");
  }
}

TEST_CASE("Lp magnitude parameters are validated", "[errors][magnitude]") {
  using Lp = magnitude::Lp<float>;
  for (const float p : {0.0f, -1.0f, not_a_number, infinity}) {
    CAPTURE(p);
    REQUIRE_INVALID_ARGUMENT(Lp(p), "Lp: p must be a finite number > 0");
  }
  for (const float exponent : {0.0f, -2.0f, not_a_number, infinity}) {
    CAPTURE(exponent);
    REQUIRE_INVALID_ARGUMENT(Lp(2.0f, 0.5f, exponent),
                             "Lp: exponent a must be a finite number > 0");
    REQUIRE_INVALID_ARGUMENT(magnitude::L2<float>(0.5f, exponent), "Lp: exponent a");
    REQUIRE_INVALID_ARGUMENT(magnitude::L1<float>(std::nullopt, exponent), "Lp: exponent a");
  }
  for (const float gamma : {not_a_number, infinity, -infinity}) {
    CAPTURE(gamma);
    REQUIRE_INVALID_ARGUMENT(Lp(2.0f, gamma), "Lp: gamma must be finite");
    REQUIRE_INVALID_ARGUMENT(magnitude::L1<float>(gamma), "Lp: gamma must be finite");
  }
}

TEST_CASE("Kernel parameters must be finite and in range", "[errors][kernels]") {
  for (const float bad : {0.0f, -1.0f, not_a_number, infinity, -infinity}) {
    CAPTURE(bad);
    REQUIRE_INVALID_ARGUMENT(kernels::Rbf<float>(bad), "Rbf: variance must be a finite number > 0");
    REQUIRE_INVALID_ARGUMENT(kernels::Exponential<float>(bad),
                             "Exponential: scale must be a finite number > 0");
    REQUIRE_INVALID_ARGUMENT(kernels::Matern12<float>(bad),
                             "Matern: lengthscale must be a finite number > 0");
    REQUIRE_INVALID_ARGUMENT(kernels::Matern32<float>(bad), "Matern: lengthscale");
    REQUIRE_INVALID_ARGUMENT(kernels::Matern52<float>(bad), "Matern: lengthscale");
    REQUIRE_INVALID_ARGUMENT(kernels::RationalQuadratic<float>(bad),
                             "RationalQuadratic: alpha must be a finite");
    REQUIRE_INVALID_ARGUMENT(kernels::RationalQuadratic<float>(1.0f, bad),
                             "RationalQuadratic: lengthscale must be a finite number > 0");
    REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<float>(2, 1.0f, bad),
                             "Polynomial: scale must be a finite number > 0");
  }
  SECTION("Polynomial degree and offset") {
    REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<float>(0),
                             "Polynomial: degree must be an integer >= 1, got 0");
    REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<float>(-2),
                             "Polynomial: degree must be an integer >= 1, got -2");
    for (const float offset : {-0.5f, not_a_number, infinity}) {
      CAPTURE(offset);
      REQUIRE_INVALID_ARGUMENT(kernels::Polynomial<float>(2, offset),
                               "Polynomial: offset must be a finite number >= 0");
    }
  }
}

TEST_CASE("Masks reject bad extents, counts, lengths and shapes", "[errors][masks]") {
  const Matrix Q = random(5, 4), K = random(7, 4), V = random(7, 2);
  const auto attend = [&](auto m, kernattn::BatchLayout layout = {}) {
    const kernattn::Attention<kernels::Exponential<float>, magnitude::None, decltype(m)> attention(
        {}, {}, m);
    const Index B = layout.sequences;
    return attention(Q.replicate(B, 1), K.replicate(B, 1), V.replicate(B, 1), layout);
  };
  SECTION("Window with negative extents") {
    REQUIRE_INVALID_ARGUMENT(mask::Window(-1, 2),
                             "Window: before and after must be >= 0, got before = -1");
    REQUIRE_INVALID_ARGUMENT(mask::Window(2, -3), "after = -3");
  }
  SECTION("KeyPadding flags: empty, or neither Nk nor B * Nk of them") {
    REQUIRE_INVALID_ARGUMENT(mask::KeyPadding::from_flags(ref::Flags(0)),
                             "KeyPadding: the valid flags are empty");
    const auto five = mask::KeyPadding::from_flags(ref::Flags::Constant(5, true));
    REQUIRE_INVALID_ARGUMENT(attend(five),
                             "KeyPadding: 5 valid flags given for 1 sequence(s) of 7 keys");
    const auto fourteen = mask::KeyPadding::from_flags(ref::Flags::Constant(14, true));
    REQUIRE_INVALID_ARGUMENT(attend(fourteen, {3, 1}),
                             "14 valid flags given for 3 sequence(s) of 7 keys");
  }
  SECTION("KeyPadding lengths: empty, negative, longer than Nk, or neither 1 nor B of them") {
    REQUIRE_INVALID_ARGUMENT(mask::KeyPadding::from_lengths({}),
                             "KeyPadding: the valid lengths are empty");
    REQUIRE_INVALID_ARGUMENT(mask::KeyPadding::from_lengths({3, -1}),
                             "KeyPadding: lengths[1] must be >= 0, got -1");
    REQUIRE_INVALID_ARGUMENT(attend(mask::KeyPadding::from_lengths({8})),
                             "KeyPadding: valid length 8 exceeds the 7 keys");
    REQUIRE_INVALID_ARGUMENT(attend(mask::KeyPadding::from_lengths({7, 9}), {2, 1}),
                             "valid length 9 exceeds the 7 keys of sequence 1");
    REQUIRE_INVALID_ARGUMENT(attend(mask::KeyPadding::from_lengths({1, 2, 3}), {2, 1}),
                             "KeyPadding: 3 valid lengths given for a batch of 2 sequences");
  }
  SECTION("Boolean mask of the wrong shape") {
    REQUIRE_INVALID_ARGUMENT(attend(mask::Boolean(ref::Visibility::Constant(4, 7, true))),
                             "Boolean mask is 4x7 but the attention is 5x7");
    REQUIRE_INVALID_ARGUMENT(attend(mask::Boolean(ref::Visibility::Constant(5, 6, true))),
                             "Boolean mask is 5x6");
    REQUIRE_INVALID_ARGUMENT(attend(mask::Boolean(ref::Visibility::Constant(15, 7, true)), {2, 1}),
                             "Boolean mask is 15x7");
  }
  SECTION("inside an intersection") {
    REQUIRE_INVALID_ARGUMENT(attend(mask::Causal{} && mask::KeyPadding::from_lengths({8})),
                             "valid length 8 exceeds");
  }
}

TEST_CASE("Execution options are validated", "[errors][options]") {
  using Attention = kernattn::Attention<kernels::Exponential<float>>;
  const auto with = [](kernattn::ExecutionOptions options) {
    return Attention({}, {}, {}, options);
  };
  REQUIRE_INVALID_ARGUMENT(with({-1, 64, 256}), "ExecutionOptions: threads must be >= 0");
  REQUIRE_INVALID_ARGUMENT(with({0, 64, 0}), "ExecutionOptions: key_tile must be >= 1, got 0");
  REQUIRE_INVALID_ARGUMENT(with({0, -5, 256}),
                           "ExecutionOptions: query_tile must be >= 0 (0 = automatic), got -5");
  SECTION("set_threads rejects a negative count and keeps the old one") {
    Attention attention({}, {}, {}, {2, 64, 256});
    REQUIRE_INVALID_ARGUMENT(attention.set_threads(-3), "threads must be >= 0");
    CHECK(attention.options().threads == 2);
    CHECK(attention.set_threads(1).options().threads == 1);
  }
}

}  // namespace test_errors
