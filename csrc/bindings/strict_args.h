// Named arguments that arrive as a Python dict or as **kwargs (device pointers, strides, sizes).
// Every key is checked against one list of required and one list of optional names, so that a
// misspelt key fails loudly instead of leaving its field at a default (a zero stride, a null
// pointer). Errors name the key and the dict: KeyError for dict keys, TypeError for keyword
// arguments and for values of the wrong type, as Python itself does.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace qwen35_trt::bindings {

namespace py = pybind11;

class StrictArgs {
 public:
  enum class Kind { kDict, kKwargs };

  // Checks `obj` (a dict) at once: unknown keys first, then missing required keys. Messages name
  // it "<op> arguments" (a dict) or "<op>" (keyword arguments of the function <op>). A key whose
  // value is None counts as absent.
  StrictArgs(py::handle obj, std::string op, std::vector<std::string> required,
             std::vector<std::string> optional, Kind kind = Kind::kDict);

  // Whether an optional key is present (and not None).
  bool has(const char* key) const;

  // The value of a required key, or of an optional key that is present; TypeError names the key
  // when the value does not convert to T.
  template <typename T>
  T get(const char* key) const {
    const py::object v = value(key);
    try {
      return v.cast<T>();
    } catch (const py::cast_error&) {
      wrong_type(key, v, type_name<T>());
    }
  }

  // The value of an optional key, or `fallback` when it is absent.
  template <typename T>
  T get(const char* key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }

  // A device pointer given as an integer (0 = null).
  template <typename T>
  T* pointer(const char* key) const {
    return reinterpret_cast<T*>(static_cast<uintptr_t>(get<uint64_t>(key)));
  }
  template <typename T>
  T* pointer(const char* key, std::nullptr_t) const {
    return has(key) ? pointer<T>(key) : nullptr;
  }

  // A dict given as the argument `name` of the function or op `op`; named "<op> argument '<name>'".
  static StrictArgs argument(py::handle obj, const std::string& op, const std::string& name,
                             std::vector<std::string> required, std::vector<std::string> optional);

  // A nested dict under `key`, checked the same way; named "<op> argument '<key>'".
  StrictArgs nested(const char* key, std::vector<std::string> required,
                    std::vector<std::string> optional) const;

  // KeyError "<what>: <message>" (e.g. a key that only some configurations accept).
  [[noreturn]] void key_error(const std::string& message) const;
  // ValueError "<what>: key '<key>': <message>" (a value of the right type that is not accepted).
  [[noreturn]] void value_error(const char* key, const std::string& message) const;

 private:
  StrictArgs(py::handle obj, std::string op, std::string what, std::vector<std::string> required,
             std::vector<std::string> optional, Kind kind);

  template <typename T>
  static const char* type_name();

  py::object value(const char* key) const;
  [[noreturn]] void wrong_type(const char* key, const py::object& v, const char* expected) const;
  bool known(const std::string& key) const;

  py::dict dict_;
  std::string op_, what_;
  std::vector<std::string> required_, optional_;
  Kind kind_;
};

template <>
inline const char* StrictArgs::type_name<int64_t>() { return "an int"; }
template <>
inline const char* StrictArgs::type_name<int32_t>() { return "an int in the int32 range"; }
template <>
inline const char* StrictArgs::type_name<uint64_t>() { return "a non-negative int"; }
template <>
inline const char* StrictArgs::type_name<bool>() { return "a bool"; }
template <>
inline const char* StrictArgs::type_name<float>() { return "a float"; }
template <>
inline const char* StrictArgs::type_name<std::string>() { return "a str"; }
template <>
inline const char* StrictArgs::type_name<py::tuple>() { return "a tuple"; }
template <>
inline const char* StrictArgs::type_name<py::array>() { return "a numpy array"; }

}  // namespace qwen35_trt::bindings
