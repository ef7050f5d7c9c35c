// Layouts at the edges of what a call may be: empty inputs of every kind (no query, no key, no
// value column, all of them) in either storage order and over caller memory without storage,
// through Attention, LinearAttention and MultiHead; batch layouts with more sequences than memory
// could hold for them; and layouts that no input can have, rejected before anything is allocated.
// Built with Clang's -fsanitize=undefined, the empty cases also check that no block of an empty
// matrix is formed at a non-zero offset from its null data pointer (GCC's sanitizer does not
// report that offset).
#include <limits>
#include <string>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "reference.hpp"

namespace test_hostile_layouts {

namespace features = kernattn::features;

namespace {

using kernattn::BatchLayout;

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// 2^40 sequences: per-sequence storage of even one byte would be a terabyte.
constexpr Index huge = Index(1) << 40;

/// A softmax head, its causal and padded forms, and linear heads (Positive, causal and not) of
/// head dimension 4.
template <class T>
struct Engines {
  kernattn::Attention<kernels::Exponential<T>> softmax;
  kernattn::Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal> causal{
      kernels::Rbf<T>(T(2)), magnitude::Lp<T>(T(3)), mask::Causal{}};
  kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding> padded{
      kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths({0})};
  features::Positive<T> map = features::Positive<T>::draw(8, 4, {7, 0});
  kernattn::LinearAttention<features::Positive<T>> linear{map};
  kernattn::LinearAttention<features::Positive<T>, magnitude::Lp<T>, mask::Causal> linear_causal{
      map, magnitude::Lp<T>(T(2)), mask::Causal{}};
};

/// Calls f(name, attention, heads) for every engine and for a MultiHead of two heads of each
/// library engine; `heads` is the number of heads the layout must give (1: any).
template <class T, class F>
void for_each_engine(const Engines<T>& e, F&& f) {
  f("Attention", e.softmax, 2);
  f("Attention, causal", e.causal, 2);
  f("Attention, key padding of length 0", e.padded, 2);
  f("LinearAttention", e.linear, 2);
  f("LinearAttention, causal", e.linear_causal, 2);
  using Softmax = kernattn::Attention<kernels::Exponential<T>>;
  using Linear = kernattn::LinearAttention<features::Positive<T>>;
  f("MultiHead of Attention", kernattn::MultiHead<Softmax>(std::vector<Softmax>(2)), 2);
  f("MultiHead of LinearAttention", kernattn::MultiHead<Linear>(std::vector<Linear>(2, e.linear)),
    2);
  f("MultiHead of a causal Attention and a LinearAttention",
    kernattn::MultiHead<kernattn::Heads<decltype(e.causal), Linear>>({e.causal, e.linear}), 2);
}

/// Runs `attention` on Q, K, V (any Eigen types) in `layout`, both through operator() and
/// compute() into a row-major and a column-major output, and checks the output's shape and that
/// every entry is zero.
template <class T, class Attention, class DQ, class DK, class DV>
void check_zeros(const Attention& attention, const Eigen::MatrixBase<DQ>& Q,
                 const Eigen::MatrixBase<DK>& K, const Eigen::MatrixBase<DV>& V,
                 BatchLayout layout) {
  const ref::Matrix<T> out = attention(Q, K, V, layout);
  REQUIRE(out.rows() == Q.rows());
  REQUIRE(out.cols() == V.cols());
  CHECK((out.array() == T(0)).all());
  RowMajor<T> row_major = RowMajor<T>::Constant(Q.rows(), V.cols(), T(9));
  attention.compute(Q, K, V, row_major, layout);
  CHECK((row_major.array() == T(0)).all());
  std::vector<T> buffer(std::size_t(Q.rows() * V.cols()), T(9));
  attention.compute(Q, K, V, Eigen::Map<ref::Matrix<T>>(buffer.data(), Q.rows(), V.cols()), layout);
  for (const T x : buffer) CHECK(x == T(0));
}

/// An empty rows x cols matrix of storage order `Order` over no memory at all (a null pointer).
template <class T, int Order>
Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>> no_memory(Index rows,
                                                                                    Index cols) {
  REQUIRE(rows * cols == 0);
  return {nullptr, rows, cols};
}

}  // namespace

TEMPLATE_TEST_CASE("Empty inputs in every layout give an empty or zero output", "[hostile][empty]",
                   KERNATTN_TEST_SCALARS) {
  // Two heads of d = 4, d_v = 3 (8 and 6 columns), 3 sequences where rows exist.
  using T = TestType;
  const Engines<T> engines;
  const ref::Matrix<T> Q = ref::normal(3 * 5, 8, 901).cast<T>();
  const ref::Matrix<T> K = ref::normal(3 * 4, 8, 902).cast<T>();
  const ref::Matrix<T> V = ref::normal(3 * 4, 6, 903).cast<T>();
  for_each_engine(engines, [&](const char* name, const auto& attention, Index heads) {
    INFO(name);
    const auto both_orders = [&](const auto& q, const auto& k, const auto& v, BatchLayout layout) {
      {
        INFO("column-major");
        check_zeros<T>(attention, q, k, v, layout);
      }
      {
        INFO("row-major");
        check_zeros<T>(attention, RowMajor<T>(q), RowMajor<T>(k), RowMajor<T>(v), layout);
      }
    };
    for (const Index sequences : {Index(1), Index(3)}) {
      CAPTURE(sequences);
      const BatchLayout layout{sequences, heads};
      {
        INFO("no queries");
        both_orders(ref::Matrix<T>(0, 8), K, V, layout);
      }
      {
        INFO("no keys");
        both_orders(Q, ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 6), layout);
      }
      {
        INFO("no value columns");
        both_orders(Q, K, ref::Matrix<T>(3 * 4, 0), layout);
      }
      {
        INFO("nothing at all");
        both_orders(ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 6), layout);
      }
    }
    {
      INFO("Maps over no memory, row-major and column-major");
      check_zeros<T>(attention, no_memory<T, Eigen::RowMajor>(0, 8),
                     no_memory<T, Eigen::RowMajor>(0, 8), no_memory<T, Eigen::RowMajor>(0, 6),
                     {1, heads});
      check_zeros<T>(attention, Q.topRows(5), no_memory<T, Eigen::RowMajor>(0, 8),
                     no_memory<T, Eigen::ColMajor>(0, 6), {1, heads});
      check_zeros<T>(attention, Q.topRows(5), K.topRows(4), no_memory<T, Eigen::RowMajor>(4, 0),
                     {1, heads});
    }
  });
}

TEMPLATE_TEST_CASE("Empty inputs take no storage per sequence, however many sequences",
                   "[hostile][empty]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  const Engines<T> engines;
  const ref::Matrix<T> Q = ref::normal(5, 8, 911).cast<T>();
  for_each_engine(engines, [&](const char* name, const auto& attention, Index heads) {
    INFO(name);
    check_zeros<T>(attention, ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 6),
                   {huge, heads});
    check_zeros<T>(attention, no_memory<T, Eigen::RowMajor>(0, 8),
                   no_memory<T, Eigen::RowMajor>(0, 8), no_memory<T, Eigen::RowMajor>(0, 6),
                   {huge, heads});
    // The largest count that times two heads still fits.
    check_zeros<T>(attention, ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 6),
                   {std::numeric_limits<Index>::max() / 2, heads});
  });
  // A mask is still checked against the first sequence.
  const kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding> too_long(
      kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths({3}));
  REQUIRE_INVALID_ARGUMENT(too_long(Q, ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 6)),
                           "KeyPadding: valid length 3 exceeds the 0 keys of sequence 0");
  REQUIRE_INVALID_ARGUMENT(
      too_long(ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 8), ref::Matrix<T>(0, 6), {huge, 1}),
      "KeyPadding: valid length 3 exceeds the 0 keys of sequence 0");
  const kernattn::LinearAttention<features::Positive<T>> linear(engines.map);
  REQUIRE_INVALID_ARGUMENT(
      linear(ref::Matrix<T>(0, 6), ref::Matrix<T>(0, 6), ref::Matrix<T>(0, 6), {huge, 1}),
      "the head dimension is 6");
}

TEST_CASE("Layouts that no input can have are rejected before anything is allocated",
          "[hostile][layout]") {
  using T = float;
  const Engines<T> engines;
  const ref::Matrix<T> Q = ref::normal(6, 8, 921).cast<T>();
  const ref::Matrix<T> V = ref::normal(6, 6, 922).cast<T>();
  const ref::Matrix<T> empty(0, 8);
  const ref::Matrix<T> no_values(0, 6);
  constexpr Index largest = std::numeric_limits<Index>::max();
  for_each_engine(engines, [&](const char* name, const auto& attention, Index heads) {
    INFO(name);
    REQUIRE_INVALID_ARGUMENT(attention(Q, Q, V, {0, heads}),
                             "BatchLayout: sequences and heads must be >= 1, got 0");
    REQUIRE_INVALID_ARGUMENT(attention(empty, empty, no_values, {-huge, heads}),
                             "BatchLayout: sequences and heads must be >= 1, got -1099511627776");
    // More sequences than rows.
    REQUIRE_INVALID_ARGUMENT(
        attention(Q, Q, V, {12, heads}),
        "BatchLayout: 12 sequences but Q is 6x8 and K is 6x8: each sequence needs at least one "
        "row of Q and of K unless Q or K has no rows");
    REQUIRE_INVALID_ARGUMENT(attention(empty, Q, V, {huge, heads}),
                             "BatchLayout: 1099511627776 sequences but Q is 0x8 and K is 6x8");
    REQUIRE_INVALID_ARGUMENT(attention(Q, empty, no_values, {7, heads}),
                             "BatchLayout: 7 sequences but Q is 6x8 and K is 0x8");
    // B x H overflows.
    REQUIRE_INVALID_ARGUMENT(attention(empty, empty, no_values, {largest, heads}),
                             "BatchLayout: 9223372036854775807 sequences x 2 heads overflow the "
                             "index type");
  });
  REQUIRE_INVALID_ARGUMENT(engines.softmax(empty, empty, no_values, {1, 0}),
                           "BatchLayout: sequences and heads must be >= 1, got 1 and 0");
  // Heads up to the column count are possible on empty inputs: 2^40 heads of one column each,
  // times 2^23 sequences, overflow.
  const Eigen::Map<const ref::Matrix<T>> wide(nullptr, 0, huge);
  REQUIRE_INVALID_ARGUMENT(engines.softmax(wide, wide, wide, {Index(1) << 23, huge}),
                           "sequences x 1099511627776 heads overflow the index type");
  // Without overflow the same is an empty call.
  CHECK(engines.softmax(wide, wide, wide, {Index(1) << 20, huge}).size() == 0);
  // More heads than columns leaves no column per head.
  REQUIRE_INVALID_ARGUMENT(engines.softmax(empty, empty, no_values, {1, 16}),
                           "must have a multiple of 16 columns for 16 heads");
}

}  // namespace test_hostile_layouts
