// Ring attention (context parallelism) over MPI: the sequence is split into one block of tokens
// per process. Each process keeps its queries and passes its keys and values round the ring; it
// attends its queries to every block that reaches it and merges the partial results through
// their row statistics (merge_partial_result, docs/conventions.md "Attention across processes").
// The next block travels while the current one is attended. Causal and non-causal RBF x L^3;
// process 0 compares the gathered output with one single-process call over the whole sequence
// and the program fails if they differ by more than rounding.
//
// Run: mpirun -n 4 ./ring_attention
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <kernattn/kernattn.hpp>
#include <random>
#include <utility>

namespace {

using kernattn::Index;
using kernattn::Matrix;
/// One token per row, rows contiguous: a block of tokens is one MPI buffer.
using Tokens = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Kernel = kernattn::kernels::Rbf<double>;
using Magnitude = kernattn::magnitude::Lp<double>;
using Full = kernattn::Attention<Kernel, Magnitude>;
using Causal = kernattn::Attention<Kernel, Magnitude, kernattn::mask::Causal>;

constexpr Index sequence_length = 1024, d = 64, dv = 64;

Tokens normal_tokens(Index rows, Index cols, unsigned seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal;
  Tokens tokens(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) tokens(i, j) = normal(generator);
  return tokens;
}

/// Sends `block` to `to` and receives its successor from `from`, without waiting: the requests
/// go into `requests`.
void pass_on(const Tokens& block, Tokens& successor, int to, int from, MPI_Request* requests) {
  const int count = static_cast<int>(block.size());
  MPI_Isend(block.data(), count, MPI_DOUBLE, to, 0, MPI_COMM_WORLD, &requests[0]);
  MPI_Irecv(successor.data(), count, MPI_DOUBLE, from, 0, MPI_COMM_WORLD, &requests[1]);
}

/// This process's rows of attention over the whole sequence, its queries `q` against the keys and
/// values of every process. Step s attends the block of process (rank - s) mod P, which the ring
/// has brought here, while the next block is on its way. Causal: the own block is the diagonal
/// (causal within it), a block of earlier tokens is seen whole and one of later tokens is skipped.
Matrix<double> ring_attention(const Full& full, const Causal& causal_diagonal, bool causal,
                              const Tokens& q, Tokens k, Tokens v, int rank, int processes) {
  const int next = (rank + 1) % processes;
  const int previous = (rank + processes - 1) % processes;
  Tokens incoming_k(k.rows(), k.cols()), incoming_v(v.rows(), v.cols());
  Matrix<double> out(q.rows(), dv), statistics;
  Matrix<double> part(q.rows(), dv), part_statistics;
  for (int step = 0; step < processes; ++step) {
    const int source = (rank - step + processes) % processes;
    MPI_Request requests[4];
    const bool more = step + 1 < processes;
    if (more) {
      pass_on(k, incoming_k, next, previous, requests);
      pass_on(v, incoming_v, next, previous, requests + 2);
    }
    if (step == 0) {
      if (causal)
        causal_diagonal.compute(q, k, v, out, statistics);
      else
        full.compute(q, k, v, out, statistics);
    } else if (!causal || source < rank) {
      full.compute(q, k, v, part, part_statistics);
      kernattn::merge_partial_result(out, statistics, part, part_statistics, Full::row_statistic);
    }
    if (more) {
      MPI_Waitall(4, requests, MPI_STATUSES_IGNORE);
      std::swap(k, incoming_k);
      std::swap(v, incoming_v);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, processes = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &processes);
  if (sequence_length % processes != 0) {
    if (rank == 0)
      std::fprintf(stderr, "ring_attention: %lld tokens do not split over %d processes\n",
                   static_cast<long long>(sequence_length), processes);
    MPI_Finalize();
    return 1;
  }
  const Index block = sequence_length / processes;

  // Process 0 draws the sequence (standard normal entries) and scatters one block of tokens to
  // each process.
  Tokens Q, K, V;
  if (rank == 0) {
    Q = normal_tokens(sequence_length, d, 1);
    K = normal_tokens(sequence_length, d, 2);
    V = normal_tokens(sequence_length, dv, 3);
  }
  Tokens q(block, d), k(block, d), v(block, dv);
  const auto scatter = [&](const Tokens& all, Tokens& mine) {
    const int count = static_cast<int>(mine.size());
    MPI_Scatter(all.data(), count, MPI_DOUBLE, mine.data(), count, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  };
  scatter(Q, q);
  scatter(K, k);
  scatter(V, v);

  // One thread per process: the processes are the parallelism.
  Full full({}, Magnitude(3.0));
  Causal causal_diagonal({}, Magnitude(3.0));
  full.set_threads(1);
  causal_diagonal.set_threads(1);

  int failed = 0;
  for (const bool causal : {false, true}) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double start = MPI_Wtime();
    const Matrix<double> out =
        ring_attention(full, causal_diagonal, causal, q, k, v, rank, processes);
    const double ring_seconds = MPI_Wtime() - start;
    const Tokens mine = out;
    Tokens gathered(rank == 0 ? sequence_length : 0, dv);
    MPI_Gather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, gathered.data(),
               static_cast<int>(mine.size()), MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      const double single_start = MPI_Wtime();
      const Matrix<double> single = causal ? causal_diagonal(Q, K, V) : full(Q, K, V);
      const double single_seconds = MPI_Wtime() - single_start;
      const double difference = (gathered - single).cwiseAbs().maxCoeff();
      const double scale = single.cwiseAbs().maxCoeff();
      const bool agrees = difference <= 1e-12 * scale;
      failed |= agrees ? 0 : 1;
      std::printf(
          "%-10s %d processes x %lld tokens: ring %.1f ms, one process %.1f ms, largest "
          "difference %.2e (of outputs up to %.2f) %s\n",
          causal ? "causal" : "non-causal", processes, static_cast<long long>(block),
          1e3 * ring_seconds, 1e3 * single_seconds, difference, scale, agrees ? "ok" : "DIFFERENT");
    }
  }
  MPI_Bcast(&failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return failed;
}
