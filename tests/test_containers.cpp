// Attention compositions kept the way users keep them: in std::optional and std::vector,
// including compositions without a default (a Window, Boolean or KeyPadding mask, the IKA
// reference, whose kernel needs its frequencies). Each is constructed, emplaced, copied and
// called, and must give bit for bit what the same composition gives when built directly.
// (This file must also compile with Clang 14, which instantiates the default constructor of a
// class held in std::optional more eagerly than GCC.)
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace test_containers {

namespace features = kernattn::features;

namespace {

template <class T>
using Softmax = kernattn::Attention<kernels::Exponential<T>>;
template <class T>
using Windowed = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::Window>;
template <class T>
using BooleanMasked = kernattn::Attention<kernels::Rbf<T>, magnitude::Lp<T>, mask::Boolean>;
template <class T>
using Padded = kernattn::Attention<kernels::Exponential<T>, magnitude::None, mask::KeyPadding>;
template <class T>
using Ika = kernattn::IkaReferenceAttention<T>;
template <class T>
using IkaCausal = kernattn::IkaReferenceAttention<T, mask::Causal>;
template <class T>
using LinearPadded =
    kernattn::LinearAttention<features::Positive<T>, magnitude::None, mask::KeyPadding>;

// Default construction exists exactly when the kernel, the magnitude and the mask all have one.
static_assert(std::is_default_constructible_v<Softmax<float>>);
static_assert(std::is_default_constructible_v<
              kernattn::Attention<kernels::Rbf<double>, magnitude::Lp<double>, mask::Causal>>);
static_assert(!std::is_default_constructible_v<Windowed<float>>);
static_assert(!std::is_default_constructible_v<BooleanMasked<float>>);
static_assert(!std::is_default_constructible_v<Padded<float>>);
static_assert(!std::is_default_constructible_v<Ika<float>>);
static_assert(!std::is_default_constructible_v<LinearPadded<float>>);
static_assert(std::is_copy_constructible_v<Windowed<float>> &&
              std::is_move_assignable_v<Ika<float>>);

/// Holds `make()` in an optional (constructed in place, emplaced over a first value, copied,
/// moved) and in a vector (grown past its capacity, copied), and requires every copy to give
/// the directly built composition's output on one problem.
template <class T, class Make>
void check_holders(const ref::Problem& p, const Make& make) {
  using Composition = decltype(make());
  const Composition direct = make();
  const ref::Matrix<T> expected = direct(p.q<T>(), p.k<T>(), p.v<T>());
  REQUIRE(expected.allFinite());
  const auto same = [&](const Composition& held) {
    CHECK(check::identical(held(p.q<T>(), p.k<T>(), p.v<T>()), expected));
  };

  std::optional<Composition> held;
  CHECK_FALSE(held.has_value());
  held.emplace(make());
  REQUIRE(held.has_value());
  same(*held);
  held.emplace(make());  // over an existing value
  same(*held);
  const std::optional<Composition> copied = held;
  same(*copied);
  std::optional<Composition> moved = std::move(held);
  same(*moved);
  const std::optional<Composition> in_place(std::in_place, make());
  same(*in_place);
  moved.reset();
  CHECK_FALSE(moved.has_value());

  std::vector<Composition> many;
  for (int i = 0; i < 5; ++i) many.push_back(make());
  many.emplace_back(make());
  const std::vector<Composition> copies = many;
  REQUIRE(copies.size() == 6);
  for (const Composition& each : copies) same(each);
  many.erase(many.begin());
  same(many.front());
}

}  // namespace

TEMPLATE_TEST_CASE("Compositions without a default live in std::optional and std::vector",
                   "[containers]", KERNATTN_TEST_SCALARS) {
  using T = TestType;
  constexpr Index nq = 9, nk = 11, d = 4, dv = 3, M = 6;
  const ref::Problem p = ref::random_problem<T>(nq, nk, d, dv, 931);
  {
    INFO("Attention with a Window mask");
    check_holders<T>(p, [] {
      return Windowed<T>(kernels::Exponential<T>(), magnitude::None{}, mask::Window(3, 1));
    });
  }
  {
    INFO("Attention with a Boolean mask");
    const mask::Boolean allowed(ref::random_visibility(nq, nk, 0.7, 932));
    check_holders<T>(p, [&] {
      return BooleanMasked<T>(kernels::Rbf<T>(T(2)), magnitude::Lp<T>(T(3)), allowed);
    });
  }
  {
    INFO("Attention with key padding");
    check_holders<T>(p, [] {
      return Padded<T>(kernels::Exponential<T>(), {}, mask::KeyPadding::from_lengths({7}));
    });
  }
  const ref::Matrix<T> w1 = ref::normal(d, M, 933, 0.0, 0.1).cast<T>();
  const ref::Matrix<T> w2 = ref::normal(d, M, 934, 0.0, 0.1).cast<T>();
  {
    INFO("the IKA reference");
    check_holders<T>(p, [&] { return kernattn::make_ika_reference(w1, w2, T(1.5)); });
  }
  {
    INFO("the causal IKA reference");
    check_holders<T>(p, [&] { return kernattn::make_ika_reference(w1, w2, T(2), mask::Causal{}); });
  }
  {
    INFO("LinearAttention with key padding");
    const auto map = features::Positive<T>::draw(8, d, {935, 0});
    check_holders<T>(p,
                     [&] { return LinearPadded<T>(map, {}, mask::KeyPadding::from_lengths({5})); });
  }
  {
    INFO("a default-constructible composition, default-constructed in the holders");
    std::optional<Softmax<T>> held;
    held.emplace();
    std::vector<Softmax<T>> many(3);
    const ref::Matrix<T> expected = Softmax<T>()(p.q<T>(), p.k<T>(), p.v<T>());
    CHECK(check::identical((*held)(p.q<T>(), p.k<T>(), p.v<T>()), expected));
    for (const Softmax<T>& each : many)
      CHECK(check::identical(each(p.q<T>(), p.k<T>(), p.v<T>()), expected));
  }
  {
    INFO("a MultiHead of windowed heads");
    using Heads = kernattn::MultiHead<Windowed<T>>;
    const auto make = [] {
      return Heads(std::vector<Windowed<T>>(
          2, Windowed<T>(kernels::Exponential<T>(), magnitude::None{}, mask::Window(2, 0))));
    };
    const ref::Problem wide = ref::random_problem<T>(nq, nk, 2 * d, 2 * dv, 936);
    std::optional<Heads> held;
    held.emplace(make());
    std::vector<Heads> many{make(), make()};
    const ref::Matrix<T> expected = make()(wide.q<T>(), wide.k<T>(), wide.v<T>());
    REQUIRE(expected.allFinite());
    CHECK(check::identical((*held)(wide.q<T>(), wide.k<T>(), wide.v<T>()), expected));
    for (const Heads& each : many)
      CHECK(check::identical(each(wide.q<T>(), wide.k<T>(), wide.v<T>()), expected));
  }
}

}  // namespace test_containers
