// Small helpers the plugins' shape rules share: dims as text for messages, and comparisons of
// dims that may still be unknown (-1, as at build time for dynamic dimensions).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace qwen35_trt::plugins {

// "[T, 2, 16]" for error messages ("[] (a scalar)" for rank 0).
inline std::string dims_str(const std::vector<int64_t>& d) {
  if (d.empty()) return "[] (a scalar)";
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// a != b where both are known.
inline bool conflict(int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; }

// The first known value among `values` (-1 when none is known).
inline int64_t first_known(std::initializer_list<int64_t> values) {
  for (int64_t v : values) {
    if (v >= 0) return v;
  }
  return -1;
}

}  // namespace qwen35_trt::plugins
