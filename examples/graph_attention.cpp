// graph_attention: attention over the neighbourhoods of a sparse graph (GAT-style).
//
// A stochastic block model: 6 communities of 50 nodes on a ring, dense inside a community and
// sparse between neighbouring communities. Each node's features are its community's centre plus
// noise. Node i attends to its neighbours (and itself) with w_ij = kappa(x_i, x_j) mu(x_j):
// an RBF kernel times an L^3 magnitude, in O(edges * d) time.
//
// The values are the one-hot community memberships, so output row i is the attention mass node i
// puts on each community. The program prints it for a few nodes next to what uniform weights
// (mean aggregation) would give: attention concentrates on the node's own community, because
// the kernel sees that those neighbours' features are closer.
//
// Exit status: 0; 1 when the self-check fails (the graph engine must agree with the dense
// engine under the equivalent boolean mask).

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <kernattn/attention/graph_attention.hpp>
#include <kernattn/kernattn.hpp>
#include <random>
#include <vector>

namespace {

namespace kernels = kernattn::kernels;
namespace magnitude = kernattn::magnitude;
using kernattn::Index;
using Mat = kernattn::Matrix<float>;

constexpr Index kCommunities = 6;
constexpr Index kCommunitySize = 50;
constexpr Index kNodes = kCommunities * kCommunitySize;
constexpr Index kFeatures = 16;      // d
constexpr double kInside = 0.12;     // edge probability inside a community
constexpr double kNeighbour = 0.02;  // ... between neighbouring communities on the ring
constexpr unsigned kSeed = 7;
/// Both engines compute the same weights in float and sum them in another order; a wrong
/// neighbourhood or weight would move an attention mass by 1e-2 or more.
constexpr float kTolerance = 1e-4f;

Index community_of(Index node) { return node / kCommunitySize; }

/// A uniform number in [0, 1) from the generator's bits (the same on every platform).
double uniform(std::mt19937& generator) { return double(generator()) / 4294967296.0; }

/// The undirected stochastic block model, row i = the neighbours of node i (one stored entry per
/// direction of each edge).
Eigen::SparseMatrix<float, Eigen::RowMajor> ring_of_communities(std::mt19937& generator) {
  std::vector<Eigen::Triplet<float>> edges;
  for (Index i = 0; i < kNodes; ++i)
    for (Index j = i + 1; j < kNodes; ++j) {
      const Index apart = std::abs(community_of(i) - community_of(j));
      const double p = apart == 0                                ? kInside
                       : apart == 1 || apart == kCommunities - 1 ? kNeighbour
                                                                 : 0.0;
      if (uniform(generator) < p) {
        edges.emplace_back(i, j, 1.0f);
        edges.emplace_back(j, i, 1.0f);
      }
    }
  Eigen::SparseMatrix<float, Eigen::RowMajor> adjacency(kNodes, kNodes);
  adjacency.setFromTriplets(edges.begin(), edges.end());
  return adjacency;
}

/// Each community's centre (entries uniform on [-1, 1)) plus noise uniform on [-0.75, 0.75).
Mat node_features(std::mt19937& generator) {
  Mat centres(kCommunities, kFeatures), x(kNodes, kFeatures);
  for (float& c : centres.reshaped()) c = float(2 * uniform(generator) - 1);
  for (Index i = 0; i < kNodes; ++i)
    for (Index l = 0; l < kFeatures; ++l)
      x(i, l) = centres(community_of(i), l) + float(1.5 * uniform(generator) - 0.75);
  return x;
}

}  // namespace

int main() {
  std::mt19937 generator(kSeed);
  const Eigen::SparseMatrix<float, Eigen::RowMajor> adjacency = ring_of_communities(generator);
  const Mat x = node_features(generator);
  Mat membership = Mat::Zero(kNodes, kCommunities);
  for (Index i = 0; i < kNodes; ++i) membership(i, community_of(i)) = 1;

  // Queries = keys = the node features; values = the memberships. Every node also sees itself.
  using Graph = kernattn::GraphAttention<kernels::Rbf<float>, magnitude::Lp<float>>;
  const Graph attention(kernels::Rbf<float>(), magnitude::Lp<float>(3.0f),
                        kernattn::GraphOptions{.add_self_loops = true});
  const Mat mass = attention(adjacency, x, x, membership);

  std::printf(
      "Graph attention on a ring of %td communities x %td nodes (edge probability %.2f "
      "inside, %.2f to the next community), d = %td, RBF kernel x L^3 magnitude, "
      "self-loops, %td directed edges.\n\n",
      kCommunities, kCommunitySize, kInside, kNeighbour, kFeatures, adjacency.nonZeros());
  std::printf("node  community  neighbours  share of own community: uniform  attention\n");
  double uniform_share = 0, attention_share = 0;
  for (Index i = 0; i < kNodes; ++i) {
    Index degree = 0, same = 0;
    for (Eigen::SparseMatrix<float, Eigen::RowMajor>::InnerIterator edge(adjacency, i); edge;
         ++edge) {
      ++degree;
      same += community_of(edge.col()) == community_of(i) ? 1 : 0;
    }
    // Uniform weights over N(i) and i itself.
    const double uniform_own = double(same + 1) / double(degree + 1);
    const double attention_own = mass(i, community_of(i));
    uniform_share += uniform_own / kNodes;
    attention_share += attention_own / kNodes;
    if (i % 37 == 0)
      std::printf("%4td  %9td  %10td  %30.3f  %9.3f\n", i, community_of(i), degree, uniform_own,
                  attention_own);
  }
  std::printf("mean over all %td nodes: %38.3f  %9.3f\n\n", kNodes, uniform_share, attention_share);

  // Self-check: the dense engine with the same graph (plus the diagonal) as a boolean mask.
  kernattn::mask::Boolean::Matrix visible = Mat(adjacency).array() != 0;
  visible.matrix().diagonal().setConstant(true);
  const kernattn::Attention<kernels::Rbf<float>, magnitude::Lp<float>, kernattn::mask::Boolean>
      dense(kernels::Rbf<float>(), magnitude::Lp<float>(3.0f), kernattn::mask::Boolean(visible));
  const float difference = (dense(x, x, membership) - mass).cwiseAbs().maxCoeff();
  const bool ok = difference <= kTolerance && mass.allFinite();
  std::printf(
      "self-check against the dense engine with a boolean mask: max |difference| = %.2g "
      "(tolerance %.0e): %s\n",
      double(difference), double(kTolerance), ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
