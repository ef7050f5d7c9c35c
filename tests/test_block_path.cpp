// The exact engine's block path (engine/block_path.hpp): the register-blocked kernels on packed
// queries, keys and values, against the naive double-precision kernel smoother at every edge of
// their padding (head dimensions, value widths, query blocks, key panels and key tiles that are
// not multiples of the packets). Hidden non-finite data: test_causality.cpp, test_nonfinite.cpp.
#include <cmath>
#include <type_traits>

#include "catch.hpp"
#include "reference.hpp"

namespace test_block_path {

namespace {

using kernattn::ExecutionOptions;
namespace mask = kernattn::mask;
namespace magnitude = kernattn::magnitude;

/// Sizes that leave every kind of remainder: a single entry, fewer than a packet, a few packets
/// and a part.
constexpr Index head_dimensions[] = {1, 3, 17};
constexpr Index value_widths[] = {1, 37};
constexpr Index query_counts[] = {1, 13};
constexpr Index key_counts[] = {1, 7, 70};

const ExecutionOptions block_tilings[] = {
    {.threads = 1, .query_tile = 5, .key_tile = 7},
    {.threads = 1, .query_tile = 64, .key_tile = 33},
    {.threads = 2, .query_tile = 0, .key_tile = 256},
};

/// Runs `attend(problem, options)` on every shape and tiling and compares it with `reference(
/// problem)`.
template <class T, class Attend, class Reference>
void check_every_edge(std::uint32_t seed, Attend&& attend, Reference&& reference) {
  for (const Index d : head_dimensions)
    for (const Index dv : value_widths)
      for (const Index nq : query_counts)
        for (const Index nk : key_counts) {
          CAPTURE(d, dv, nq, nk);
          const ref::Problem p = ref::random_problem<T>(nq, nk, d, dv, seed++);
          const ref::Reference expected = reference(p);
          for (const ExecutionOptions& options : block_tilings) {
            CAPTURE(options.query_tile, options.key_tile, options.threads);
            check::require_matches<T>(attend(p, options), expected);
          }
        }
}

}  // namespace

TEMPLATE_TEST_CASE("The block path matches the reference at every padding edge", "[block]", float,
                   double) {
  using T = TestType;
  constexpr double u = ref::unit_roundoff<T>;
  SECTION("softmax (dot-product form)") {
    check_every_edge<T>(
        9101,
        [](const ref::Problem& p, const ExecutionOptions& options) {
          return check::run<T>(p, kernels::Exponential<T>(), magnitude::None{}, mask::None{},
                               options);
        },
        [&](const ref::Problem& p) {
          const double scale = double(T(1) / std::sqrt(T(p.Q.cols())));
          return ref::attention(p, ref::exponential(scale), ref::unit_magnitude(),
                                ref::all_visible(p.Q.rows(), p.K.rows()), u);
        });
  }
  SECTION("RBF x L^3 (distance form with a key bias), causal") {
    check_every_edge<T>(
        9201,
        [](const ref::Problem& p, const ExecutionOptions& options) {
          return check::run<T>(p, kernels::Rbf<T>(), magnitude::Lp<T>(T(3)), mask::Causal{},
                               options);
        },
        [&](const ref::Problem& p) {
          const Index d = p.Q.cols();
          const double gamma = ref::default_gamma(d);
          return ref::attention(p, ref::rbf(std::sqrt(double(d))), ref::lp(3, gamma, 2),
                                ref::causal(p.Q.rows(), p.K.rows()), u);
        });
  }
  SECTION("Matern 3/2 (distance form with a map), window") {
    check_every_edge<T>(
        9301,
        [](const ref::Problem& p, const ExecutionOptions& options) {
          return check::run<T>(p, kernels::Matern32<T>(), magnitude::None{}, mask::Window(4, 2),
                               options);
        },
        [&](const ref::Problem& p) {
          return ref::attention(p, ref::matern(3, std::pow(double(p.Q.cols()), 0.25)),
                                ref::unit_magnitude(), ref::window(p.Q.rows(), p.K.rows(), 4, 2),
                                u);
        });
  }
  SECTION("Matern 3/2 and 5/2, causal, with a third of the queries far from every key") {
    // In double r ~ 8000 there and x = sqrt(2 nu) r / l ~ 7000-9000: Matern 3/2 weighs P e^{e - m}
    // with log max P ~ 9, Matern 5/2's P = 1 + x + x^2/3 exceeds 2^24 and its rows take the
    // log-weights themselves. In float (whose reference bound at that distance is not
    // informative) r ~ 240: both weigh P e^{e - m}, with log max P ~ 5 and 10. The near queries
    // share every block with them.
    const double offset = std::is_same_v<T, float> ? 60.0 : 2000.0;
    ref::Problem p = ref::random_problem<T>(13, 70, 16, 5, 9401);
    for (Index i = 0; i < p.Q.rows(); i += 3) p.Q.row(i).array() += offset;
    p = ref::rounded<T>(p);
    const double l = std::pow(16.0, 0.25);
    for (const ExecutionOptions& options : block_tilings) {
      CAPTURE(options.query_tile, options.key_tile, options.threads);
      check::require_matches<T>(
          check::run<T>(p, kernels::Matern32<T>(), magnitude::None{}, mask::Causal{}, options),
          ref::attention(p, ref::matern(3, l), ref::unit_magnitude(), ref::causal(13, 70), u));
      check::require_matches<T>(
          check::run<T>(p, kernels::Matern52<T>(), magnitude::None{}, mask::Causal{}, options),
          ref::attention(p, ref::matern(5, l), ref::unit_magnitude(), ref::causal(13, 70), u));
    }
  }
}

}  // namespace test_block_path
