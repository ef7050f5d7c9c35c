# Configures, builds and runs examples/consumer against an installed kernattn.
# Run by the packaging.consumer test as
#   cmake -D SOURCE_DIR=... -D BINARY_DIR=... -D PREFIX=... -D GENERATOR=...
#         -D MAKE_PROGRAM=... -D CXX_COMPILER=... [-D BUILD_TYPE=...] -P ConsumerTest.cmake
# Any failing step, including a wrong result from the consumer program, fails the test.

foreach(var IN ITEMS SOURCE_DIR BINARY_DIR PREFIX GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "ConsumerTest.cmake: ${var} is not set")
  endif()
endforeach()

if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()

# Start from a fresh build tree so the package is really looked up again.
file(REMOVE_RECURSE "${BINARY_DIR}")

set(configure_args
  -S "${SOURCE_DIR}" -B "${BINARY_DIR}" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
  "-DCMAKE_PREFIX_PATH=${PREFIX}"
  "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()

execute_process(COMMAND "${CMAKE_COMMAND}" ${configure_args} COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BINARY_DIR}" --config "${BUILD_TYPE}"
  COMMAND_ERROR_IS_FATAL ANY)
# The consumer registers itself as a test, so ctest finds it whatever the generator.
execute_process(
  COMMAND "${CMAKE_CTEST_COMMAND}" --test-dir "${BINARY_DIR}" -C "${BUILD_TYPE}"
    --output-on-failure --no-tests=error
  COMMAND_ERROR_IS_FATAL ANY)
