#pragma once
/// \file
/// A small optimiser for the flat parameter vectors of docs/gradients.md: Adam (Kingma and Ba
/// 2015, with the bias corrections of `torch.optim.Adam`), a learning-rate schedule and
/// gradient-norm clipping (as `torch.nn.utils.clip_grad_norm_`).

#include <cmath>
#include <functional>
#include <numbers>
#include <utility>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn::optim {

/// A warm-up then cosine decay: the rate rises linearly from `peak / warmup` to `peak` over the
/// first `warmup` steps, then falls as \f$r + (p - r)(1 + \cos(\pi s))/2\f$ to `floor` r at step
/// `total`, \f$s\f$ the fraction of the decay done; `floor` after it. Steps count from 1.
struct WarmupCosine {
  double peak = 1e-3;
  Index warmup = 0;
  Index total = 1000;
  double floor = 0.0;

  [[nodiscard]] double operator()(Index step) const {
    if (step <= warmup) return peak * double(step) / double(warmup);
    if (step >= total) return floor;
    const double done = double(step - warmup) / double(total - warmup);
    return floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * done));
  }
};

/// The settings of `Adam`. `schedule(step)` gives the learning rate of step 1, 2, ... (a
/// constant `learning_rate` when empty); `clip_norm` > 0 scales a gradient whose Euclidean norm
/// exceeds it down by `clip_norm / (norm + 1e-6)` before it is used.
struct AdamOptions {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double clip_norm = 0.0;
  std::function<double(Index)> schedule = {};

  void validate() const {
    require(std::isfinite(learning_rate) && learning_rate >= 0.0,
            "AdamOptions: learning_rate must be a finite number >= 0, got ", learning_rate);
    require(beta1 >= 0.0 && beta1 < 1.0, "AdamOptions: beta1 must lie in [0, 1), got ", beta1);
    require(beta2 >= 0.0 && beta2 < 1.0, "AdamOptions: beta2 must lie in [0, 1), got ", beta2);
    require(std::isfinite(epsilon) && epsilon > 0.0,
            "AdamOptions: epsilon must be a finite number > 0, got ", epsilon);
    require(std::isfinite(clip_norm) && clip_norm >= 0.0,
            "AdamOptions: clip_norm must be a finite number >= 0 (0: no clipping), got ",
            clip_norm);
  }
};

/// Adam on a flat parameter vector \f$\theta\f$ of fixed size: at step t, with \f$g\f$ the
/// (clipped) gradient,
/// \f[ m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
///     \theta \leftarrow \theta - \eta_t\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} +
///     \epsilon}, \f]
/// in double, the update of `torch.optim.Adam` (without weight decay). A gradient or parameter
/// vector of the wrong size, or a gradient or parameter with a NaN or an infinity, throws
/// `InvalidArgument` and changes nothing (the step is not taken and not counted).
class Adam {
 public:
  explicit Adam(Index parameters, AdamOptions options = {})
      : options_(std::move(options)),
        first_(Eigen::VectorXd::Zero(parameters)),
        second_(Eigen::VectorXd::Zero(parameters)) {
    require(parameters >= 0, "Adam: the parameter count must be >= 0, got ", parameters);
    options_.validate();
  }

  /// One step on `parameters` with `gradient`; returns the learning rate it used.
  double step(Eigen::VectorXd& parameters, Eigen::VectorXd gradient) {
    require(parameters.size() == first_.size() && gradient.size() == first_.size(),
            "Adam::step: the optimiser holds ", first_.size(), " parameters, got ",
            parameters.size(), " parameters and a gradient of ", gradient.size());
    for (Index i = 0; i < gradient.size(); ++i) {
      require(std::isfinite(gradient(i)), "Adam::step: gradient entry ", i, " is ", gradient(i),
              "; the step is not taken");
      require(std::isfinite(parameters(i)), "Adam::step: parameter ", i, " is ", parameters(i),
              "; the step is not taken");
    }
    if (options_.clip_norm > 0.0) {
      const double norm = gradient.norm();
      const double factor = options_.clip_norm / (norm + 1e-6);
      if (factor < 1.0) gradient *= factor;
    }
    const Index t = steps_ + 1;
    const double rate = options_.schedule ? options_.schedule(t) : options_.learning_rate;
    require(std::isfinite(rate) && rate >= 0.0, "Adam::step: the schedule gave the rate ", rate,
            " for step ", t, "; it must be a finite number >= 0");
    first_ = options_.beta1 * first_ + (1.0 - options_.beta1) * gradient;
    second_ = options_.beta2 * second_ + (1.0 - options_.beta2) * gradient.cwiseAbs2();
    const double first_correction = 1.0 - std::pow(options_.beta1, double(t));
    const double second_correction = 1.0 - std::pow(options_.beta2, double(t));
    parameters.array() -= (rate / first_correction) * first_.array() /
                          ((second_.array() / second_correction).sqrt() + options_.epsilon);
    steps_ = t;
    return rate;
  }

  [[nodiscard]] Index steps() const { return steps_; }
  [[nodiscard]] const AdamOptions& options() const { return options_; }

 private:
  AdamOptions options_;
  Eigen::VectorXd first_;
  Eigen::VectorXd second_;
  Index steps_ = 0;
};

}  // namespace kernattn::optim
