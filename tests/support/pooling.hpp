// Pooled references for Attention-SH (ScaledHead) in the tests: windows of r tokens averaged in
// double, which queries see them, and the partial windows of the causal rule (docs/primal_dual.md).
#pragma once

#include <algorithm>
#include <utility>

#include "reference.hpp"

namespace ref {

/// ceil(n / r) without overflow, whatever r >= 1.
inline Index window_count(Index n, Index r) { return n / r + (n % r != 0 ? 1 : 0); }

/// The mean of rows [begin, end) of x, summed in double in order and rounded to T.
template <class T>
ref::Row mean_of(const MatrixXd& x, Index begin, Index end) {
  ref::Row out(x.cols());
  for (Index c = 0; c < x.cols(); ++c) {
    double sum = 0;
    for (Index j = begin; j < end; ++j) sum += x(j, c);
    out(c) = double(T(sum / double(end - begin)));
  }
  return out;
}

/// The rows of x averaged over windows of r (the last one ragged), summed in double in order and
/// rounded to T.
template <class T>
MatrixXd pooled(const MatrixXd& x, Index r) {
  const Index windows = window_count(x.rows(), r);
  MatrixXd out(windows, x.cols());
  for (Index w = 0; w < windows; ++w)
    out.row(w) = mean_of<T>(x, w * r, w * r + std::min(r, x.rows() - w * r));
  return out;
}

/// Query i sees window w only if it sees every token in it.
inline ref::Visibility pooled_visibility(const ref::Visibility& tokens, Index r) {
  const Index windows = window_count(tokens.cols(), r);
  ref::Visibility out(tokens.rows(), windows);
  for (Index i = 0; i < tokens.rows(); ++i)
    for (Index w = 0; w < windows; ++w) {
      const Index size = std::min(r, tokens.cols() - w * r);
      out(i, w) = tokens.row(i).segment(w * r, size).all();
    }
  return out;
}

template <class T>
ref::Problem pooled_problem(const ref::Problem& p, Index r) {
  return {p.Q, pooled<T>(p.K, r), pooled<T>(p.V, r)};
}

/// t_i: query i may see tokens [0, t_i) under the bottom-right causal mask.
inline Index causal_limit(Index i, Index nq, Index nk) {
  return std::clamp<Index>(i + nk - nq + 1, 0, nk);
}

/// What ScaledHead gives its head under a causal filter whose token visibility is `tokens` (the
/// causal mask, possibly with padding): the W windows of K and V, then one partial window per
/// query, the mean of tokens [t_i - t_i mod r, t_i) when t_i is neither a multiple of r nor N
/// (zeros otherwise). Query i sees a window when it sees all of its tokens, and its own partial
/// window when it has one and sees all of its tokens.
template <class T>
std::pair<ref::Problem, ref::Visibility> pooled_causal(const ref::Problem& p, Index r,
                                                       const ref::Visibility& tokens) {
  const Index nq = p.Q.rows();
  const Index nk = p.K.rows();
  const Index windows = window_count(nk, r);
  ref::Problem out{p.Q, MatrixXd::Zero(windows + nq, p.K.cols()),
                   MatrixXd::Zero(windows + nq, p.V.cols())};
  out.K.topRows(windows) = pooled<T>(p.K, r);
  out.V.topRows(windows) = pooled<T>(p.V, r);
  ref::Visibility visible = ref::Visibility::Constant(nq, windows + nq, false);
  visible.leftCols(windows) = pooled_visibility(tokens, r);
  for (Index i = 0; i < nq; ++i) {
    const Index t = causal_limit(i, nq, nk);
    if (t == nk || t % r == 0) continue;
    const Index begin = t - t % r;
    out.K.row(windows + i) = mean_of<T>(p.K, begin, t);
    out.V.row(windows + i) = mean_of<T>(p.V, begin, t);
    visible(i, windows + i) = tokens.row(i).segment(begin, t - begin).all();
  }
  return {out, visible};
}

}  // namespace ref
