// The float configurations of the comparison catalogue (comparison_cases.hpp).
#include "comparison_cases.hpp"

namespace kernattn_bench {

std::unique_ptr<Case> make_float_case(const Configuration& configuration) {
  return comparison_detail::make_case_for<float>(configuration);
}

}  // namespace kernattn_bench
