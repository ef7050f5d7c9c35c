/// \file
/// The exact engine with the distance kernels: a translation unit of its own, so that the fuzz
/// target's many compositions compile on two cores.

#include "exact.hpp"

namespace attention_fuzz {

void exact_distance_kernel(FuzzedDataProvider& data, const Problem& p, int choice) {
  switch (choice) {
    case 1:
      return with_magnitude(data, p, kernels::Rbf<Real>(decode_parameter(data)), true);
    case 2:
      return with_magnitude(data, p, kernels::Laplacian<Real>(decode_parameter(data)), true);
    case 3:
      return with_magnitude(data, p, kernels::Matern52<Real>(decode_parameter(data)), true);
    default: {
      const kernels::RationalQuadratic<Real> kernel(decode_parameter(data), decode_parameter(data));
      return with_magnitude(data, p, kernel, true);
    }
  }
}

}  // namespace attention_fuzz
