// Locations the test suite is given through the environment by ctest.
#pragma once
#include <cstdlib>
#include <string>

namespace maskrcnn::testing {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}
inline std::string fixtures_dir(const std::string& fixture) {
  return env_or("MASKRCNN_FIXTURES", MASKRCNN_TEST_FIXTURES) + "/" + fixture;
}
inline std::string shared_dir() { return env_or("MASKRCNN_SHARED", MASKRCNN_TEST_SHARED); }
inline std::string python() { return env_or("MASKRCNN_PYTHON", MASKRCNN_TEST_PYTHON); }
inline std::string maskrcnn_bin() { return env_or("MASKRCNN_BIN", MASKRCNN_TEST_BIN); }

}  // namespace maskrcnn::testing
