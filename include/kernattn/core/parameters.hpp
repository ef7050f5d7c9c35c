#pragma once
/// \file
/// Trainable parameters as flat vectors (docs/gradients.md, "Parameters"): a component with
/// parameters (a kernel, a magnitude, a sampler, a generator) names their blocks
/// (`parameter_names()`, one value each unless `parameter_sizes()` says otherwise), gives their
/// values (`parameters(d)`, a default such as \f$1/\sqrt d\f$ resolved for head dimension d) and
/// returns a copy with other values (`with_parameters(values)`, each validated as the constructor
/// does).

#include <string>
#include <string_view>
#include <vector>

#include "kernattn/core/errors.hpp"
#include "kernattn/core/scalar_traits.hpp"

namespace kernattn {

/// Requires `values` to hold one value per name in `names` (`owner` names the caller).
inline void require_parameter_count(const Eigen::VectorXd& values,
                                    const std::vector<std::string>& names, std::string_view owner) {
  require(values.size() == Index(names.size()), owner, ": with_parameters takes ", names.size(),
          " value(s) but got ", values.size());
}

/// `names` with `prefix` and a dot before each.
[[nodiscard]] inline std::vector<std::string> prefixed(std::string_view prefix,
                                                       std::vector<std::string> names) {
  for (std::string& name : names) name = std::string(prefix) + "." + name;
  return names;
}

/// The sizes of the blocks that `component.parameter_names()` names: `parameter_sizes()` where
/// the component has blocks of several values (a network's weights), else one value per name.
template <class Component>
[[nodiscard]] std::vector<Index> parameter_sizes_of(const Component& component) {
  if constexpr (requires { component.parameter_sizes(); })
    return component.parameter_sizes();
  else
    return std::vector<Index>(component.parameter_names().size(), 1);
}

}  // namespace kernattn
