// Minimal test harness for the ctest executables: no framework, nothing to download.
// CHECK(cond) and CHECK_THROWS(expr, substring) record failures and keep going; main() ends with
// `return qwen35_trt::test::report();`, which prints "N passed, N failed" and sets the exit code.
#pragma once

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

namespace qwen35_trt::test {

inline int& passed() {
  static int n = 0;
  return n;
}
inline int& failed() {
  static int n = 0;
  return n;
}

inline void record(bool ok, const char* file, int line, const std::string& what) {
  if (ok) {
    ++passed();
  } else {
    ++failed();
    std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
  }
}

inline int report() {
  std::printf("%d passed, %d failed\n", passed(), failed());
  return failed() == 0 ? 0 : 1;
}

}  // namespace qwen35_trt::test

#define CHECK(cond) ::qwen35_trt::test::record(static_cast<bool>(cond), __FILE__, __LINE__, #cond)

#define CHECK_MSG(cond, msg)                                                                    \
  ::qwen35_trt::test::record(static_cast<bool>(cond), __FILE__, __LINE__,                       \
                             std::string(#cond) + " -- " + (msg))

// Passes when `expr` throws std::invalid_argument whose message contains `substring`.
#define CHECK_THROWS(expr, substring)                                                           \
  do {                                                                                          \
    std::string qwen35_what_;                                                                   \
    bool qwen35_ok_ = false;                                                                    \
    try {                                                                                       \
      expr;                                                                                     \
      qwen35_what_ = "no exception";                                                            \
    } catch (const std::invalid_argument& e) {                                                  \
      qwen35_what_ = e.what();                                                                  \
      qwen35_ok_ = qwen35_what_.find(substring) != std::string::npos;                           \
    } catch (const std::exception& e) {                                                         \
      qwen35_what_ = std::string("wrong exception type: ") + e.what();                          \
    }                                                                                           \
    ::qwen35_trt::test::record(qwen35_ok_, __FILE__, __LINE__,                                  \
                               std::string(#expr) + " should throw invalid_argument containing '" + \
                                   (substring) + "', got: " + qwen35_what_);                    \
  } while (0)
