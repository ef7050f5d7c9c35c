// The batch x heads layout (sequence b = rows [b N, (b+1) N), head h = columns [h d, (h+1) d))
// equals attending each (sequence, head) block on its own, with per-sequence masks; and the
// thread count never changes a single bit of the result; packed sequences (offsets) equal each
// sequence run alone.
#include <cmath>
#include <functional>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace test_batch_threads {

namespace {

constexpr Index B = 3, H = 2, Nq = 17, Nk = 23, D = 6, Dv = 4;

/// Q (B Nq) x (H d), K (B Nk) x (H d), V (B Nk) x (H dv).
template <class T>
ref::Problem batch_problem(std::uint32_t seed) {
  return ref::rounded<T>({ref::normal(B * Nq, H * D, seed), ref::normal(B * Nk, H * D, seed + 1),
                          ref::normal(B * Nk, H * Dv, seed + 2)});
}

/// Runs Attention<Kernel, Magnitude, Mask> on the batched problem, then on every (sequence,
/// head) block separately with that sequence's own mask, and compares both with each other and
/// with the reference (whose mask for sequence b is visible(b)).
template <class T, class Kernel, class Magnitude, class BatchMask, class SequenceMask>
void check_batched(const ref::Problem& p, const Kernel& kernel, const Magnitude& mu,
                   const ref::KernelModel& km, const ref::MagnitudeModel& mm,
                   const BatchMask& batch_mask, const std::function<SequenceMask(Index)>& mask_of,
                   const std::function<ref::Visibility(Index)>& visible) {
  const ref::Reference expected = ref::attention(p, B, H, km, mm, visible, ref::unit_roundoff<T>);
  const kernattn::ExecutionOptions options{0, 5, 7};
  const ref::Matrix<T> batched = check::run<T>(p, kernel, mu, batch_mask, options, {B, H});
  check::require_matches<T>(batched, expected);

  ref::Matrix<T> blockwise(B * Nq, H * Dv);
  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < H; ++h) {
      const ref::Problem block{p.Q.block(b * Nq, h * D, Nq, D), p.K.block(b * Nk, h * D, Nk, D),
                               p.V.block(b * Nk, h * Dv, Nk, Dv)};
      blockwise.block(b * Nq, h * Dv, Nq, Dv) =
          check::run<T>(block, kernel, mu, mask_of(b), options);
    }
  check::require_close(batched, blockwise, 2 * expected.bound);
}

/// check_batched with Exponential attention (default scale) and no magnitude.
template <class T, class BatchMask, class SequenceMask>
void check_batched_softmax(const BatchMask& batch_mask,
                           const std::function<SequenceMask(Index)>& mask_of,
                           const std::function<ref::Visibility(Index)>& visible,
                           std::uint32_t seed) {
  check_batched<T>(batch_problem<T>(seed), kernels::Exponential<T>(), magnitude::None{},
                   ref::exponential(1 / std::sqrt(double(D))), ref::unit_magnitude(), batch_mask,
                   mask_of, visible);
}

}  // namespace

TEMPLATE_TEST_CASE("Batch x heads equals attending each sequence and head separately", "[batch]",
                   float, double) {
  using T = TestType;
  SECTION("no mask") {
    check_batched_softmax<T, mask::None, mask::None>(
        {}, [](Index) { return mask::None{}; }, [](Index) { return ref::all_visible(Nq, Nk); },
        801);
  }
  SECTION("causal, with a distance kernel and a magnitude") {
    check_batched<T>(batch_problem<T>(802), kernels::Matern32<T>(), magnitude::L1<T>(),
                     ref::matern(3, std::pow(double(D), 0.25)),
                     ref::lp(1, ref::default_gamma(D), 2), mask::Causal{},
                     std::function<mask::Causal(Index)>([](Index) { return mask::Causal{}; }),
                     [](Index) { return ref::causal(Nq, Nk); });
  }
  SECTION("key padding: one length per sequence (all valid, some, none)") {
    const std::vector<Index> lengths = {Nk, 9, 0};
    check_batched_softmax<T, mask::KeyPadding, mask::KeyPadding>(
        mask::KeyPadding::from_lengths(lengths),
        [&](Index b) { return mask::KeyPadding::from_lengths({lengths[std::size_t(b)]}); },
        [&](Index b) { return ref::first_keys(Nq, Nk, lengths[std::size_t(b)]); }, 803);
  }
  SECTION("key padding: one length shared by every sequence") {
    check_batched_softmax<T, mask::KeyPadding, mask::KeyPadding>(
        mask::KeyPadding::from_lengths({10}),
        [](Index) { return mask::KeyPadding::from_lengths({10}); },
        [](Index) { return ref::first_keys(Nq, Nk, 10); }, 804);
  }
  SECTION("key padding: B x Nk flags, sequence after sequence") {
    ref::Flags flags = ref::random_visibility(B * Nk, 1, 0.6, 805).col(0);
    flags.head(3).setConstant(true);
    const auto flags_of = [&](Index b) { return ref::Flags(flags.segment(b * Nk, Nk)); };
    check_batched_softmax<T, mask::KeyPadding, mask::KeyPadding>(
        mask::KeyPadding::from_flags(flags),
        [&](Index b) { return mask::KeyPadding::from_flags(flags_of(b)); },
        [&](Index b) { return ref::valid_keys(Nq, flags_of(b)); }, 806);
  }
  SECTION("Boolean: (B Nq) x Nk, one mask per sequence stacked") {
    ref::Visibility stacked = ref::random_visibility(B * Nq, Nk, 0.5, 807);
    stacked.col(0).setConstant(true);  // every row sees a key (rows that see none: see test_masks)
    const auto rows_of = [&](Index b) { return ref::Visibility(stacked.middleRows(b * Nq, Nq)); };
    check_batched_softmax<T, mask::Boolean, mask::Boolean>(
        mask::Boolean(stacked), [&](Index b) { return mask::Boolean(rows_of(b)); }, rows_of, 808);
  }
  SECTION("Boolean: Nq x Nk, shared by every sequence") {
    ref::Visibility shared = ref::random_visibility(Nq, Nk, 0.5, 809);
    shared.col(0).setConstant(true);
    check_batched_softmax<T, mask::Boolean, mask::Boolean>(
        mask::Boolean(shared), [&](Index) { return mask::Boolean(shared); },
        [&](Index) { return shared; }, 810);
  }
}

TEMPLATE_TEST_CASE("Results are bit-identical for every thread count", "[threads]", float, double) {
  // 2 sequences x 3 heads x 5 query tiles = 30 work items, causal: the threads get uneven work.
  using T = TestType;
  const ref::Problem p =
      ref::rounded<T>({ref::normal(2 * 70, 3 * 8, 821), ref::normal(2 * 70, 3 * 8, 822),
                       ref::normal(2 * 70, 3 * 4, 823)});
  const auto outputs_for = [&](const auto& kernel, const auto& mu) {
    std::vector<ref::Matrix<T>> outputs;
    for (const int threads : {1, 2, 3, 0}) {
      kernattn::Attention attention(kernel, mu, mask::Causal{},
                                    kernattn::ExecutionOptions{threads, 16, 32});
      outputs.push_back(attention(p.q<T>(), p.k<T>(), p.v<T>(), {2, 3}));
      CHECK(attention.options().threads == threads);
    }
    return outputs;
  };
  SECTION("Exponential") {
    const auto outputs = outputs_for(kernels::Exponential<T>(), magnitude::None{});
    for (const auto& out : outputs) CHECK(check::identical(out, outputs.front()));
    CHECK(outputs.front().allFinite());
  }
  SECTION("Matern 5/2 x Lp(3): the per-key terms are computed in parallel too") {
    const auto outputs = outputs_for(kernels::Matern52<T>(), magnitude::Lp<T>(T(3)));
    for (const auto& out : outputs) CHECK(check::identical(out, outputs.front()));
  }
  SECTION("set_threads") {
    kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Causal> attention(
        {}, {}, {}, kernattn::ExecutionOptions{1, 16, 32});
    const ref::Matrix<T> one = attention(p.q<T>(), p.k<T>(), p.v<T>(), {2, 3});
    const ref::Matrix<T> two = attention.set_threads(2)(p.q<T>(), p.k<T>(), p.v<T>(), {2, 3});
    CHECK(attention.options().threads == 2);
    CHECK(check::identical(one, two));
  }
}

TEMPLATE_TEST_CASE("Packed sequences equal each sequence run alone, on every thread count",
                   "[batch][packed]", float, double) {
  // Five sequences of different lengths (one without queries, one without keys), two heads, by
  // offsets like cu_seqlens: the same bits as calling the attention on each sequence's rows,
  // whether the sequences run in parallel (1, 2 threads) or one after another (many threads).
  using T = TestType;
  using Matrix = kernattn::Matrix<T>;
  const std::vector<Index> query_offsets{0, 7, 8, 8, 38, 50};
  const std::vector<Index> key_offsets{0, 9, 13, 16, 46, 46};
  const Matrix Q = ref::normal(50, H * D, 361).cast<T>();
  const Matrix K = ref::normal(46, H * D, 362).cast<T>();
  const Matrix V = ref::normal(46, H * Dv, 363).cast<T>();
  const auto check = [&](const auto& attention) {
    Matrix expected = Matrix::Zero(50, H * Dv);
    for (std::size_t s = 0; s + 1 < query_offsets.size(); ++s) {
      const Index q0 = query_offsets[s], nq = query_offsets[s + 1] - q0;
      const Index k0 = key_offsets[s], nk = key_offsets[s + 1] - k0;
      if (nq > 0)
        expected.middleRows(q0, nq) = attention(Q.middleRows(q0, nq), K.middleRows(k0, nk),
                                                V.middleRows(k0, nk), kernattn::BatchLayout{1, H});
    }
    for (const int threads : {1, 2, 64}) {
      CAPTURE(threads);
      Matrix out = Matrix::Constant(50, H * Dv, T(7));
      kernattn::attend_packed(attention, Q, K, V, out, query_offsets, key_offsets, H, threads);
      CHECK(out == expected);
    }
  };
  SECTION("causal RBF x L^3, the exact engine") {
    check(kernattn::Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Causal>(
        {}, magnitude::Lp<T>(T(3))));
  }
  SECTION("linear attention with positive features") {
    using Positive = kernattn::features::Positive<T>;
    check(kernattn::LinearAttention<Positive>(
        Positive::draw(16, D, kernattn::random::RandomStream{5, 1})));
  }
  SECTION("bad offsets") {
    const kernattn::Attention<kernels::Exponential<T>> softmax;
    Matrix out(50, H * Dv);
    const auto attend = [&](const std::vector<Index>& q, const std::vector<Index>& k) {
      kernattn::attend_packed(softmax, Q, K, V, out, q, k, H);
    };
    CHECK_THROWS_WITH(attend({0, 7, 5, 50}, {0, 9, 13, 46}),
                      Catch::Contains("query_offsets must not decrease"));
    CHECK_THROWS_WITH(attend({0, 7, 49}, {0, 9, 46}),
                      Catch::Contains("query_offsets ends at 49 but Q has 50 rows"));
    CHECK_THROWS_WITH(attend({0, 7, 50}, {0, 46}),
                      Catch::Contains("query_offsets has 3 entries but key_offsets has 2"));
    CHECK_THROWS_WITH(attend({1, 50}, {0, 46}), Catch::Contains("must start at 0"));
  }
}

}  // namespace test_batch_threads
