// Positional attention reads its features and positions in place (docs/math.md, section 4): a
// forward call is Attention<Product, FeaturePart> on the inputs [F_h | T] of every head, bit for
// bit, without building them; any storage order, Map or block is read as it is; an output or
// statistics matrix that overlaps an input goes through a temporary.

#include "catch.hpp"
#include "kernattn/attention/attention.hpp"
#include "kernattn/attention/positional.hpp"
#include "positional_reference.hpp"
#include "reference.hpp"

namespace test_positional_inputs {

namespace {

using namespace positional_ref;
using kernattn::BatchLayout;
using kernattn::ExecutionOptions;
using kernattn::RowMajorMatrix;

constexpr Index B = 2, H = 3;

/// Features, positions and values of B sequences and H heads, exactly representable in T.
template <class T>
Positional batch(std::uint32_t seed) {
  Positional p{in<T>(ref::normal(B * Nq, H * D, seed)), MatrixXd(B * Nq, Dt),
               in<T>(ref::normal(B * Nk, H * D, seed + 1)), MatrixXd(B * Nk, Dt),
               in<T>(ref::normal(B * Nk, H * Dv, seed + 2))};
  for (Index b = 0; b < B; ++b) {
    p.Tq.middleRows(b * Nq, Nq) = sinusoidal<T>(Nq, Nk - Nq + 5 * b);
    p.Tk.middleRows(b * Nk, Nk) = sinusoidal<T>(Nk, 5 * b);
  }
  return p;
}

/// The inputs [F_h | T] of every head, built literally.
template <class T>
ref::Matrix<T> joined_inputs(const MatrixXd& F, const MatrixXd& positions) {
  const Index d = F.cols() / H, dt = positions.cols();
  ref::Matrix<T> inputs(F.rows(), H * (d + dt));
  for (Index h = 0; h < H; ++h) {
    inputs.middleCols(h * (d + dt), d) = F.middleCols(h * d, d).cast<T>();
    inputs.middleCols(h * (d + dt) + d, dt) = positions.cast<T>();
  }
  return inputs;
}

/// Checks a `PositionalAttention` against `Attention<Product, FeaturePart>` on the joined inputs:
/// the output and the row statistics bit for bit (the same computation), and for row-major, Map
/// and block inputs within twice the reference's bound (a GEMM may sum in another order on
/// another storage order).
template <class T, class Attention>
void check_reads_in_place(const Attention& attention, const Positional& p,
                          const ref::Reference& expected) {
  const BatchLayout layout{B, H};
  const typename Attention::Engine engine(
      typename Attention::Kernel(attention.feature_kernel(), attention.position_kernel(), Dt),
      magnitude::FeaturePart<typename Attention::Magnitude>(attention.magnitude(), Dt),
      attention.mask(), attention.options());
  const ref::Matrix<T> Fq = p.Fq.cast<T>(), Tq = p.Tq.cast<T>(), Fk = p.Fk.cast<T>(),
                       Tk = p.Tk.cast<T>(), V = p.V.cast<T>();
  const ref::Matrix<T> Q = joined_inputs<T>(p.Fq, p.Tq), K = joined_inputs<T>(p.Fk, p.Tk);

  const ref::Matrix<T> out = attention(Fq, Tq, Fk, Tk, V, layout);
  check::require_matches<T>(out, expected);
  CHECK(check::identical(out, engine(Q, K, V, layout)));

  ref::Matrix<T> with_statistics(out.rows(), out.cols()), engine_out(out.rows(), out.cols());
  ref::Matrix<T> statistics, engine_statistics;
  attention.compute(Fq, Tq, Fk, Tk, V, with_statistics, statistics, layout);
  engine.compute(Q, K, V, engine_out, engine_statistics, layout);
  CHECK(check::identical(with_statistics, out));
  CHECK(check::identical(statistics, engine_statistics));

  const RowMajorMatrix<T> Fq_rows = Fq, Tq_rows = Tq, Fk_rows = Fk, Tk_rows = Tk;
  check::require_close(attention(Fq_rows, Tq_rows, Fk_rows, Tk_rows, V, layout), out,
                       2 * expected.bound);
  const ref::Matrix<T> wide_Fk = ref::normal(B * Nk, H * D + 3, 7).cast<T>();
  ref::Matrix<T> Fk_inside = wide_Fk;
  Fk_inside.middleCols(2, H * D) = Fk;
  const Eigen::Map<const ref::Matrix<T>> Tk_map(Tk.data(), Tk.rows(), Tk.cols());
  check::require_close(
      attention(Fq, Tq.leftCols(Dt), Fk_inside.middleCols(2, H * D), Tk_map, V, layout), out,
      2 * expected.bound);
}

/// The reference of `check_reads_in_place`: each sequence and head alone, causal.
ref::Reference causal_reference(const Positional& p, const ref::KernelModel& feature,
                                const ref::KernelModel& position, const ref::MagnitudeModel& mu,
                                double u) {
  ref::Reference expected{MatrixXd(B * Nq, H * Dv), MatrixXd(B * Nq, H * Dv)};
  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < H; ++h) {
      const Positional one{p.Fq.block(b * Nq, h * D, Nq, D), p.Tq.middleRows(b * Nq, Nq),
                           p.Fk.block(b * Nk, h * D, Nk, D), p.Tk.middleRows(b * Nk, Nk),
                           p.V.block(b * Nk, h * Dv, Nk, Dv)};
      const ref::Reference r = expected_output(one, feature, position, mu, ref::causal(Nq, Nk), u);
      expected.out.block(b * Nq, h * Dv, Nq, Dv) = r.out;
      expected.bound.block(b * Nq, h * Dv, Nq, Dv) = r.bound;
    }
  return expected;
}

}  // namespace

TEMPLATE_TEST_CASE("Positional attention reads features and positions in place", "[positional]",
                   float, double) {
  using T = TestType;
  constexpr double u = ref::unit_roundoff<T>;
  const Positional p = batch<T>(2101);
  const ExecutionOptions options{.query_tile = 7, .key_tile = 9};
  const magnitude::Lp<T> mu(T(3));
  const ref::MagnitudeModel mu_model = ref::lp(3, ref::default_gamma(D), 2);

  SECTION("two dot-product factors (the block path)") {
    const kernattn::PositionalAttention<kernels::Exponential<T>, kernels::Rbf<T>, magnitude::Lp<T>,
                                        mask::Causal>
        attention({}, {}, mu, {}, options);
    check_reads_in_place<T>(attention, p,
                            causal_reference(p, ref::exponential(default_scale(D)),
                                             ref::rbf(default_variance(Dt)), mu_model, u));
  }
  SECTION("a distance factor (the tile path)") {
    const kernattn::PositionalAttention<kernels::Laplacian<T>, kernels::Rbf<T>, magnitude::Lp<T>,
                                        mask::Causal>
        attention({}, {}, mu, {}, options);
    check_reads_in_place<T>(attention, p,
                            causal_reference(p, ref::matern(1, std::pow(double(D), 0.25)),
                                             ref::rbf(default_variance(Dt)), mu_model, u));
  }
}

TEMPLATE_TEST_CASE("A positional output or statistics matrix may overlap any input",
                   "[positional][aliasing]", float, double) {
  // Nq = Nk tokens and one position column per head's statistics: the output has the values'
  // shape, and the statistics the positions'.
  using T = TestType;
  constexpr Index N = 23, d = 4, dv = 3;
  const ref::Matrix<T> F = ref::normal(N, d, 2201).cast<T>();
  const ref::Matrix<T> positions = ref::normal(N, 1, 2202, 0.0, 0.5).cast<T>();
  const ref::Matrix<T> V = ref::normal(N, dv, 2203).cast<T>();
  const kernattn::PositionalAttention<kernels::Exponential<T>, kernels::Rbf<T>, magnitude::None,
                                      mask::Causal>
      attention;
  ref::Matrix<T> expected(N, dv), expected_statistics;
  attention.compute(F, positions, F, positions, V, expected, expected_statistics);

  SECTION("the output overlaps the values") {
    ref::Matrix<T> values = V;
    attention.compute(F, positions, F, positions, values, values);
    CHECK(check::identical(values, expected));
  }
  SECTION("the statistics are the keys' positions") {
    ref::Matrix<T> shared = positions, out(N, dv);
    attention.compute(F, positions, F, shared, V, out, shared);
    CHECK(check::identical(out, expected));
    CHECK(check::identical(shared, expected_statistics));
  }
}

}  // namespace test_positional_inputs
