// numpy bindings of the NVFP4 codec (qwen35_trt/nvfp4.h). Leading dimensions are batch
// dimensions: per-row ops flatten them into rows, the swizzle loops over matrices. FP8 and BF16
// travel as their bit patterns in uint8 / uint16 arrays. Argument errors raise ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "qwen35_trt/common/w4a16_fragments.h"
#include "qwen35_trt/nvfp4.h"

namespace qwen35_trt::bindings {
namespace {

namespace fp4 = qwen35_trt::nvfp4;
using Shape = std::vector<py::ssize_t>;

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
Span<const T> in_span(const CArray<T>& a) {
  return {a.data(), static_cast<std::size_t>(a.size())};
}

template <typename T>
Span<T> out_span(CArray<T>& a) {
  return {a.mutable_data(), static_cast<std::size_t>(a.size())};
}

std::size_t product(const Shape& shape, std::size_t begin, std::size_t end) {
  std::size_t n = 1;
  for (std::size_t i = begin; i < end; ++i) n *= static_cast<std::size_t>(shape[i]);
  return n;
}

Shape with_last(Shape shape, py::ssize_t last) {
  shape.back() = last;
  return shape;
}

void require_shape(const char* name, const Shape& got, const Shape& expected,
                   const char* meaning) {
  if (got != expected) {
    throw py::value_error(std::string(name) + ": expected shape " + shape_string(expected) + " (" +
                          meaning + "), got " + shape_string(got));
  }
}

// Elementwise map In -> Out keeping the shape.
template <typename Out, typename In, typename F>
CArray<Out> map_elements(const py::array& x, const char* name, F f, const char* what = "") {
  const auto in = checked_array<In>(x, name, what);
  CArray<Out> out(Shape(in.shape(), in.shape() + in.ndim()));
  {
    py::gil_scoped_release release;
    f(in_span(in), out_span(out));
  }
  return out;
}

// Everything but the last dim flattened into rows, for the per-row functions.
struct Rows {
  Shape shape;
  std::size_t rows;
  std::size_t last;
};

Rows rows_of(const py::array& a, const char* name) {
  Shape shape = shape_of(a, name, 1);
  const std::size_t rows = product(shape, 0, shape.size() - 1);
  const auto last = static_cast<std::size_t>(shape.back());
  return {std::move(shape), rows, last};
}

void require_block_multiple(const char* name, std::size_t cols) {
  if (cols == 0 || cols % fp4::kBlockSize != 0) {
    throw py::value_error(std::string(name) +
                          ": last dimension (cols) must be a positive multiple of 16, got " +
                          std::to_string(cols));
  }
}

py::tuple quantize(const py::array& weight, float weight_scale_2) {
  const Rows r = rows_of(weight, "weight");
  require_block_multiple("weight", r.last);
  const auto cols = static_cast<py::ssize_t>(r.last);
  CArray<uint8_t> packed(with_last(r.shape, cols / 2));
  CArray<uint8_t> scales(with_last(r.shape, cols / fp4::kBlockSize));
  if (weight.dtype().is(py::dtype::of<uint16_t>())) {
    const auto w = checked_array<uint16_t>(weight, "weight");
    py::gil_scoped_release release;
    fp4::quantize_bf16(in_span(w), r.rows, r.last, weight_scale_2, out_span(packed),
                      out_span(scales));
  } else {
    const auto w = checked_array<float>(weight, "weight", " (or uint16 bfloat16 bits)");
    py::gil_scoped_release release;
    fp4::quantize(in_span(w), r.rows, r.last, weight_scale_2, out_span(packed), out_span(scales));
  }
  return py::make_tuple(packed, scales);
}

CArray<uint8_t> quantize_with_scales(const py::array& weight, const py::array& block_scales,
                                     float weight_scale_2) {
  const Rows r = rows_of(weight, "weight");
  require_block_multiple("weight", r.last);
  const auto cols = static_cast<py::ssize_t>(r.last);
  const auto s = checked_array<uint8_t>(block_scales, "block_scales", " (float8_e4m3fn bits)");
  require_shape("block_scales", shape_of(block_scales, "block_scales", 1),
                with_last(r.shape, cols / fp4::kBlockSize), "weight.shape[:-1] + (cols // 16,)");
  const auto w = checked_array<float>(weight, "weight");
  CArray<uint8_t> packed(with_last(r.shape, cols / 2));
  {
    py::gil_scoped_release release;
    fp4::quantize_with_scales(in_span(w), r.rows, r.last, in_span(s), weight_scale_2,
                             out_span(packed));
  }
  return packed;
}

py::array dequantize(const py::array& packed, const py::array& scales, float weight_scale_2,
                     bool bfloat16) {
  const Rows r = rows_of(packed, "packed");
  const auto p = checked_array<uint8_t>(packed, "packed");
  const auto s = checked_array<uint8_t>(scales, "scales", " (float8_e4m3fn bits)");
  const auto cols = static_cast<py::ssize_t>(r.last * 2);
  if (r.last == 0 || cols % fp4::kBlockSize != 0) {
    throw py::value_error("packed: last dimension must be a positive multiple of 8 (cols = 2 * " +
                          std::to_string(r.last) + " must be a multiple of 16)");
  }
  require_shape("scales", shape_of(scales, "scales", 1), with_last(r.shape, cols / fp4::kBlockSize),
                "packed.shape[:-1] + (2 * packed.shape[-1] // 16,)");
  const Shape out_shape = with_last(r.shape, cols);
  if (bfloat16) {
    CArray<uint16_t> out(out_shape);
    py::gil_scoped_release release;
    fp4::dequantize_bf16(in_span(p), in_span(s), r.rows, r.last * 2, weight_scale_2,
                        out_span(out));
    return std::move(out);
  }
  CArray<float> out(out_shape);
  py::gil_scoped_release release;
  fp4::dequantize(in_span(p), in_span(s), r.rows, r.last * 2, weight_scale_2, out_span(out));
  return std::move(out);
}

CArray<uint8_t> pack_e2m1(const py::array& codes) {
  const Rows r = rows_of(codes, "codes");
  if (r.last % 2 != 0) {
    throw py::value_error("codes: last dimension must be even, got " + std::to_string(r.last));
  }
  const auto c = checked_array<uint8_t>(codes, "codes");
  CArray<uint8_t> packed(with_last(r.shape, static_cast<py::ssize_t>(r.last / 2)));
  py::gil_scoped_release release;
  fp4::pack_e2m1(in_span(c), r.rows, r.last, out_span(packed));
  return packed;
}

CArray<uint8_t> unpack_e2m1(const py::array& packed) {
  const Rows r = rows_of(packed, "packed");
  const auto p = checked_array<uint8_t>(packed, "packed");
  CArray<uint8_t> codes(with_last(r.shape, static_cast<py::ssize_t>(r.last * 2)));
  py::gil_scoped_release release;
  fp4::unpack_e2m1(in_span(p), r.rows, r.last * 2, out_span(codes));
  return codes;
}

CArray<uint8_t> swizzle_scales_128x4(const py::array& scales) {
  const Shape shape = shape_of(scales, "scales", 2);
  const auto s = checked_array<uint8_t>(scales, "scales", " (float8_e4m3fn bits)");
  const auto rows = static_cast<std::size_t>(shape[shape.size() - 2]);
  const auto cols = static_cast<std::size_t>(shape.back());
  const std::size_t rows_p = fp4::round_up(rows, 128);
  const std::size_t cols_p = fp4::round_up(cols, 4);
  const std::size_t batch = product(shape, 0, shape.size() - 2);
  Shape out_shape = shape;
  out_shape[shape.size() - 2] = static_cast<py::ssize_t>(rows_p);
  out_shape.back() = static_cast<py::ssize_t>(cols_p);
  CArray<uint8_t> out(out_shape);
  py::gil_scoped_release release;
  for (std::size_t b = 0; b < batch; ++b) {
    fp4::swizzle_scales_128x4({s.data() + b * rows * cols, rows * cols}, rows, cols,
                             {out.mutable_data() + b * rows_p * cols_p, rows_p * cols_p});
  }
  return out;
}

CArray<uint8_t> unswizzle_scales_128x4(const py::array& swizzled, py::ssize_t rows,
                                       py::ssize_t cols) {
  if (rows <= 0) throw py::value_error("rows: must be > 0, got " + std::to_string(rows));
  if (cols <= 0) throw py::value_error("cols: must be > 0, got " + std::to_string(cols));
  const Shape shape = shape_of(swizzled, "swizzled", 1);
  const auto s = checked_array<uint8_t>(swizzled, "swizzled");
  const auto urows = static_cast<std::size_t>(rows);
  const auto ucols = static_cast<std::size_t>(cols);
  const auto rows_p = static_cast<py::ssize_t>(fp4::round_up(urows, 128));
  const auto cols_p = static_cast<py::ssize_t>(fp4::round_up(ucols, 4));
  // Accept [..., rows_p, cols_p] (what swizzle_scales_128x4 returns) or [..., rows_p * cols_p].
  Shape batch_shape;
  if (shape.size() >= 2 && shape[shape.size() - 2] == rows_p && shape.back() == cols_p) {
    batch_shape.assign(shape.begin(), shape.end() - 2);
  } else if (shape.back() == rows_p * cols_p) {
    batch_shape.assign(shape.begin(), shape.end() - 1);
  } else {
    throw py::value_error("swizzled: expected shape [..., " + std::to_string(rows_p) + ", " +
                          std::to_string(cols_p) + "] or [..., " +
                          std::to_string(rows_p * cols_p) + "] for rows=" + std::to_string(rows) +
                          ", cols=" + std::to_string(cols) + ", got " + shape_string(shape));
  }
  const std::size_t batch = product(batch_shape, 0, batch_shape.size());
  Shape out_shape = batch_shape;
  out_shape.push_back(rows);
  out_shape.push_back(cols);
  CArray<uint8_t> out(out_shape);
  const std::size_t in_stride = static_cast<std::size_t>(rows_p * cols_p);
  py::gil_scoped_release release;
  for (std::size_t b = 0; b < batch; ++b) {
    fp4::unswizzle_scales_128x4({s.data() + b * in_stride, in_stride}, urows, ucols,
                               {out.mutable_data() + b * urows * ucols, urows * ucols});
  }
  return out;
}

// codes uint8 [..., k / 2] and scales uint8 [..., k / 16] (the same leading dims): the rows the
// W4A16 fragment codec works on.
Rows fragment_rows(const py::array& codes, const py::array& scales) {
  const Rows c = rows_of(codes, "codes");
  const Shape s = shape_of(scales, "scales", 1);
  if (Shape(c.shape.begin(), c.shape.end() - 1) != Shape(s.begin(), s.end() - 1) ||
      static_cast<std::size_t>(s.back()) * 8 != c.last) {
    throw py::value_error("scales: expected shape " + shape_string(with_last(c.shape, static_cast<py::ssize_t>(c.last / 8))) +
                          " (one scale per 16 codes of codes " + shape_string(c.shape) + "), got " + shape_string(s));
  }
  return c;
}

// One call of the row codec: the operands checked, the outputs allocated (same shapes).
struct FragmentCall {
  Rows rows;
  CArray<uint8_t> codes, scales;
  CArray<uint8_t> out_codes, out_scales;
  std::size_t k, blocks;
  FragmentCall(const py::array& c, const py::array& s, const char* codes_what, const char* scales_what)
      : rows(fragment_rows(c, s)),
        codes(checked_array<uint8_t>(c, "codes", codes_what)),
        scales(checked_array<uint8_t>(s, "scales", scales_what)),
        out_codes(rows.shape),
        out_scales(Shape(scales.shape(), scales.shape() + scales.ndim())),
        k(2 * rows.last),
        blocks(k / fp4::kBlockSize) {}
  const uint8_t* codes_row(std::size_t i) const { return codes.data() + i * rows.last; }
  const uint8_t* scales_row(std::size_t i) const { return scales.data() + i * blocks; }
  uint8_t* out_codes_row(std::size_t i) { return out_codes.mutable_data() + i * rows.last; }
  uint8_t* out_scales_row(std::size_t i) { return out_scales.mutable_data() + i * blocks; }
};

py::tuple pack_w4a16_fragments(const py::array& codes, const py::array& scales) {
  FragmentCall f(codes, scales, " (packed E2M1 pairs)", " (float8_e4m3fn bits)");
  std::size_t bad_row = f.rows.rows, bad_block = 0;
  {
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < f.rows.rows; ++i) {
      if (!fp4::pack_fragment_row(f.codes_row(i), f.scales_row(i), f.k, f.out_codes_row(i), f.out_scales_row(i),
                                  &bad_block)) {
        bad_row = i;
        break;
      }
    }
  }
  if (bad_row < f.rows.rows) {
    throw py::value_error("scales: block scale " + std::to_string(bad_block) + " of row " + std::to_string(bad_row) +
                          " is negative or NaN");
  }
  return py::make_tuple(f.out_codes, f.out_scales);
}

py::tuple unpack_w4a16_fragments(const py::array& codes, const py::array& scales) {
  FragmentCall f(codes, scales, " (W4A16 fragment words)", " (UE5M3 bits)");
  {
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < f.rows.rows; ++i) {
      fp4::unpack_fragment_row(f.codes_row(i), f.scales_row(i), f.k, f.out_codes_row(i), f.out_scales_row(i));
    }
  }
  return py::make_tuple(f.out_codes, f.out_scales);
}

}  // namespace

void register_nvfp4(py::module_& m) {
  m.attr("NVFP4_BLOCK_SIZE") = fp4::kBlockSize;
  m.def(
      "encode_e2m1",
      [](const py::array& x) {
        return map_elements<uint8_t, float>(
            x, "x", [](Span<const float> in, Span<uint8_t> out) { fp4::encode_e2m1(in, out); });
      },
      py::arg("x"), "float32 -> E2M1 codes (uint8, 0..15) with ModelOpt's rounding.");
  m.def(
      "decode_e2m1",
      [](const py::array& codes) {
        return map_elements<float, uint8_t>(
            codes, "codes", [](Span<const uint8_t> in, Span<float> out) { fp4::decode_e2m1(in, out); });
      },
      py::arg("codes"), "E2M1 codes (uint8, < 16) -> float32.");
  m.def(
      "encode_e4m3",
      [](const py::array& x) {
        return map_elements<uint8_t, float>(
            x, "x", [](Span<const float> in, Span<uint8_t> out) { fp4::encode_e4m3(in, out); });
      },
      py::arg("x"), "float32 -> float8_e4m3fn bits (uint8), RNE, saturating like torch 2.13.");
  m.def(
      "decode_e4m3",
      [](const py::array& bits) {
        return map_elements<float, uint8_t>(
            bits, "bits", [](Span<const uint8_t> in, Span<float> out) { fp4::decode_e4m3(in, out); });
      },
      py::arg("bits"), "float8_e4m3fn bits (uint8) -> float32.");
  m.def(
      "bf16_to_float",
      [](const py::array& bits) {
        return map_elements<float, uint16_t>(
            bits, "bits", [](Span<const uint16_t> in, Span<float> out) { fp4::bf16_to_float(in, out); });
      },
      py::arg("bits"), "bfloat16 bits (uint16) -> float32 (exact).");
  m.def(
      "float_to_bf16",
      [](const py::array& x) {
        return map_elements<uint16_t, float>(
            x, "x", [](Span<const float> in, Span<uint16_t> out) { fp4::float_to_bf16(in, out); });
      },
      py::arg("x"), "float32 -> bfloat16 bits (uint16), round to nearest even.");
  m.def("pack_e2m1", &pack_e2m1, py::arg("codes"),
        "codes uint8 [..., cols] -> packed uint8 [..., cols / 2], low nibble = even element.");
  m.def("unpack_e2m1", &unpack_e2m1, py::arg("packed"),
        "packed uint8 [..., n] -> codes uint8 [..., 2 n].");
  m.def("quantize", &quantize, py::arg("weight"), py::arg("weight_scale_2"),
        "weight float32 or bf16-bits uint16 [..., cols] -> (packed uint8 [..., cols / 2], "
        "scales e4m3-bits uint8 [..., cols / 16]), bit-exact with ModelOpt.");
  m.def("quantize_with_scales", &quantize_with_scales, py::arg("weight"), py::arg("block_scales"),
        py::arg("weight_scale_2"),
        "weight float32 [..., cols], block_scales uint8 [..., cols / 16] -> packed uint8 "
        "[..., cols / 2].");
  m.def("dequantize", &dequantize, py::arg("packed"), py::arg("scales"),
        py::arg("weight_scale_2"), py::arg("bfloat16") = false,
        "packed uint8 [..., cols / 2], scales uint8 [..., cols / 16] -> float32 [..., cols] (or "
        "bf16 bits uint16 when bfloat16=True).");
  m.def("swizzle_scales_128x4", &swizzle_scales_128x4, py::arg("scales"),
        "scales uint8 [..., rows, cols] -> [..., roundup(rows, 128), roundup(cols, 4)] in the "
        "sm_100 128x4 layout, zero padded.");
  m.def("unswizzle_scales_128x4", &unswizzle_scales_128x4, py::arg("swizzled"), py::arg("rows"),
        py::arg("cols"), "Inverse of swizzle_scales_128x4 -> uint8 [..., rows, cols].");
  m.def("pack_w4a16_fragments", &pack_w4a16_fragments, py::arg("codes"), py::arg("scales"),
        "codes uint8 [..., k / 2], scales e4m3-bits uint8 [..., k / 16] -> (codes, UE5M3 scales) "
        "in the W4A16 fragment layout, row by row (qwen35_trt/common/w4a16_fragments.h).");
  m.def("unpack_w4a16_fragments", &unpack_w4a16_fragments, py::arg("codes"), py::arg("scales"),
        "Inverse of pack_w4a16_fragments -> (codes, e4m3-bits scales) in ModelOpt's order.");
}

}  // namespace qwen35_trt::bindings
