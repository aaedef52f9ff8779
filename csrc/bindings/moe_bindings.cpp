// numpy bindings of the Nvfp4Linear / Nvfp4MoE CPU reference (qwen35_trt/moe.h). bf16 travels
// as uint16 bit patterns, FP8 scales as uint8. Argument errors raise ValueError (the C++
// std::invalid_argument, translated by pybind11, or raised here while reading shapes).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "qwen35_trt/moe.h"
#include "strict_args.h"

namespace qwen35_trt::bindings {

namespace mo = qwen35_trt::moe;

mo::ScaleLayout parse_scale_layout(const std::string& s) {
  if (s == "row_major") return mo::ScaleLayout::kRowMajor;
  if (s == "swizzled_128x4") return mo::ScaleLayout::kSwizzled128x4;
  if (s == "w4a16_fragments") return mo::ScaleLayout::kW4A16Fragments;
  throw py::value_error("scale_layout: expected 'row_major', 'swizzled_128x4' or 'w4a16_fragments', got '" + s + "'");
}

mo::Activation parse_activation(const std::string& s) {
  if (s == "w4a16") return mo::Activation::kW4A16;
  if (s == "w4a4") return mo::Activation::kW4A4;
  throw py::value_error("activation: expected 'w4a16' or 'w4a4', got '" + s + "'");
}

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
Span<const T> span_of(const CArray<T>& a) {
  return {a.data(), static_cast<std::size_t>(a.size())};
}

// Stacked NVFP4 weights [count, N, K/2] (or [N, K/2] when `batched` is false) + their scales.
struct WeightArrays {
  CArray<uint8_t> packed, scales;
  mo::Nvfp4Weights view;
};

WeightArrays weights_of(const std::string& name, const py::array& packed, const py::array& scales,
                        mo::ScaleLayout layout, bool batched) {
  const auto want = static_cast<py::ssize_t>(batched ? 3 : 2);
  const auto shape = shape_of(packed, (name + ".weight").c_str(), want);
  if (static_cast<py::ssize_t>(shape.size()) != want) {
    throw py::value_error(name + ".weight: expected " + std::to_string(want) +
                          " dimensions (" + (batched ? "[E, N, K/2]" : "[N, K/2]") + "), got shape " +
                          shape_string(shape));
  }
  WeightArrays w{checked_array<uint8_t>(packed, (name + ".weight").c_str()),
                 checked_array<uint8_t>(scales, (name + ".weight_scale").c_str(), " (float8_e4m3fn bits)"),
                 {}};
  w.view.packed = span_of(w.packed);
  w.view.scales = span_of(w.scales);
  w.view.layout = layout;
  w.view.count = batched ? static_cast<std::size_t>(shape[0]) : 1;
  w.view.rows = static_cast<std::size_t>(shape[want - 2]);
  w.view.cols = static_cast<std::size_t>(shape[want - 1]) * 2;
  return w;
}

CArray<float> logits_as_float(const py::array& logits) {
  if (logits.dtype().is(py::dtype::of<uint16_t>())) {
    const auto bits = checked_array<uint16_t>(logits, "router_logits");
    CArray<float> out(std::vector<py::ssize_t>(bits.shape(), bits.shape() + bits.ndim()));
    nvfp4::bf16_to_float({bits.data(), static_cast<std::size_t>(bits.size())},
                         {out.mutable_data(), static_cast<std::size_t>(out.size())});
    return out;
  }
  return checked_array<float>(logits, "router_logits", " (or uint16 bfloat16 bits)");
}

std::vector<py::ssize_t> require_2d(const py::array& a, const char* name, const char* meaning) {
  auto shape = shape_of(a, name, 2);
  if (shape.size() != 2) {
    throw py::value_error(std::string(name) + ": expected 2 dimensions (" + meaning +
                          "), got shape " + shape_string(shape));
  }
  return shape;
}

py::tuple route(const py::array& logits, int top_k) {
  const auto shape = require_2d(logits, "router_logits", "[T, E]");
  if (top_k < 1) throw py::value_error("top_k: must be >= 1, got " + std::to_string(top_k));
  const auto l = logits_as_float(logits);
  CArray<int32_t> ids({shape[0], static_cast<py::ssize_t>(top_k)});
  CArray<float> weights({shape[0], static_cast<py::ssize_t>(top_k)});
  {
    py::gil_scoped_release release;
    mo::route(span_of(l), shape[0], shape[1], top_k, {ids.mutable_data(), static_cast<std::size_t>(ids.size())},
              {weights.mutable_data(), static_cast<std::size_t>(weights.size())});
  }
  return py::make_tuple(ids, weights);
}

float scalar_of(const py::object& v, const char* name) {
  if (v.is_none()) return 0.0f;
  try {
    return v.cast<float>();
  } catch (const py::cast_error&) {
    throw py::value_error(std::string(name) + ": expected a number");
  }
}

CArray<uint16_t> linear(const py::array& x, const py::array& weight, const py::array& scales,
                        float weight_scale_2, const std::string& scale_layout,
                        const std::string& activation, const py::object& input_scale) {
  const auto layout = parse_scale_layout(scale_layout);
  const auto act = parse_activation(activation);
  const auto w = weights_of("linear", weight, scales, layout, false);
  auto shape = shape_of(x, "x", 1);
  const auto xs = checked_array<uint16_t>(x, "x", " (bfloat16 bits)");
  if (static_cast<std::size_t>(shape.back()) != w.view.cols) {
    throw py::value_error("x: last dimension must equal K = " + std::to_string(w.view.cols) +
                          ", got shape " + shape_string(shape));
  }
  const std::size_t rows = w.view.cols ? static_cast<std::size_t>(xs.size()) / w.view.cols : 0;
  shape.back() = static_cast<py::ssize_t>(w.view.rows);
  CArray<uint16_t> y(shape);
  mo::Nvfp4LinearWeights lw{w.view, weight_scale_2, scalar_of(input_scale, "input_scale")};
  if (act == mo::Activation::kW4A4 && input_scale.is_none()) {
    throw py::value_error("input_scale: required for activation='w4a4'");
  }
  {
    py::gil_scoped_release release;
    mo::nvfp4_linear(span_of(xs), rows, lw, act,
                     {y.mutable_data(), static_cast<std::size_t>(y.size())});
  }
  return y;
}

CArray<float> optional_floats(const py::object& a, const char* name) {
  if (a.is_none()) return CArray<float>(std::vector<py::ssize_t>{0});
  return checked_array<float>(a.cast<py::array>(), name);
}

// The shared expert from a dict: {"gate": (weight, scales, weight_scale_2, input_scale | None),
// "up": (...), "down": (...), "gate_weight": uint16 [H]}.
struct SharedArrays {
  std::vector<WeightArrays> linears;
  CArray<uint16_t> gate_weight;
  mo::SharedExpert view;
};

SharedArrays shared_of(const py::object& shared, mo::ScaleLayout layout) {
  const StrictArgs d = StrictArgs::argument(shared, "nvfp4_moe_ref", "shared", {"gate", "up", "down", "gate_weight"}, {});
  SharedArrays s;
  const char* names[3] = {"gate", "up", "down"};
  mo::Nvfp4LinearWeights* dst[3] = {&s.view.gate, &s.view.up, &s.view.down};
  for (int i = 0; i < 3; ++i) {
    const auto t = d.get<py::tuple>(names[i]);
    if (t.size() != 4) {
      throw py::value_error(std::string("shared['") + names[i] +
                            "']: expected (weight, scales, weight_scale_2, input_scale)");
    }
    const std::string name = std::string("shared.") + names[i];
    s.linears.push_back(weights_of(name, t[0].cast<py::array>(), t[1].cast<py::array>(), layout, false));
    dst[i]->weight = s.linears.back().view;
    dst[i]->weight_scale_2 = scalar_of(t[2], (name + ".weight_scale_2").c_str());
    dst[i]->input_scale = scalar_of(t[3], (name + ".input_scale").c_str());
  }
  s.gate_weight = checked_array<uint16_t>(d.get<py::array>("gate_weight"), "shared.gate_weight",
                                          " (bfloat16 bits)");
  s.view.gate_weight = span_of(s.gate_weight);
  return s;
}

CArray<uint16_t> moe(const py::array& hidden, const py::array& router_logits, int top_k,
                     const py::array& gate_up_weight, const py::array& gate_up_scales,
                     const py::array& gate_up_scale_2, const py::array& down_weight,
                     const py::array& down_scales, const py::array& down_scale_2,
                     const std::string& scale_layout, const std::string& activation,
                     const py::object& gate_up_input_scale, const py::object& down_input_scale,
                     const py::object& shared) {
  const auto layout = parse_scale_layout(scale_layout);
  const auto act = parse_activation(activation);
  const auto hshape = require_2d(hidden, "hidden", "[T, H]");
  const auto lshape = require_2d(router_logits, "router_logits", "[T, E]");
  if (top_k < 1) throw py::value_error("top_k: must be >= 1, got " + std::to_string(top_k));
  const auto x = checked_array<uint16_t>(hidden, "hidden", " (bfloat16 bits)");
  const auto logits = logits_as_float(router_logits);
  const auto gu = weights_of("gate_up", gate_up_weight, gate_up_scales, layout, true);
  const auto dn = weights_of("down", down_weight, down_scales, layout, true);
  const auto gu_s2 = checked_array<float>(gate_up_scale_2, "gate_up.weight_scale_2");
  const auto dn_s2 = checked_array<float>(down_scale_2, "down.weight_scale_2");
  const auto gu_is = optional_floats(gate_up_input_scale, "gate_up.input_scale");
  const auto dn_is = optional_floats(down_input_scale, "down.input_scale");
  if (lshape[0] != hshape[0]) {
    throw py::value_error("router_logits: expected " + std::to_string(hshape[0]) +
                          " rows (one per token of hidden), got shape " + shape_string(lshape));
  }
  if (gu.view.rows % 2 != 0) {
    throw py::value_error("gate_up.weight: rows (2I) must be even, got " + std::to_string(gu.view.rows));
  }
  mo::MoeExperts ex;
  ex.num_experts = gu.view.count;
  ex.hidden = static_cast<std::size_t>(hshape[1]);
  ex.intermediate = gu.view.rows / 2;
  ex.gate_up = gu.view;
  ex.gate_up_scale_2 = span_of(gu_s2);
  ex.gate_up_input_scale = span_of(gu_is);
  ex.down = dn.view;
  ex.down_scale_2 = span_of(dn_s2);
  ex.down_input_scale = span_of(dn_is);
  if (static_cast<std::size_t>(lshape[1]) != ex.num_experts) {
    throw py::value_error("router_logits: expected E = " + std::to_string(ex.num_experts) +
                          " columns (experts in gate_up), got shape " + shape_string(lshape));
  }
  SharedArrays sh;
  const mo::SharedExpert* shared_ptr = nullptr;
  if (!shared.is_none()) {
    sh = shared_of(shared, layout);
    shared_ptr = &sh.view;
  }
  CArray<uint16_t> out({hshape[0], hshape[1]});
  {
    py::gil_scoped_release release;
    mo::nvfp4_moe(span_of(x), span_of(logits), static_cast<std::size_t>(hshape[0]),
                  static_cast<std::size_t>(top_k), ex, shared_ptr, act,
                  {out.mutable_data(), static_cast<std::size_t>(out.size())});
  }
  return out;
}

}  // namespace

void register_moe(py::module_& m) {
  m.attr("MOE_MAX_TOP_K") = mo::kMaxTopK;
  m.def("moe_route", &route, py::arg("router_logits"), py::arg("top_k"),
        "Routing of Nvfp4MoE (CPU reference): router_logits float32 or bf16-bits uint16 [T, E] "
        "-> (ids int32 [T, top_k], weights float32 [T, top_k]); top-k of the logits (ties -> "
        "lower index), softmax over the selected ones.");
  m.def("nvfp4_linear_ref", &linear, py::arg("x"), py::arg("weight"), py::arg("scales"),
        py::arg("weight_scale_2"), py::arg("scale_layout") = "row_major",
        py::arg("activation") = "w4a16", py::arg("input_scale") = py::none(),
        "Nvfp4Linear (CPU reference): x bf16-bits uint16 [..., K], weight uint8 [N, K/2], "
        "scales uint8 (row-major [N, K/16] or 128x4-swizzled) -> y bf16-bits uint16 [..., N]. "
        "scale_layout 'w4a16_fragments' is refused: convert such weights to ModelOpt's order first.");
  m.def("nvfp4_moe_ref", &moe, py::arg("hidden"), py::arg("router_logits"), py::arg("top_k"),
        py::arg("gate_up_weight"), py::arg("gate_up_scales"), py::arg("gate_up_scale_2"),
        py::arg("down_weight"), py::arg("down_scales"), py::arg("down_scale_2"),
        py::arg("scale_layout") = "row_major", py::arg("activation") = "w4a16",
        py::arg("gate_up_input_scale") = py::none(), py::arg("down_input_scale") = py::none(),
        py::arg("shared") = py::none(),
        "Nvfp4MoE (CPU reference): hidden bf16-bits uint16 [T, H], router_logits [T, E], fused "
        "gate_up [E, 2I, H/2] + scales + scale_2 [E, 2], down [E, H, I/2] + scales + scale_2 "
        "[E]; shared = None or {'gate'|'up'|'down': (weight, scales, weight_scale_2, "
        "input_scale), 'gate_weight': uint16 [H]} -> out bf16-bits uint16 [T, H].");
}

}  // namespace qwen35_trt::bindings
