// No composition lets an output depend on keys its mask hides. Causal: every query, key and value
// after position p is replaced by huge numbers or by NaN, and rows 0..p must stay the same bit
// for bit, for every composition that takes a causal mask (exact attention with kernels of every
// form, LinearAttention, MultiHead, ScaledHead, PositionalAttention, the IKA reference mode), at
// sequence lengths across the tiles and with small tiles and chunks. KeyPadding, Window and
// Boolean: keys and values a row does not see are replaced, and the row must stay the same bit for
// bit. BatchNormalized shares its statistics across the queries, so it must refuse every mask
// under which the queries see different keys, and ignore padded keys.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "invalid_argument.hpp"
#include "kernattn/kernattn.hpp"
#include "reference.hpp"

namespace test_causality {

namespace {

namespace features = kernattn::features;
namespace spectral = kernattn::spectral;
using kernattn::Attention;
using kernattn::LinearAttention;
using kernattn::random::RandomStream;

template <class T>
using Mat = ref::Matrix<T>;

/// Feature columns per token: one head of d = 8, or two heads of 4. The inputs carry one more
/// column, a position (the token's index), which only PositionalAttention reads.
constexpr Index d = 8;
constexpr Index dv = 4;

enum class Poison { huge, nan };

/// Rows [first, m.rows()) of m replaced: by +-1e15 (float) or +-1e150 (double) alternately, or by
/// NaN. The huge entries are as large as the exact engine takes for the rows that see them (its
/// log-weight terms, e.g. a squared norm, must stay below the largest T / 8: docs/numerics.md),
/// and some 1e15 times the data.
template <class T>
Mat<T> poisoned(Mat<T> m, Index first, Poison kind) {
  const T huge = std::is_same_v<T, float> ? T(1e15) : T(1e150);
  for (Index i = first; i < m.rows(); ++i)
    for (Index c = 0; c < m.cols(); ++c)
      m(i, c) = kind == Poison::nan ? std::numeric_limits<T>::quiet_NaN()
                                    : ((i + c) % 2 == 0 ? huge : -huge);
  return m;
}

/// The same for the listed rows.
template <class T>
Mat<T> poisoned_rows(Mat<T> m, const std::vector<Index>& rows, Poison kind) {
  for (const Index i : rows) m.row(i) = poisoned<T>(Mat<T>(m.row(i)), 0, kind);
  return m;
}

template <class T>
struct Inputs {
  Mat<T> Q, K, V;
};

/// Queries and keys (d feature columns, then the token's index), values (dv columns).
template <class T>
Inputs<T> random_inputs(Index n, std::uint32_t seed) {
  Inputs<T> in{ref::normal(n, d + 1, seed, 0.0, 0.5).cast<T>(),
               ref::normal(n, d + 1, seed + 1, 0.0, 0.5).cast<T>(),
               ref::normal(n, dv, seed + 2).cast<T>()};
  for (Index i = 0; i < n; ++i) in.Q(i, d) = in.K(i, d) = T(i);
  return in;
}

template <class T>
using Run = std::function<Mat<T>(const Mat<T>&, const Mat<T>&, const Mat<T>&)>;

template <class T>
struct Composition {
  std::string name;
  Run<T> run;
  /// A direct kernel (Polynomial) holds its weights without rescaling: rows that see huge
  /// entries overflow, and the engine throws rather than return them as NaN.
  bool direct = false;
};

/// Runs `composition` on poisoned inputs: the output, or nothing when the call throws, which only
/// a direct kernel may do, and only for huge entries (see `Composition::direct`).
template <class T>
std::optional<Mat<T>> run_poisoned(const Composition<T>& composition, const Mat<T>& Q,
                                   const Mat<T>& K, const Mat<T>& V, Poison kind) {
  try {
    return composition.run(Q, K, V);
  } catch (const kernattn::InvalidArgument& error) {
    INFO(error.what());
    CHECK((composition.direct && kind == Poison::huge));
    return std::nullopt;
  }
}

/// The tiles, chunks and pooling factors of one pass over the compositions.
struct Setting {
  kernattn::ExecutionOptions exact;
  kernattn::LinearOptions linear;
};

/// The default tiles and chunks; small ones that divide nothing; the smallest.
std::vector<Setting> settings() {
  kernattn::LinearOptions small;
  small.query_tile = 3;
  small.key_tile = 3;
  small.causal_chunk = 4;
  kernattn::LinearOptions smallest;
  smallest.query_tile = 1;
  smallest.key_tile = 1;
  smallest.causal_chunk = 1;
  return {{{}, {}}, {{0, 16, 24}, small}, {{0, 5, 7}, smallest}};
}

/// Every composition that takes the mask `m`, with the tiles and chunks of `setting`. Heads that
/// read a single head take the d feature columns; MultiHead splits them into two heads of 4;
/// PositionalAttention reads the last column as the position.
template <class T, class M>
std::vector<Composition<T>> compositions(const M& m, const Setting& setting) {
  using kernattn::BatchLayout;
  std::vector<Composition<T>> all;
  const kernattn::ExecutionOptions& options = setting.exact;
  const auto add = [&](std::string name, auto attention, BatchLayout layout = {}) {
    all.push_back(
        {std::move(name), [attention, layout](const Mat<T>& Q, const Mat<T>& K, const Mat<T>& V) {
           return Mat<T>(attention(Q.leftCols(d), K.leftCols(d), V, layout));
         }});
  };
  using None = magnitude::None;
  using Positive = features::Positive<T>;
  using Fourier = features::Fourier<T>;
  const Positive positive = Positive::draw(16, d, {31, 0});
  const Fourier fourier = Fourier::draw(spectral::Gaussian<T>(T(2)), 16, d, RandomStream{32, 0});

  // Exact attention, one kernel of each form.
  add("Exponential", Attention<kernels::Exponential<T>, None, M>({}, {}, m, options));
  add("Rbf x Lp(3)",
      Attention<kernels::Rbf<T>, magnitude::Lp<T>, M>({}, magnitude::Lp<T>(T(3)), m, options));
  add("Laplacian", Attention<kernels::Laplacian<T>, None, M>({}, {}, m, options));
  add("Polynomial(2) x L2", Attention<kernels::Polynomial<T>, magnitude::L2<T>, M>(
                                kernels::Polynomial<T>(2), magnitude::L2<T>(), m, options));
  all.back().direct = true;
  add("RandomFeature<Positive>", Attention<kernels::RandomFeature<Positive>, None, M>(
                                     kernels::RandomFeature<Positive>(positive), {}, m, options));
  add("RandomFeature<Fourier> x Lp(2)",
      Attention<kernels::RandomFeature<Fourier>, magnitude::Lp<T>, M>(
          kernels::RandomFeature<Fourier>(fourier), magnitude::Lp<T>(T(2)), m, options));
  const Mat<T> w1 = ref::normal(d, 16, 33, 0.0, 0.2).cast<T>();
  const Mat<T> w2 = ref::normal(d, 16, 34, 0.0, 0.2).cast<T>();
  add("IKA reference", kernattn::make_ika_reference<T, M>(w1, w2, T(2), m, options));
  {
    const kernattn::PositionalAttention<kernels::Exponential<T>, kernels::Rbf<T>, None, M>
        positional({}, {}, {}, m, options);
    all.push_back({"PositionalAttention, Exponential x Rbf",
                   [positional](const Mat<T>& Q, const Mat<T>& K, const Mat<T>& V) {
                     return positional(Q.leftCols(d), Q.rightCols(1), K.leftCols(d), K.rightCols(1),
                                       V);
                   }});
  }

  // Linear-time attention.
  constexpr bool linear = kernattn::mask::LinearMask<M>;
  if constexpr (linear) {
    add("LinearAttention<Positive>",
        LinearAttention<Positive, None, M>(positive, {}, m, setting.linear));
    add("LinearAttention<Fourier> x Lp(2)",
        LinearAttention<Fourier, magnitude::Lp<T>, M>(fourier, magnitude::Lp<T>(T(2)), m,
                                                      setting.linear));
  }

  // Two heads of 4 columns.
  using Softmax = Attention<kernels::Exponential<T>, None, M>;
  using Distance = Attention<kernels::Rbf<T>, magnitude::Lp<T>, M>;
  add("MultiHead, Exponential and Rbf",
      kernattn::MultiHead<kernattn::Heads<Softmax, Distance>>(
          {Softmax({}, {}, m, options), Distance({}, magnitude::Lp<T>(T(3)), m, options)}),
      BatchLayout{1, 2});
  if constexpr (linear) {
    using Fast = LinearAttention<Positive, None, M>;
    add("MultiHead, Exponential and LinearAttention<Positive>",
        kernattn::MultiHead<kernattn::Heads<Softmax, Fast>>(
            {Softmax({}, {}, m, options),
             Fast(Positive::draw(16, d / 2, {35, 0}), {}, m, setting.linear)}),
        BatchLayout{1, 2});
  }

  // Pooled heads, including a factor far beyond the sequence.
  for (const Index r : {Index(2), Index(3), Index(8), Index(1) << 40}) {
    const std::string factor = " (r = " + std::to_string(r) + ")";
    using Pooled = Attention<kernels::Exponential<T>, magnitude::Lp<T>, M>;
    add("ScaledHead<Exponential x Lp(1)>" + factor,
        kernattn::ScaledHead<Pooled>(Pooled({}, magnitude::Lp<T>(T(1)), m, options), r));
    if constexpr (linear) {
      using Fast = LinearAttention<Positive, None, M>;
      add("ScaledHead<LinearAttention<Positive>>" + factor,
          kernattn::ScaledHead<Fast>(Fast(positive, {}, m, setting.linear), r));
    }
    add("scaled_heads, Exponential" + factor,
        kernattn::scaled_heads(Softmax({}, {}, m, options), {r, 1}), BatchLayout{1, 2});
  }

  // Attention-BN shares its statistics across the queries: only under padding, where every
  // query sees the same keys.
  if constexpr (std::is_same_v<M, mask::KeyPadding>) {
    add("BatchNormalized<Exponential>",
        kernattn::BatchNormalized<Softmax>(Softmax({}, {}, m, options), 0.5));
    add("BatchNormalized<LinearAttention<Positive>>",
        kernattn::BatchNormalized<LinearAttention<Positive, None, M>>(
            LinearAttention<Positive, None, M>(positive, {}, m, setting.linear)));
    add("ScaledHead<BatchNormalized<Exponential>> (r = 3)",
        kernattn::ScaledHead<kernattn::BatchNormalized<Softmax>>(
            kernattn::BatchNormalized<Softmax>(Softmax({}, {}, m, options)), 3));
    add("BatchNormalized<ScaledHead<Exponential>> (r = 3)",
        kernattn::BatchNormalized<kernattn::ScaledHead<Softmax>>(
            kernattn::ScaledHead<Softmax>(Softmax({}, {}, m, options), 3)));
  }
  return all;
}

/// Positions to cut a sequence of n tokens after: the first, around the tiles of 16, 24, 256 and
/// the chunks of 64, the middle and the last but one.
std::vector<Index> cuts(Index n) {
  std::vector<Index> out;
  for (const Index p : {Index(0), Index(1), Index(6), Index(15), Index(16), Index(23), Index(63),
                        Index(64), Index(255), Index(256), n / 2, n - 2})
    if (p >= 0 && p < n - 1 && std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  return out;
}

/// The tokens of sequence length n whose rows may see a hidden key; a mask's visibility for the
/// "hidden keys" checks, as the full N x N matrix.
template <class T, class M>
void check_hidden_keys_do_not_matter(const M& m, const ref::Visibility& visible,
                                     const std::vector<std::vector<Index>>& probes,
                                     std::uint32_t seed) {
  const Index n = visible.rows();
  const Inputs<T> in = random_inputs<T>(n, seed);
  for (const Setting& setting : settings()) {
    CAPTURE(setting.exact.query_tile, setting.exact.key_tile, setting.linear.key_tile,
            setting.linear.causal_chunk);
    for (const Composition<T>& composition : compositions<T>(m, setting)) {
      CAPTURE(composition.name);
      const Mat<T> clean = composition.run(in.Q, in.K, in.V);
      REQUIRE(clean.allFinite());
      for (const std::vector<Index>& keys : probes) {
        CAPTURE(keys.front(), keys.size());
        for (const Poison kind : {Poison::huge, Poison::nan}) {
          CAPTURE(kind == Poison::nan);
          const std::optional<Mat<T>> out =
              run_poisoned(composition, in.Q, poisoned_rows<T>(in.K, keys, kind),
                           poisoned_rows<T>(in.V, keys, kind), kind);
          if (!out) continue;
          Index changed = 0;
          Index checked = 0;
          for (Index i = 0; i < n; ++i) {
            bool sees = false;
            for (const Index j : keys) sees = sees || visible(i, j);
            if (sees) continue;
            ++checked;
            changed += check::identical(out->row(i), clean.row(i)) ? 0 : 1;
          }
          CAPTURE(checked);
          CHECK(changed == 0);
        }
      }
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE(
    "Causal compositions: poisoning every query, key and value after position p leaves rows "
    "0..p unchanged, bit for bit",
    "[causality]", float, double) {
  using T = TestType;
  for (const Index n : {Index(1), Index(2), Index(37), Index(300)}) {
    CAPTURE(n);
    const Inputs<T> in = random_inputs<T>(n, 700 + std::uint32_t(n));
    for (const Setting& setting : settings()) {
      if (n > 40 && setting.linear.causal_chunk == 1)
        continue;  // the smallest tiles: short sequences
      CAPTURE(setting.exact.query_tile, setting.exact.key_tile, setting.linear.key_tile,
              setting.linear.causal_chunk);
      for (const Composition<T>& composition : compositions<T>(mask::Causal{}, setting)) {
        CAPTURE(composition.name);
        const Mat<T> clean = composition.run(in.Q, in.K, in.V);
        REQUIRE(clean.allFinite());
        for (const Index p : cuts(n)) {
          for (const Poison kind : {Poison::huge, Poison::nan}) {
            CAPTURE(p, kind == Poison::nan);
            const std::optional<Mat<T>> out =
                run_poisoned(composition, poisoned<T>(in.Q, p + 1, kind),
                             poisoned<T>(in.K, p + 1, kind), poisoned<T>(in.V, p + 1, kind), kind);
            if (out) CHECK(check::identical(out->topRows(p + 1), clean.topRows(p + 1)));
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE(
    "Causal compositions with padding: the rows before the poisoned tokens and the padded keys "
    "do not change",
    "[causality][padding]", float, double) {
  using T = TestType;
  const Index n = 45;
  const Index length = 40;
  const Inputs<T> in = random_inputs<T>(n, 811);
  const auto filter = mask::Causal{} && mask::KeyPadding::from_lengths({length});
  for (const Setting& setting : settings()) {
    for (const Composition<T>& composition : compositions<T>(filter, setting)) {
      CAPTURE(composition.name);
      const Mat<T> clean = composition.run(in.Q, in.K, in.V);
      REQUIRE(clean.allFinite());
      for (const Poison kind : {Poison::huge, Poison::nan}) {
        CAPTURE(kind == Poison::nan);
        // The padded keys hold anything: nothing changes.
        const std::optional<Mat<T>> padded =
            run_poisoned(composition, in.Q, poisoned<T>(in.K, length, kind),
                         poisoned<T>(in.V, length, kind), kind);
        if (padded) CHECK(check::identical(*padded, clean));
        for (const Index p : {Index(0), Index(4), Index(20)}) {
          CAPTURE(p);
          const std::optional<Mat<T>> out =
              run_poisoned(composition, poisoned<T>(in.Q, p + 1, kind),
                           poisoned<T>(in.K, p + 1, kind), poisoned<T>(in.V, p + 1, kind), kind);
          if (out) CHECK(check::identical(out->topRows(p + 1), clean.topRows(p + 1)));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("Masked compositions: keys and values a row does not see leave it unchanged",
                   "[causality][masks]", float, double) {
  using T = TestType;
  for (const Index n : {Index(37), Index(300)}) {
    CAPTURE(n);
    // Single keys at both ends, around the tiles and inside, and a run of neighbours.
    std::vector<std::vector<Index>> probes = {{0}, {n / 2}, {n - 1}, {n / 3, n / 3 + 1, n / 3 + 2}};
    if (n > 260) probes.push_back({255, 256});
    {
      INFO("KeyPadding from lengths: the padded keys");
      const Index length = n - n / 5;
      std::vector<Index> padded;
      for (Index j = length; j < n; ++j) padded.push_back(j);
      check_hidden_keys_do_not_matter<T>(mask::KeyPadding::from_lengths({length}),
                                         ref::first_keys(n, n, length), {padded}, 901);
    }
    {
      INFO("KeyPadding from flags: the padded keys, all at once and one by one");
      const ref::Flags valid = ref::random_visibility(n, 1, 0.7, 902).col(0);
      std::vector<Index> padded;
      for (Index j = 0; j < n; ++j)
        if (!valid(j)) padded.push_back(j);
      REQUIRE(padded.size() >= 2);
      check_hidden_keys_do_not_matter<T>(mask::KeyPadding::from_flags(valid),
                                         ref::valid_keys(n, valid),
                                         {padded, {padded.front()}, {padded.back()}}, 903);
    }
    {
      INFO("Window(5, 3)");
      check_hidden_keys_do_not_matter<T>(mask::Window(5, 3), ref::window(n, n, 5, 3), probes, 904);
    }
    {
      INFO("Boolean, random, with an empty row");
      ref::Visibility visible = ref::random_visibility(n, n, 0.4, 905);
      visible.row(n / 4).setConstant(false);
      check_hidden_keys_do_not_matter<T>(mask::Boolean(visible), visible, probes, 906);
    }
  }
}

TEMPLATE_TEST_CASE(
    "BatchNormalized refuses every mask under which queries see different keys, in every "
    "composition",
    "[causality][batch_norm]", float, double) {
  using T = TestType;
  const Index n = 30;
  const Inputs<T> in = random_inputs<T>(n, 951);
  const Mat<T> Q = in.Q.leftCols(d);
  const Mat<T> K = in.K.leftCols(d);
  const char* const refusal = "BatchNormalized: the key statistics are shared by every query";
  using None = magnitude::None;
  using Positive = features::Positive<T>;
  const Positive positive = Positive::draw(16, d, {41, 0});
  const auto refuses = [&](const auto& m) {
    using M = std::remove_cvref_t<decltype(m)>;
    using Softmax = Attention<kernels::Exponential<T>, None, M>;
    REQUIRE_INVALID_ARGUMENT(kernattn::BatchNormalized<Softmax>(Softmax({}, {}, m))(Q, K, in.V),
                             refusal);
    REQUIRE_INVALID_ARGUMENT(
        kernattn::ScaledHead<kernattn::BatchNormalized<Softmax>>(
            kernattn::BatchNormalized<Softmax>(Softmax({}, {}, m)), 4)(Q, K, in.V),
        refusal);
    REQUIRE_INVALID_ARGUMENT(kernattn::BatchNormalized<kernattn::ScaledHead<Softmax>>(
                                 kernattn::ScaledHead<Softmax>(Softmax({}, {}, m), 4))(Q, K, in.V),
                             refusal);
    REQUIRE_INVALID_ARGUMENT(
        kernattn::MultiHead<kernattn::BatchNormalized<Softmax>>(
            {kernattn::BatchNormalized<Softmax>(Softmax({}, {}, m)),
             kernattn::BatchNormalized<Softmax>(Softmax({}, {}, m))})(Q, K, in.V),
        refusal);
    if constexpr (kernattn::mask::LinearMask<M>) {
      using Fast = LinearAttention<Positive, None, M>;
      REQUIRE_INVALID_ARGUMENT(kernattn::BatchNormalized<Fast>(Fast(positive, {}, m))(Q, K, in.V),
                               refusal);
    }
  };
  {
    INFO("Causal");
    refuses(mask::Causal{});
  }
  {
    INFO("Causal && KeyPadding");
    refuses(mask::Causal{} && mask::KeyPadding::from_lengths({25}));
  }
  {
    INFO("Window(5, 3)");
    refuses(mask::Window(5, 3));
  }
  {
    INFO("Boolean whose rows differ");
    refuses(mask::Boolean(ref::random_visibility(n, n, 0.5, 952)));
  }
}

}  // namespace test_causality
