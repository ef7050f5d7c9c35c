// The check every error test makes: an expression throws kernattn::InvalidArgument, which is a
// std::invalid_argument, with a message that contains a given fragment.
#pragma once

#include <stdexcept>

#include "catch.hpp"
#include "kernattn/core/errors.hpp"

/// Requires `expression` to throw kernattn::InvalidArgument (a std::invalid_argument) with a
/// message containing `fragment`.
#define REQUIRE_INVALID_ARGUMENT(expression, fragment)           \
  do {                                                           \
    REQUIRE_THROWS_AS(expression, kernattn::InvalidArgument);    \
    REQUIRE_THROWS_AS(expression, std::invalid_argument);        \
    REQUIRE_THROWS_WITH(expression, message_contains(fragment)); \
  } while (false)
