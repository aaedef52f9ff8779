// StrictArgs (strict_args.h): key checks and error messages of the dict / kwargs arguments.
#include "strict_args.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace qwen35_trt::bindings {
namespace {

// Levenshtein distance, for the "did you mean" hint of an unknown key.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::string type_of(py::handle v) { return py::str(py::type::handle_of(v).attr("__name__")); }

}  // namespace

StrictArgs::StrictArgs(py::handle obj, std::string op, std::vector<std::string> required,
                       std::vector<std::string> optional, Kind kind)
    : StrictArgs(obj, op, kind == Kind::kDict ? op + " arguments" : op, std::move(required),
                 std::move(optional), kind) {}

StrictArgs::StrictArgs(py::handle obj, std::string op, std::string what, std::vector<std::string> required,
                       std::vector<std::string> optional, Kind kind)
    : op_(std::move(op)),
      what_(std::move(what)),
      required_(std::move(required)),
      optional_(std::move(optional)),
      kind_(kind) {
  if (!py::isinstance<py::dict>(obj)) {
    throw py::type_error(what_ + ": expected a dict, got " + type_of(obj));
  }
  dict_ = py::reinterpret_borrow<py::dict>(obj);
  const char* noun = kind_ == Kind::kDict ? "key" : "keyword argument";
  for (const auto& item : dict_) {
    if (!py::isinstance<py::str>(item.first)) {
      throw py::type_error(what_ + ": " + noun + "s must be str, got " + type_of(item.first));
    }
    const auto key = item.first.cast<std::string>();
    if (known(key)) continue;
    std::string hint;
    std::size_t best = 3;  // suggest only names at most 2 edits away
    for (const auto* names : {&required_, &optional_}) {
      for (const auto& n : *names) {
        const std::size_t d = edit_distance(key, n);
        if (d < best) {
          best = d;
          hint = " (did you mean '" + n + "'?)";
        }
      }
    }
    const std::string expected =
        joined(required_) + (optional_.empty() ? "" : " (required), " + joined(optional_) + " (optional)");
    const std::string msg = what_ + ": unknown " + noun + " '" + key + "'" + hint + "; expected " + expected;
    if (kind_ == Kind::kDict) throw py::key_error(msg);
    throw py::type_error(msg);
  }
  for (const auto& key : required_) {
    if (!dict_.contains(key) || dict_[key.c_str()].is_none()) {
      const std::string msg = what_ + ": missing required " + noun + " '" + key + "'";
      if (kind_ == Kind::kDict) throw py::key_error(msg);
      throw py::type_error(msg);
    }
  }
}

bool StrictArgs::known(const std::string& key) const {
  return std::find(required_.begin(), required_.end(), key) != required_.end() ||
         std::find(optional_.begin(), optional_.end(), key) != optional_.end();
}

bool StrictArgs::has(const char* key) const {
  if (!known(key)) throw std::logic_error(what_ + ": reads undeclared key '" + key + "'");
  return dict_.contains(key) && !dict_[key].is_none();
}

py::object StrictArgs::value(const char* key) const {
  if (!has(key)) {
    // Only an optional key can be absent here (required ones were checked up front).
    throw std::logic_error(what_ + ": optional key '" + key + "' read without has() or a fallback");
  }
  return dict_[key];
}

void StrictArgs::wrong_type(const char* key, const py::object& v, const char* expected) const {
  throw py::type_error(what_ + ": " + (kind_ == Kind::kDict ? "key" : "keyword argument") + " '" + key +
                       "' must be " + expected + ", got " + type_of(v) + " " + std::string(py::repr(v)));
}

StrictArgs StrictArgs::argument(py::handle obj, const std::string& op, const std::string& name,
                                std::vector<std::string> required, std::vector<std::string> optional) {
  return StrictArgs(obj, op, op + " argument '" + name + "'", std::move(required), std::move(optional),
                    Kind::kDict);
}

StrictArgs StrictArgs::nested(const char* key, std::vector<std::string> required,
                              std::vector<std::string> optional) const {
  return argument(value(key), op_, key, std::move(required), std::move(optional));
}

void StrictArgs::key_error(const std::string& message) const { throw py::key_error(what_ + ": " + message); }

void StrictArgs::value_error(const char* key, const std::string& message) const {
  throw py::value_error(what_ + ": key '" + key + "': " + message);
}

}  // namespace qwen35_trt::bindings
