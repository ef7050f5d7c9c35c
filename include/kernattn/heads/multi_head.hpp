#pragma once
/// \file
/// `MultiHead<Head, Coupling>`: H heads, each with its own parameters, over the column-split
/// inputs of a projection, optionally drawn with coupled spectral samplers (docs/math.md, section
/// 3).

#include <algorithm>
#include <cstddef>
#include <exception>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernattn/core/parameters.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/coupling/coupling.hpp"
#include "kernattn/coupling/independent.hpp"
#include "kernattn/engine/backward_front_end.hpp"
#include "kernattn/engine/front_end.hpp"
#include "kernattn/engine/options.hpp"
#include "kernattn/heads/attention_head.hpp"
#include "kernattn/spectral/sampler.hpp"

namespace kernattn {

/// A compile-time list of head types, for a `MultiHead` whose heads differ in type (e.g. an
/// exact softmax head next to a linear random-feature head): `MultiHead<Heads<A, B, C>>`.
template <class... HeadTypes>
struct Heads {};

/// A head made from random frequencies: `frequencies` (M) rows drawn from `sampler`, turned into
/// the head by `build(omega)` with \f$\Omega\f$ the \f$M \times d\f$ frequency matrix, e.g.
/// `[](Matrix<float> omega) { return LinearAttention(features::Fourier<float>(omega)); }`.
template <spectral::SpectralSampler Sampler, class Build>
struct SampledHead {
  Sampler sampler;
  Index frequencies;
  Build build;
};

/// `SampledHead{sampler, M, build}` deduces its types (with every compiler: Clang before 17
/// deduces none for an aggregate without a guide).
template <class Sampler, class Build>
SampledHead(Sampler, Index, Build) -> SampledHead<Sampler, Build>;

namespace detail {

/// How the heads are held: a vector of one type, or a tuple of the listed types.
template <class Head>
struct HeadStorage {
  static_assert(AttentionHead<Head>, "MultiHead: the head type must satisfy AttentionHead");
  using Type = std::vector<Head>;
  using Scalar = typename Head::Scalar;
};
template <class... HeadTypes>
struct HeadStorage<Heads<HeadTypes...>> {
  static_assert(sizeof...(HeadTypes) >= 1, "MultiHead: Heads<...> needs at least one head type");
  static_assert((AttentionHead<HeadTypes> && ...),
                "MultiHead: every listed head type must satisfy AttentionHead");
  using Type = std::tuple<HeadTypes...>;
  using Scalar = typename std::tuple_element_t<0, Type>::Scalar;
  static_assert((std::is_same_v<typename HeadTypes::Scalar, Scalar> && ...),
                "MultiHead: every head must have the same scalar type");
};

/// Whether every head of the container is a `ParametricHead`.
template <class Container>
inline constexpr bool all_parametric = false;
template <class Head>
inline constexpr bool all_parametric<std::vector<Head>> = ParametricHead<Head>;
template <class... HeadTypes>
inline constexpr bool all_parametric<std::tuple<HeadTypes...>> = (ParametricHead<HeadTypes> && ...);

/// Calls `body(head)` for every head, in order.
template <class Head, class Body>
void for_each_head(std::vector<Head>& heads, Body&& body) {
  for (Head& head : heads) body(head);
}
template <class... HeadTypes, class Body>
void for_each_head(std::tuple<HeadTypes...>& heads, Body&& body) {
  std::apply([&](HeadTypes&... head) { (body(head), ...); }, heads);
}

/// Calls `body(head)` for head number `index`.
template <class Head, class Body>
void visit_head(const std::vector<Head>& heads, Index index, Body&& body) {
  body(heads[std::size_t(index)]);
}
template <class... HeadTypes, class Body>
void visit_head(const std::tuple<HeadTypes...>& heads, Index index, Body&& body) {
  [&]<std::size_t... h>(std::index_sequence<h...>) {
    ((std::size_t(index) == h ? body(std::get<h>(heads)) : void()), ...);
  }
  (std::index_sequence_for<HeadTypes...>{});
}

/// Frequencies for every recipe from one coupled draw: the coupling draws
/// \f$\max_h M_h \times \max_h n_{u,h}\f$ uniforms per head and head h's sampler takes the
/// top-left \f$M_h \times n_{u,h}\f$ of its own.
template <coupling::Coupling Coupling, class Recipes>
[[nodiscard]] auto build_sampled_heads(const Coupling& coupling, const Recipes& recipes,
                                       Index count, Index d, random::RandomStream stream,
                                       auto&& for_each_recipe) {
  require(count >= 1, "MultiHead::draw: at least one head is needed");
  Index rows = 0;
  Index cols = 0;
  for_each_recipe(recipes, [&](const auto& recipe, Index) {
    spectral::require_frequency_shape(recipe.frequencies, d, "MultiHead::draw");
    rows = std::max(rows, recipe.frequencies);
    cols = std::max(cols, recipe.sampler.uniforms_per_frequency(d));
  });
  return [uniforms = coupling.uniforms(stream, count, rows, cols), d](const auto& recipe, Index h) {
    const Matrix<double> own = uniforms[std::size_t(h)].topLeftCorner(
        recipe.frequencies, recipe.sampler.uniforms_per_frequency(d));
    return recipe.build(recipe.sampler.frequencies_from_uniforms(own, d));
  };
}

}  // namespace detail

/// H attention heads over the layout that follows a projection: Q is \f$(B N_q) \times (H d)\f$,
/// K is \f$(B N_k) \times (H d)\f$, V is \f$(B N_k) \times (H d_v)\f$ and the output
/// \f$(B N_q) \times (H d_v)\f$ (`BatchLayout`); head h reads columns \f$[h d, (h+1) d)\f$ of Q
/// and K and \f$[h d_v, (h+1) d_v)\f$ of V and writes the same columns of the output:
/// \f$\text{out}[:, h] = \text{head}_h(Q[:, h], K[:, h], V[:, h])\f$.
///
/// `HeadT` is one head type (the heads are a `std::vector`, any H) or `Heads<A, B, ...>` (a
/// tuple, H fixed by the list). Every head has its own parameters: kernel, magnitude, mask,
/// feature map (sampler, p, lengthscale, ...). `CouplingT` says how `draw` couples the heads'
/// spectral samplers (`coupling::Independent`, `GaussianCopula`, `StudentTCopula`); heads built
/// directly are used as given.
///
/// Calls take a `BatchLayout` whose `heads` is H (or left at 1, which means H); each head gets
/// all B sequences of its columns (so per-sequence masks apply). Threads: when the thread count
/// divides H the heads run in parallel, each single-threaded on the thread that took it;
/// otherwise they run one after another, each parallel over its sequences and query tiles (the
/// multi-head passes its thread count to every head that has `set_threads`). Results are
/// bit-identical for any thread count. A head that rejects its input throws `InvalidArgument`
/// naming the head and its columns of the caller's Q, K and V, then the head's own message.
template <class HeadT, coupling::Coupling CouplingT = coupling::Independent>
class MultiHead : public detail::AttentionCalls<MultiHead<HeadT, CouplingT>>,
                  public detail::GradientCalls<MultiHead<HeadT, CouplingT>> {
  using Storage = detail::HeadStorage<HeadT>;
  static constexpr bool listed = !std::is_same_v<typename Storage::Type, std::vector<HeadT>>;

 public:
  using Scalar = typename Storage::Scalar;
  using Coupling = CouplingT;
  /// `std::vector<Head>` or `std::tuple<A, B, ...>`.
  using HeadContainer = typename Storage::Type;

  /// From the heads themselves (at least one).
  explicit MultiHead(HeadContainer heads, MultiHeadOptions options = {})
      : heads_(std::move(heads)), options_(options) {
    if constexpr (!listed) require(!heads_.empty(), "MultiHead: at least one head is needed");
    options_.validate();
    share_threads();
  }

  /// Heads of one type drawn with coupled samplers: head h is `recipes[h].build(Omega_h)` with
  /// \f$\Omega_h\f$ made by `recipes[h].sampler` from head h's uniforms of one
  /// `coupling.uniforms(stream, H, ...)` draw, d the head dimension. With `Independent` head h
  /// gets exactly the frequencies its sampler draws alone from stream `stream.stream + h`.
  template <spectral::SpectralSampler Sampler, class Build>
  requires(!listed) [[nodiscard]] static MultiHead
      draw(const Coupling& coupling, const std::vector<SampledHead<Sampler, Build>>& recipes,
           Index d, random::RandomStream stream, MultiHeadOptions options = {}) {
    const Index count = Index(recipes.size());
    const auto each = [](const auto& all, auto&& body) {
      for (std::size_t h = 0; h < all.size(); ++h) body(all[h], Index(h));
    };
    const auto build = detail::build_sampled_heads(coupling, recipes, count, d, stream, each);
    HeadContainer heads;
    heads.reserve(recipes.size());
    each(recipes, [&](const auto& recipe, Index h) { heads.push_back(build(recipe, h)); });
    return MultiHead(std::move(heads), options);
  }

  /// Heads of the listed types drawn with coupled samplers, recipe h building head type h.
  template <class... Recipes>
  requires(listed) [[nodiscard]] static MultiHead
      draw(const Coupling& coupling, const std::tuple<Recipes...>& recipes, Index d,
           random::RandomStream stream, MultiHeadOptions options = {}) {
    static_assert(sizeof...(Recipes) == std::tuple_size_v<HeadContainer>,
                  "MultiHead::draw: one recipe per listed head type");
    const auto each = [](const auto& all, auto&& body) {
      [&]<std::size_t... h>(std::index_sequence<h...>) { (body(std::get<h>(all), Index(h)), ...); }
      (std::index_sequence_for<Recipes...>{});
    };
    const auto build =
        detail::build_sampled_heads(coupling, recipes, Index(sizeof...(Recipes)), d, stream, each);
    return MultiHead(
        [&]<std::size_t... h>(std::index_sequence<h...>) {
          return HeadContainer(build(std::get<h>(recipes), Index(h))...);
        }(std::index_sequence_for<Recipes...>{}),
        options);
  }

  /// Sets the number of threads of the multi-head and of every head (0 = the OpenMP default).
  MultiHead& set_threads(int threads) {
    MultiHeadOptions changed = options_;
    changed.threads = threads;
    changed.validate();
    options_ = changed;
    share_threads();
    return *this;
  }

  /// The backward pass (docs/gradients.md, "Compositions"): given the inputs of a forward call,
  /// its output and \f$dOut = \partial\ell/\partial out\f$, writes dQ, dK and dV, each head's
  /// own backward on its columns (`DifferentiableHead`; through temporaries where a gradient may
  /// overlap an argument). A head that needs row statistics (`Attention`) recomputes them with a
  /// forward call of its own: one more forward per such head. Threads as in the forward;
  /// bit-identical for every thread count.
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                BatchLayout layout = {}) const {
    run_backward(
        Q, K, V, out, dOut, dQ, dK, dV, layout, [](const auto& head, Index, auto&&... args) {
          static_assert(
              DifferentiableHead<std::decay_t<decltype(head)>>,
              "MultiHead::backward: every head needs a backward pass (DifferentiableHead)");
          detail::head_backward(head, args...);
        });
  }

  /// The trainable parameters of every head (`ParametricHead`), head 0's first
  /// (docs/gradients.md, "Compositions"): names "head<h>.<the head's name>" (e.g.
  /// "head1.kernel.variance"), the sizes of those blocks, the values for head dimension d, and a
  /// copy of this multi-head with other values (each head checks its own).
  [[nodiscard]] std::vector<std::string> parameter_names()
      const requires detail::all_parametric<HeadContainer> {
    std::vector<std::string> names;
    for_each_head_in_order([&](const auto& head, Index h) {
      const std::vector<std::string> own =
          prefixed("head" + std::to_string(h), head.parameter_names());
      names.insert(names.end(), own.begin(), own.end());
    });
    return names;
  }
  [[nodiscard]] std::vector<Index> parameter_sizes()
      const requires detail::all_parametric<HeadContainer> {
    std::vector<Index> sizes;
    for_each_head_in_order([&](const auto& head, Index) {
      const std::vector<Index> own = parameter_sizes_of(head);
      sizes.insert(sizes.end(), own.begin(), own.end());
    });
    return sizes;
  }
  [[nodiscard]] Eigen::VectorXd parameters(
      Index d) const requires detail::all_parametric<HeadContainer> {
    std::vector<Eigen::VectorXd> blocks;
    for_each_head_in_order([&](const auto& head, Index) { blocks.push_back(head.parameters(d)); });
    return concatenated(blocks);
  }
  [[nodiscard]] MultiHead with_parameters(
      const Eigen::VectorXd& values) const requires detail::all_parametric<HeadContainer> {
    const std::vector<Index> sizes = parameter_sizes();
    Index total = 0;
    for (const Index size : sizes) total += size;
    require(values.size() == total, "MultiHead::with_parameters takes ", total,
            " values (parameter_names()) but got ", values.size());
    HeadContainer heads = heads_;
    Index at = 0;
    detail::for_each_head(heads, [&](auto& head) {
      Index own = 0;
      for (const Index size : parameter_sizes_of(head)) own += size;
      head = head.with_parameters(values.segment(at, own));
      at += own;
    });
    return MultiHead(std::move(heads), options_);
  }

  /// `backward`, and also \f$\partial\ell/\partial\theta\f$ of `parameters(d)` into
  /// `parameter_gradient` (resized; each head's share from its own backward, in head order, so
  /// bit-identical for every thread count).
  template <class DQ, class DK, class DV, class DO, class DG, detail::EigenDense GQ,
            detail::EigenDense GK, detail::EigenDense GV>
  void backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                const Eigen::MatrixBase<DG>& dOut, GQ&& dQ, GK&& dK, GV&& dV,
                Eigen::VectorXd& parameter_gradient,
                BatchLayout layout = {}) const requires detail::all_parametric<HeadContainer> {
    std::vector<Eigen::VectorXd> blocks(static_cast<std::size_t>(head_count()));
    run_backward(Q, K, V, out, dOut, dQ, dK, dV, layout,
                 [&](const auto& head, Index h, auto&&... args) {
                   detail::head_parameter_backward(head, args..., blocks[std::size_t(h)]);
                 });
    parameter_gradient = concatenated(blocks);
  }

  /// H.
  [[nodiscard]] Index head_count() const {
    if constexpr (listed)
      return Index(std::tuple_size_v<HeadContainer>);
    else
      return Index(heads_.size());
  }
  [[nodiscard]] const HeadContainer& heads() const { return heads_; }
  [[nodiscard]] const MultiHeadOptions& options() const { return options_; }

 private:
  friend class detail::AttentionCalls<MultiHead>;

  [[nodiscard]] BatchLayout resolve_layout(BatchLayout layout) const {
    require(layout.heads == 1 || layout.heads == head_count(), "MultiHead: the layout has ",
            layout.heads, " heads but the MultiHead has ", head_count());
    return {layout.sequences, head_count()};
  }

  /// Checks and views the arguments of a backward call, then runs `head_call(head, h, Q_h, K_h,
  /// V_h, out_h, dOut_h, dQ_h, dK_h, dV_h, layout_h)` for every head h on its columns.
  template <class DQ, class DK, class DV, class DO, class DG, class GQ, class GK, class GV,
            class HeadCall>
  void run_backward(const Eigen::MatrixBase<DQ>& Q, const Eigen::MatrixBase<DK>& K,
                    const Eigen::MatrixBase<DV>& V, const Eigen::MatrixBase<DO>& out,
                    const Eigen::MatrixBase<DG>& dOut, GQ& dQ, GK& dK, GV& dV, BatchLayout layout,
                    const HeadCall& head_call) const {
    static_assert(detail::all_of_scalar<Scalar, DQ, DK, DV, DO, DG, GQ, GK, GV>,
                  "every argument must have the attention's scalar type");
    const BatchLayout resolved = resolve_layout(layout);
    detail::validate_backward_shapes(Q, K, V, out, dOut, dQ, dK, dV, resolved);
    const detail::InputView<DQ> queries(Q);
    const detail::InputView<DK> keys(K);
    const detail::InputView<DV> values(V);
    const detail::InputView<DO> output(out);
    const detail::InputView<DG> output_gradient(dOut);
    const Index d = Q.cols() / resolved.heads;
    const Index dv = V.cols() / resolved.heads;
    detail::write_gradients<Scalar>(
        dQ, dK, dV,
        [&](auto& query_gradient, auto& key_gradient, auto& value_gradient) {
          for_each_head_call(Q, K, V, resolved, [&](const auto& head, Index h) {
            head_call(
                head, h, detail::columns_of(queries, h * d, d), detail::columns_of(keys, h * d, d),
                detail::columns_of(values, h * dv, dv), detail::columns_of(output, h * dv, dv),
                detail::columns_of(output_gradient, h * dv, dv),
                detail::columns_of(query_gradient, h * d, d),
                detail::columns_of(key_gradient, h * d, d),
                detail::columns_of(value_gradient, h * dv, dv), BatchLayout{resolved.sequences, 1});
          });
        },
        queries, keys, values, output, output_gradient);
  }

  /// Calls `body(head, h)` for every head, in order, on this thread.
  template <class Body>
  void for_each_head_in_order(Body&& body) const {
    for (Index h = 0; h < head_count(); ++h)
      detail::visit_head(heads_, h, [&](const auto& head) { body(head, h); });
  }

  [[nodiscard]] static Eigen::VectorXd concatenated(const std::vector<Eigen::VectorXd>& blocks) {
    Index total = 0;
    for (const Eigen::VectorXd& block : blocks) total += block.size();
    Eigen::VectorXd all(total);
    Index at = 0;
    for (const Eigen::VectorXd& block : blocks) {
      all.segment(at, block.size()) = block;
      at += block.size();
    }
    return all;
  }

  /// Each head checks its own dimension.
  template <class DQ>
  void check_head_dimension(Index, const DQ&, BatchLayout) const {}

  /// Runs every head on its columns.
  template <class Queries, class Keys, class Values, class Out>
  void run(const Queries& Q, const Keys& K, const Values& V, Out& out, BatchLayout layout) const {
    const Index d = Q.cols() / layout.heads;
    const Index dv = V.cols() / layout.heads;
    for_each_head_call(Q, K, V, layout, [&](const auto& head, Index h) {
      head.compute(detail::columns_of(Q, h * d, d), detail::columns_of(K, h * d, d),
                   detail::columns_of(V, h * dv, dv), detail::columns_of(out, h * dv, dv),
                   BatchLayout{layout.sequences, 1});
    });
  }

  /// Calls `call(head, h)` for every head h (the threads as the class comment says) and rethrows
  /// the failure of the lowest-numbered head that fails (heads that run in parallel all run
  /// first): an `InvalidArgument` gets the head's columns of the caller's Q, K and V in front of
  /// the head's own message, which names the head's slice.
  template <class Queries, class Keys, class Values, class Call>
  void for_each_head_call(const Queries& Q, const Keys& K, const Values& V, BatchLayout layout,
                          const Call& call) const {
    const Index H = layout.heads;
    const Index d = Q.cols() / H;
    const Index dv = V.cols() / H;
    std::vector<std::exception_ptr> failures(static_cast<std::size_t>(H));
    const auto attend = [&](Index h) {
      try {
        detail::visit_head(heads_, h, [&](const auto& head) { call(head, h); });
      } catch (const InvalidArgument& error) {
        failures[std::size_t(h)] = std::make_exception_ptr(InvalidArgument(detail::concat(
            "MultiHead: head ", h, " of ", H, " (columns [", h * d, ", ", (h + 1) * d, ") of Q ",
            detail::shape_of(Q), " and K ", detail::shape_of(K), ", columns [", h * dv, ", ",
            (h + 1) * dv, ") of V ", detail::shape_of(V), ", ", layout.sequences,
            " sequence(s)): ", error.what())));
      } catch (...) {
        failures[std::size_t(h)] = std::current_exception();
      }
    };
    const int threads = resolve_thread_count(options_.threads);
    if (H % threads == 0) {
      parallel_for(H, threads, attend);
    } else {
      for (Index h = 0; h < H; ++h) {
        attend(h);
        if (failures[std::size_t(h)]) break;
      }
    }
    for (const std::exception_ptr& failure : failures)
      if (failure) std::rethrow_exception(failure);
  }

  /// Gives every head that has `set_threads` the multi-head's thread count.
  void share_threads() {
    detail::for_each_head(heads_, [&](auto& head) {
      if constexpr (requires { head.set_threads(options_.threads); })
        head.set_threads(options_.threads);
    });
  }

  HeadContainer heads_;
  MultiHeadOptions options_{};
};

}  // namespace kernattn
