// The one Catch2 header every kernattn test includes: it works with Catch2 v2 and v3.
#pragma once

#if defined(KERNATTN_CATCH2_V3)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_exception.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif

#include <string>

/// The scalar types of the templated tests that name them: float and double, or float alone where
/// the build defines KERNATTN_TEST_FLOAT_ONLY (the sanitizer build, whose compile time doubles with
/// every instantiation: docs/portability.md).
#if defined(KERNATTN_TEST_FLOAT_ONLY)
#define KERNATTN_TEST_SCALARS float
#else
#define KERNATTN_TEST_SCALARS float, double
#endif

/// A matcher for an exception message containing `fragment` (v3 renamed the string matcher
/// Contains to ContainsSubstring).
inline auto message_contains(const std::string& fragment) {
#if defined(KERNATTN_CATCH2_V3)
  return Catch::Matchers::ContainsSubstring(fragment);
#else
  return Catch::Matchers::Contains(fragment);
#endif
}
