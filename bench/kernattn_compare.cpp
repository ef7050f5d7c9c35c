// kernattn_compare: kernels compared on the problems a researcher chooses, without writing C++.
//
// Every combination of the chosen kernels, magnitudes, masks, N, d and scalar types runs through
// the catalogue of comparison.hpp (the code path of `kernattn_bench --grid`), timed by Google
// Benchmark (the median of the repetitions' wall-clock times), and is printed as a table: time,
// GFLOP/s (credited with the flops of the pairs its mask lets through: comparison.hpp) and the
// relative difference ‖out − out_softmax‖_F / ‖out_softmax‖_F from exact softmax attention with
// the same mask. `--accuracy` adds the random-feature estimators' error against the number of
// frequencies M (bench/estimator_accuracy.hpp). `--json FILE` writes every row, for
// bench/plot_comparison.py.
//
// Exit status: 0; 2 for a bad argument (one line naming it and the valid choices).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <kernattn/kernattn.hpp>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "comparison.hpp"
#include "estimator_accuracy.hpp"

namespace {

using kernattn::Index;
using kernattn_bench::Configuration;

constexpr const char* kUsage = R"(usage: kernattn_compare [options]

Compares attention kernels on fixed-seed problems (entries uniform with unit variance, N queries
= N keys, d_v = d): every combination of the lists below, one row each.

  --kernels LIST     default softmax,rbf,laplacian,matern32,rq; "all" for every one of
                     %s
                     (positional: softmax over the features times RBF over 16 sinusoidal
                     position coordinates; bn: Attention-BN of softmax; sh: Attention-SH of
                     softmax, keys pooled by 4; favor: FAVOR+ and fourier: Fourier features of
                     the RBF kernel, both in the linear-time engine with M frequencies)
  --magnitude LIST   none, lp:<p> (an L^p magnitude, e.g. lp:3); default none
  --mask LIST        none, causal, window:<w> (w keys before each query); default none
  --n LIST           tokens, default 1024
  --d LIST           head dimension, default 64
  --scalar LIST      float, double; default float
  --threads N        default 1 (0: the OpenMP default)
  --m M              frequencies of favor and fourier, default 256
  --repetitions R    timed repetitions (the median is reported), default 3
  --min-time S       seconds each repetition runs at least, default 0.2
  --json FILE        also write every row as JSON
  --accuracy LIST    also the error of random-feature estimators against their exact
                     attention as a function of M: %s, or all
  --accuracy-m LIST  default 16,32,64,128,256,512,1024
  --accuracy-n N     tokens of the accuracy study, default 1024
  --accuracy-d D     head dimension of the accuracy study, default 64
  --inputs LIST      unit, trained (docs/random_features.md); default unit,trained
  --seeds S          frequency draws averaged per point, default 3
  --help

Lists are comma-separated. With --accuracy and no --kernels, only the accuracy study runs. A
row the library refuses (Attention-BN under a causal mask, say) is
skipped with the reason. Adding a kernel, magnitude or mask: bench/comparison.hpp says where.
)";

/// A bad argument: main prints it on one line and exits with status 2.
struct UsageError {
  std::string message;
};

/// The comma-separated items of `option`'s value; an empty list is a usage error.
std::vector<std::string> split(const std::string& option, const std::string& list) {
  std::vector<std::string> items;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');) items.push_back(item);
  if (items.empty()) throw UsageError{option + ": empty list"};
  return items;
}

std::string joined(const std::vector<std::string>& names) {
  return kernattn_bench::joined(names, ",");
}

long long parse_integer(const std::string& option, const std::string& text, long long minimum) {
  std::size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || value < minimum)
    throw UsageError{option + ": expected an integer >= " + std::to_string(minimum) + ", got '" +
                     text + "'"};
  return value;
}

double parse_positive(const std::string& option, const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || !(value > 0) || !std::isfinite(value))
    throw UsageError{option + ": expected a number > 0, got '" + text + "'"};
  return value;
}

std::vector<Index> parse_sizes(const std::string& option, const std::string& list) {
  std::vector<Index> sizes;
  for (const auto& item : split(option, list))
    sizes.push_back(Index(parse_integer(option, item, 1)));
  return sizes;
}

/// `list`, with "all" replaced by `valid`; every name must be one of `valid`.
std::vector<std::string> parse_names(const std::string& option, const std::string& list,
                                     const std::vector<std::string>& valid) {
  if (list == "all") return valid;
  const auto names = split(option, list);
  for (const auto& name : names)
    if (std::find(valid.begin(), valid.end(), name) == valid.end())
      throw UsageError{option + ": unknown name '" + name + "'; valid: " + joined(valid) + ", all"};
  return names;
}

struct Options {
  std::vector<std::string> kernels{"softmax", "rbf", "laplacian", "matern32", "rq"};
  std::vector<std::string> magnitudes{"none"};
  std::vector<std::string> masks{"none"};
  std::vector<Index> sizes{1024};
  std::vector<Index> dimensions{64};
  std::vector<std::string> scalars{"float"};
  int threads = 1;
  Index frequencies = 256;
  int repetitions = 3;
  double min_time = 0.2;
  std::optional<std::string> json;
  std::vector<std::string> estimators;
  std::vector<Index> accuracy_frequencies{16, 32, 64, 128, 256, 512, 1024};
  Index accuracy_tokens = 1024;
  Index accuracy_dimension = 64;
  std::vector<std::string> inputs{"unit", "trained"};
  int seeds = 3;
  bool kernels_given = false;
  std::string command;
};

Options parse(int argc, char** argv) {
  Options options;
  options.command = "kernattn_compare";
  for (int i = 1; i < argc; ++i) options.command += std::string(" ") + argv[i];
  for (int i = 1; i < argc; ++i) {
    const std::string option = argv[i];
    if (option == "--help") {
      std::printf(kUsage, joined(kernattn_bench::kernel_names()).c_str(),
                  joined(kernattn_bench::estimator_names()).c_str());
      std::exit(0);
    }
    if (i + 1 >= argc) throw UsageError{option + ": unknown option or missing value (--help)"};
    const std::string value = argv[++i];
    if (option == "--kernels") {
      options.kernels = parse_names(option, value, kernattn_bench::kernel_names());
      options.kernels_given = true;
    } else if (option == "--magnitude") {
      options.magnitudes = split(option, value);
    } else if (option == "--mask") {
      options.masks = split(option, value);
    } else if (option == "--n") {
      options.sizes = parse_sizes(option, value);
    } else if (option == "--d") {
      options.dimensions = parse_sizes(option, value);
    } else if (option == "--scalar") {
      options.scalars = parse_names(option, value, {"float", "double"});
    } else if (option == "--threads") {
      options.threads = int(parse_integer(option, value, 0));
    } else if (option == "--m") {
      options.frequencies = Index(parse_integer(option, value, 1));
    } else if (option == "--repetitions") {
      options.repetitions = int(parse_integer(option, value, 1));
    } else if (option == "--min-time") {
      options.min_time = parse_positive(option, value);
    } else if (option == "--json") {
      options.json = value;
    } else if (option == "--accuracy") {
      options.estimators = parse_names(option, value, kernattn_bench::estimator_names());
    } else if (option == "--accuracy-m") {
      options.accuracy_frequencies = parse_sizes(option, value);
    } else if (option == "--accuracy-n") {
      options.accuracy_tokens = Index(parse_integer(option, value, 1));
    } else if (option == "--accuracy-d") {
      options.accuracy_dimension = Index(parse_integer(option, value, 1));
    } else if (option == "--inputs") {
      options.inputs = parse_names(option, value, kernattn_bench::input_names());
    } else if (option == "--seeds") {
      options.seeds = int(parse_integer(option, value, 1));
    } else {
      throw UsageError{"unknown option '" + option + "' (--help lists them)"};
    }
  }
  return options;
}

/// The configurations of the options, each checked by the catalogue (a bad magnitude or mask is
/// a usage error).
std::vector<Configuration> configurations(const Options& options) {
  try {
    return kernattn_bench::combinations({options.kernels, options.magnitudes, options.masks,
                                         options.scalars, options.sizes, options.dimensions,
                                         options.threads, options.frequencies});
  } catch (const kernattn::InvalidArgument& error) {
    throw UsageError{error.what()};
  }
}

/// A configuration with its measurements.
struct Row {
  Configuration configuration;
  double time_ms = 0;
  double gflops = 0;
  double difference_from_softmax = std::numeric_limits<double>::quiet_NaN();
};

/// Collects each repetition's wall-clock time (milliseconds) by benchmark name. (The catalogue's
/// loop never skips a run, so no error field, whose name differs between Google Benchmark
/// versions, is read.)
class TimeCollector final : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs)
      if (run.run_type == Run::RT_Iteration) {
        times_[run.run_name.function_name].push_back(run.GetAdjustedRealTime());
        std::fprintf(stderr, ".");
      }
  }
  [[nodiscard]] std::optional<double> median(const std::string& name) {
    auto& times = times_[name];
    if (times.empty()) return std::nullopt;
    std::sort(times.begin(), times.end());
    const std::size_t middle = times.size() / 2;
    return times.size() % 2 ? times[middle] : 0.5 * (times[middle - 1] + times[middle]);
  }

 private:
  std::map<std::string, std::vector<double>> times_;
};

double relative_difference(const kernattn::Matrix<double>& out,
                           const kernattn::Matrix<double>& reference) {
  return (out - reference).norm() / reference.norm();
}

/// Runs the configurations: each once for its difference from softmax (a refused one is
/// skipped with the reason), then all of them timed.
std::vector<Row> measure(const Options& options, std::vector<std::string>& skipped) {
  std::vector<Row> rows;
  std::map<std::string, kernattn::Matrix<double>> softmax_outputs;
  for (const Configuration& c : configurations(options)) {
    Row row{c};
    try {
      const Configuration reference = c.softmax_reference();
      if (!softmax_outputs.count(reference.name())) {
        const auto softmax = kernattn_bench::make_case(reference);
        softmax->run();
        softmax_outputs[reference.name()] = softmax->output();
      }
      const auto attention = kernattn_bench::make_case(c);
      attention->run();
      row.difference_from_softmax =
          relative_difference(attention->output(), softmax_outputs[reference.name()]);
    } catch (const kernattn::InvalidArgument& error) {
      skipped.push_back(c.name() + ": " + error.what());
      continue;
    }
    kernattn_bench::register_configuration(c)
        ->Repetitions(options.repetitions)
        ->MinTime(options.min_time);
    rows.push_back(row);
  }
  TimeCollector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  std::fprintf(stderr, "\n");
  for (Row& row : rows) {
    row.time_ms = collector.median("compare/" + row.configuration.name()).value_or(NAN);
    row.gflops = kernattn_bench::credited_flops(row.configuration) * 1e-6 / row.time_ms;
  }
  return rows;
}

void print_rows(const std::vector<Row>& rows) {
  std::printf("%-11s %-9s %-11s %-6s %6s %4s %5s %11s %9s %12s\n", "kernel", "magnitude", "mask",
              "scalar", "N", "d", "M", "time (ms)", "GFLOP/s", "vs softmax");
  for (const Row& row : rows) {
    const Configuration& c = row.configuration;
    const std::string m =
        kernattn_bench::is_linear_time(c.kernel) ? std::to_string(c.frequencies) : "-";
    std::printf("%-11s %-9s %-11s %-6s %6ld %4ld %5s %11.4g %9.1f %12.3e\n", c.kernel.c_str(),
                c.magnitude.c_str(), c.mask.c_str(), c.scalar.c_str(), long(c.n), long(c.d),
                m.c_str(), row.time_ms, row.gflops, row.difference_from_softmax);
  }
}

void print_accuracy(const std::vector<kernattn_bench::AccuracyPoint>& points) {
  std::printf("\n%-16s %-8s %5s %6s %4s %15s %14s %11s %11s  %s\n", "estimator", "inputs", "M", "N",
              "d", "relative error", "equal weights", "time (ms)", "exact (ms)", "reference");
  for (const auto& p : points)
    std::printf("%-16s %-8s %5ld %6ld %4ld %15.4e %14.4e %11.4g %11.4g  %s\n", p.estimator.c_str(),
                p.inputs.c_str(), long(p.m), long(p.n), long(p.d), p.relative_error,
                p.uniform_error, p.time_ms, p.exact_time_ms, p.reference.c_str());
}

/// `text` as a JSON string.
std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

/// `value` as a JSON number, or null when it is not finite.
std::string number(double value) {
  if (!std::isfinite(value)) return "null";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  return buffer;
}

void write_json(const std::string& path, const Options& options, const std::vector<Row>& rows,
                const std::vector<kernattn_bench::AccuracyPoint>& points,
                const std::vector<std::string>& skipped) {
  std::ofstream out(path);
  if (!out) throw UsageError{"--json: cannot write '" + path + "'"};
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  out << "{\n  \"context\": {\"command\": " << quoted(options.command)
      << ", \"threads\": " << options.threads << ", \"repetitions\": " << options.repetitions
      << ", \"date\": " << quoted(date) << "},\n  \"rows\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Configuration& c = row.configuration;
    const bool linear_time = kernattn_bench::is_linear_time(c.kernel);
    out << (i ? ",\n    " : "\n    ") << "{\"family\": " << quoted(linear_time ? "linear" : "exact")
        << ", \"kernel\": " << quoted(c.kernel) << ", \"magnitude\": " << quoted(c.magnitude)
        << ", \"mask\": " << quoted(c.mask) << ", \"scalar\": " << quoted(c.scalar)
        << ", \"n\": " << c.n << ", \"d\": " << c.d
        << ", \"m\": " << (linear_time ? c.frequencies : 0) << ", \"threads\": " << c.threads
        << ", \"time_ms\": " << number(row.time_ms) << ", \"gflops\": " << number(row.gflops)
        << ", \"difference_from_softmax\": " << number(row.difference_from_softmax) << "}";
  }
  out << "\n  ],\n  \"accuracy\": [";
  for (std::size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    out << (i ? ",\n    " : "\n    ") << "{\"estimator\": " << quoted(p.estimator)
        << ", \"inputs\": " << quoted(p.inputs) << ", \"m\": " << p.m << ", \"n\": " << p.n
        << ", \"d\": " << p.d << ", \"relative_error\": " << number(p.relative_error)
        << ", \"uniform_error\": " << number(p.uniform_error)
        << ", \"time_ms\": " << number(p.time_ms)
        << ", \"exact_time_ms\": " << number(p.exact_time_ms)
        << ", \"reference\": " << quoted(p.reference) << "}";
  }
  out << "\n  ],\n  \"skipped\": [";
  for (std::size_t i = 0; i < skipped.size(); ++i) out << (i ? ", " : "") << quoted(skipped[i]);
  out << "]\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::setNbThreads(1);
  try {
    const Options options = parse(argc, argv);
    int benchmark_argc = 1;
    benchmark::Initialize(&benchmark_argc, argv);

    std::vector<std::string> skipped;
    std::vector<Row> rows;
    if (options.kernels_given || options.estimators.empty()) {
      rows = measure(options, skipped);
      print_rows(rows);
      for (const auto& reason : skipped) std::printf("skipped %s\n", reason.c_str());
    }
    std::vector<kernattn_bench::AccuracyPoint> points;
    for (const auto& estimator : options.estimators)
      for (const auto& inputs : options.inputs)
        for (const auto& point : kernattn_bench::estimator_accuracy(
                 estimator, inputs, options.accuracy_frequencies, options.accuracy_tokens,
                 options.accuracy_dimension, options.threads, options.seeds))
          points.push_back(point);
    if (!points.empty()) print_accuracy(points);
    if (options.json) write_json(*options.json, options, rows, points, skipped);
  } catch (const UsageError& error) {
    std::fprintf(stderr, "kernattn_compare: %s\n", error.message.c_str());
    return 2;
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "kernattn_compare: %s\n", error.what());
    return 2;
  }
  return 0;
}
