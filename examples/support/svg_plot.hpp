#pragma once
// A small SVG plot for the examples' pictures: line series and density histograms on linear
// axes, with a legend; no dependency beyond the standard library.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace svg {

class Plot {
 public:
  Plot(std::string title, std::string x_label, std::string y_label)
      : title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)) {}

  /// A polyline through (x[i], y[i]).
  void line(std::vector<double> x, std::vector<double> y, std::string label) {
    if (x.size() != y.size() || x.empty())
      throw std::invalid_argument("svg::Plot::line: x and y must have one equal, non-zero size");
    series_.push_back({std::move(x), std::move(y), std::move(label), false, 0.0});
  }

  /// The histogram of `values` over `bins` equal bins of [low, high], as a density (each bar's
  /// height is its share of the values divided by the bin width); values outside are dropped.
  void histogram(const std::vector<double>& values, double low, double high, int bins,
                 std::string label) {
    if (!(high > low) || bins < 1 || values.empty())
      throw std::invalid_argument("svg::Plot::histogram: needs high > low, bins >= 1, values");
    const double width = (high - low) / bins;
    std::vector<double> x, y(std::size_t(bins), 0.0);
    for (int b = 0; b < bins; ++b) x.push_back(low + (b + 0.5) * width);
    for (const double v : values)
      if (v >= low && v < high) y[std::size_t((v - low) / width)] += 1.0;
    for (double& count : y) count /= double(values.size()) * width;
    series_.push_back({std::move(x), std::move(y), std::move(label), true, width});
  }

  /// Draws the vertical axis up to `top` (instead of the largest value); lines above it are cut
  /// at the frame.
  void limit_y(double top) { y_limit_ = top; }

  void write(const std::string& path) const {
    std::ofstream file(path);
    if (!file) throw std::runtime_error("svg::Plot::write: cannot open " + path);
    file << render();
  }

 private:
  struct Series {
    std::vector<double> x, y;
    std::string label;
    bool bars;
    double bar_width;
  };
  static constexpr double width_ = 720, height_ = 420, left_ = 70, right_ = 20, top_ = 40,
                          bottom_ = 50;

  [[nodiscard]] static std::string number(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.4g", v);
    return text;
  }

  [[nodiscard]] std::string render() const {
    double x_low = INFINITY, x_high = -INFINITY, y_high = 0.0;
    for (const Series& s : series_) {
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        x_low = std::min(x_low, s.x[i] - 0.5 * s.bar_width);
        x_high = std::max(x_high, s.x[i] + 0.5 * s.bar_width);
        y_high = std::max(y_high, s.y[i]);
      }
    }
    if (!(x_high > x_low)) x_high = x_low + 1.0;
    if (!(y_high > 0.0)) y_high = 1.0;
    y_high = y_limit_ > 0.0 ? y_limit_ : 1.05 * y_high;
    const double plot_w = width_ - left_ - right_, plot_h = height_ - top_ - bottom_;
    const auto px = [&](double x) { return left_ + (x - x_low) / (x_high - x_low) * plot_w; };
    const auto py = [&](double y) { return top_ + plot_h - y / y_high * plot_h; };
    static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                    "#9467bd", "#8c564b", "#17becf"};

    std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + number(width_) +
                      "\" height=\"" + number(height_) +
                      "\" font-family=\"sans-serif\" font-size=\"12\">\n"
                      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    out += "<text x=\"" + number(width_ / 2) +
           "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" + title_ + "</text>\n";
    out += "<rect x=\"" + number(left_) + "\" y=\"" + number(top_) + "\" width=\"" +
           number(plot_w) + "\" height=\"" + number(plot_h) +
           "\" fill=\"none\" stroke=\"black\"/>\n";
    for (int t = 0; t <= 5; ++t) {
      const double x = x_low + (x_high - x_low) * t / 5.0, y = y_high * t / 5.0;
      out += "<text x=\"" + number(px(x)) + "\" y=\"" + number(top_ + plot_h + 16) +
             "\" text-anchor=\"middle\">" + number(x) + "</text>\n";
      out += "<text x=\"" + number(left_ - 6) + "\" y=\"" + number(py(y) + 4) +
             "\" text-anchor=\"end\">" + number(y) + "</text>\n";
    }
    out += "<text x=\"" + number(left_ + plot_w / 2) + "\" y=\"" + number(height_ - 10) +
           "\" text-anchor=\"middle\">" + x_label_ + "</text>\n";
    out += "<text transform=\"translate(16," + number(top_ + plot_h / 2) +
           ") rotate(-90)\" text-anchor=\"middle\">" + y_label_ + "</text>\n";
    for (std::size_t k = 0; k < series_.size(); ++k) {
      const Series& s = series_[k];
      const std::string colour = colours[k % std::size(colours)];
      if (s.bars) {
        for (std::size_t i = 0; i < s.x.size(); ++i)
          out += "<rect x=\"" + number(px(s.x[i] - 0.5 * s.bar_width)) + "\" y=\"" +
                 number(py(s.y[i])) + "\" width=\"" +
                 number(px(s.x[i] + 0.5 * s.bar_width) - px(s.x[i] - 0.5 * s.bar_width)) +
                 "\" height=\"" + number(py(0.0) - py(s.y[i])) + "\" fill=\"" + colour +
                 "\" fill-opacity=\"0.5\"/>\n";
      } else {
        out += "<polyline fill=\"none\" stroke-width=\"1.8\" stroke=\"" + colour + "\" points=\"";
        for (std::size_t i = 0; i < s.x.size(); ++i)
          out += number(px(s.x[i])) + "," + number(py(std::min(s.y[i], y_high))) + " ";
        out += "\"/>\n";
      }
      const double ly = top_ + 16 + 16 * double(k);
      out += "<rect x=\"" + number(width_ - right_ - 250) + "\" y=\"" + number(ly - 9) +
             "\" width=\"14\" height=\"10\" fill=\"" + colour + "\"/>\n";
      out += "<text x=\"" + number(width_ - right_ - 230) + "\" y=\"" + number(ly) + "\">" +
             s.label + "</text>\n";
    }
    return out + "</svg>\n";
  }

  std::string title_, x_label_, y_label_;
  std::vector<Series> series_;
  double y_limit_ = 0.0;
};

}  // namespace svg
