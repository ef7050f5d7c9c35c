#pragma once
/// \file
/// kernattn: attention as a kernel smoother, composed at compile time on Eigen matrices.
/// Including this header brings in the whole library.

#include "kernattn/attention/attention.hpp"
#include "kernattn/attention/options.hpp"
#include "kernattn/core/aliasing.hpp"
#include "kernattn/core/errors.hpp"
#include "kernattn/core/log_sum_exp.hpp"
#include "kernattn/core/scalar_traits.hpp"
#include "kernattn/core/threading.hpp"
#include "kernattn/kernels/exponential.hpp"
#include "kernattn/kernels/kernel.hpp"
#include "kernattn/kernels/linear.hpp"
#include "kernattn/kernels/matern.hpp"
#include "kernattn/kernels/polynomial.hpp"
#include "kernattn/kernels/rational_quadratic.hpp"
#include "kernattn/kernels/rbf.hpp"
#include "kernattn/magnitude/lp.hpp"
#include "kernattn/magnitude/magnitude.hpp"
#include "kernattn/magnitude/none.hpp"
#include "kernattn/mask/boolean.hpp"
#include "kernattn/mask/causal.hpp"
#include "kernattn/mask/intersection.hpp"
#include "kernattn/mask/key_padding.hpp"
#include "kernattn/mask/mask.hpp"
#include "kernattn/mask/none.hpp"
#include "kernattn/mask/window.hpp"
