// The double configurations of the comparison catalogue (comparison_cases.hpp).
#include "comparison_cases.hpp"

namespace kernattn_bench {

std::unique_ptr<Case> make_double_case(const Configuration& configuration) {
  return comparison_detail::make_case_for<double>(configuration);
}

}  // namespace kernattn_bench
