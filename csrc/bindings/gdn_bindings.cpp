// numpy bindings of the Gated DeltaNet CPU reference (qwen35_trt/gdn.h). Activations are float32
// or bfloat16 bit patterns in uint16 arrays; state pools are updated in place, so they must be
// writeable C-contiguous arrays of the right dtype (a torch tensor's .numpy() view works).
// Argument errors raise ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "qwen35_trt/gdn.h"

namespace qwen35_trt::bindings {
namespace {

using Shape = std::vector<py::ssize_t>;
template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
Span<const T> cspan(const CArray<T>& a) {
  return {a.data(), static_cast<std::size_t>(a.size())};
}
template <typename T>
Span<T> mspan(CArray<T>& a) {
  return {a.mutable_data(), static_cast<std::size_t>(a.size())};
}

Shape shape_vec(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

void require_ndim(const py::array& a, const char* name, py::ssize_t ndim, const char* layout) {
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions " + layout +
                          ", got shape " + shape_string(shape_vec(a)));
  }
}

void require_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) throw py::value_error(std::string(name) + ": must be writeable (it is updated in place)");
}

CArray<int32_t> int32_array(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<int32_t>())) {
    throw py::value_error(std::string(name) + ": expected dtype int32, got " + std::string(py::str(a.dtype())));
  }
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  require_ndim(a, name, 1, "[n]");
  return CArray<int32_t>::ensure(a);
}

CArray<uint8_t> flag_array(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<uint8_t>()) && !a.dtype().is(py::dtype::of<bool>())) {
    throw py::value_error(std::string(name) + ": expected dtype bool or uint8, got " + std::string(py::str(a.dtype())));
  }
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  require_ndim(a, name, 1, "[B]");
  // bool and uint8 have the same one-byte layout: view bools as bytes, no copy.
  return CArray<uint8_t>::ensure(py::array(a.attr("view")(py::dtype::of<uint8_t>())));
}

// The sequence arrays of one call; keeps the numpy arrays alive while the spans are used.
struct Sequences {
  CArray<int32_t> slots, cu;
  CArray<uint8_t> init;
  gdn::SequenceBatch batch;
};

Sequences sequences(const py::array& slots, const std::optional<py::array>& cu_seqlens,
                    const std::optional<py::array>& has_initial_state) {
  Sequences s;
  s.slots = int32_array(slots, "slots");
  s.batch.slots = cspan(s.slots);
  if (cu_seqlens.has_value() != has_initial_state.has_value()) {
    throw py::value_error(cu_seqlens ? "has_initial_state: required with cu_seqlens (prefill)"
                                     : "has_initial_state: only allowed with cu_seqlens (decode always reads the state)");
  }
  if (cu_seqlens) {
    s.cu = int32_array(*cu_seqlens, "cu_seqlens");
    s.init = flag_array(*has_initial_state, "has_initial_state");
    s.batch.cu_seqlens = cspan(s.cu);
    s.batch.has_initial_state = cspan(s.init);
  }
  return s;
}

bool is_bf16(const py::array& a) { return a.dtype().is(py::dtype::of<uint16_t>()); }

template <typename T>
py::array conv_typed(const py::array& x, const py::array& weight, py::array& state_pool, const Sequences& s) {
  const auto xa = checked_array<T>(x, "x", " (float32, or uint16 bfloat16 bits)");
  const auto wa = checked_array<T>(weight, "weight", " (the dtype of x)");
  auto pa = checked_array<T>(state_pool, "state_pool", " (the dtype of x)");
  CArray<T> y(shape_vec(x));
  gdn::CausalConv1dArgs<T> a;
  a.x = cspan(xa);
  a.weight = cspan(wa);
  a.state_pool = mspan(pa);
  a.seqs = s.batch;
  a.y = mspan(y);
  a.channels = x.shape(1);
  a.width = weight.shape(1);
  {
    py::gil_scoped_release release;
    gdn::causal_conv1d(a);
  }
  return std::move(y);
}

py::array causal_conv1d(const py::array& x, const py::array& weight, py::array state_pool, const py::array& slots,
                        const std::optional<py::array>& cu_seqlens, const std::optional<py::array>& has_initial_state) {
  require_ndim(x, "x", 2, "[tokens, channels]");
  require_ndim(weight, "weight", 2, "[channels, width]");
  require_ndim(state_pool, "state_pool", 3, "[num_slots, channels, width - 1]");
  require_writeable(state_pool, "state_pool");
  if (weight.shape(0) != x.shape(1)) {
    throw py::value_error("weight: expected " + std::to_string(x.shape(1)) + " channels (x.shape[1]), got shape " +
                          shape_string(shape_vec(weight)));
  }
  if (state_pool.shape(1) != x.shape(1) || state_pool.shape(2) != weight.shape(1) - 1) {
    throw py::value_error("state_pool: expected shape [num_slots, " + std::to_string(x.shape(1)) + ", " +
                          std::to_string(weight.shape(1) - 1) + "], got " + shape_string(shape_vec(state_pool)));
  }
  const Sequences s = sequences(slots, cu_seqlens, has_initial_state);
  if (is_bf16(x)) return conv_typed<uint16_t>(x, weight, state_pool, s);
  return conv_typed<float>(x, weight, state_pool, s);
}

CArray<float> float_vector(const std::optional<py::array>& a, const char* name) {
  if (!a) return CArray<float>();
  return checked_array<float>(*a, name);
}

template <typename T>
py::array gdn_typed(const py::array& q, const py::array& k, const py::array& v, py::array& state_pool,
                    const Sequences& s, const std::optional<py::array>& a_in, const std::optional<py::array>& b_in,
                    const std::optional<py::array>& A_log, const std::optional<py::array>& dt_bias,
                    const std::optional<py::array>& g, const std::optional<py::array>& beta, float scale,
                    bool use_qk_l2norm, gdn::Algorithm algorithm) {
  const char* hint = " (float32, or uint16 bfloat16 bits; q, k, v, a, b share one dtype)";
  const auto qa = checked_array<T>(q, "q", hint);
  const auto ka = checked_array<T>(k, "k", hint);
  const auto va = checked_array<T>(v, "v", hint);
  auto pa = checked_array<float>(state_pool, "state_pool");
  CArray<T> aa, ba;
  if (a_in) aa = checked_array<T>(*a_in, "a", hint);
  if (b_in) ba = checked_array<T>(*b_in, "b", hint);
  const auto al = float_vector(A_log, "A_log"), dt = float_vector(dt_bias, "dt_bias");
  const auto ga = float_vector(g, "g"), be = float_vector(beta, "beta");
  CArray<T> o(shape_vec(v));
  gdn::GatedDeltaNetArgs<T> args;
  args.q = cspan(qa);
  args.k = cspan(ka);
  args.v = cspan(va);
  if (a_in) args.a = cspan(aa);
  if (b_in) args.b = cspan(ba);
  if (A_log) args.A_log = cspan(al);
  if (dt_bias) args.dt_bias = cspan(dt);
  if (g) args.g = cspan(ga);
  if (beta) args.beta = cspan(be);
  args.state_pool = mspan(pa);
  args.seqs = s.batch;
  args.o = mspan(o);
  args.num_k_heads = q.shape(1);
  args.num_v_heads = v.shape(1);
  args.head_k_dim = q.shape(2);
  args.head_v_dim = v.shape(2);
  args.scale = scale;
  args.use_qk_l2norm = use_qk_l2norm;
  args.algorithm = algorithm;
  {
    py::gil_scoped_release release;
    gdn::gated_delta_net(args);
  }
  return std::move(o);
}

void require_shape(const std::optional<py::array>& a, const char* name, const Shape& want, const char* layout) {
  if (a && shape_vec(*a) != want) {
    throw py::value_error(std::string(name) + ": expected shape " + shape_string(want) + " " + layout + ", got " +
                          shape_string(shape_vec(*a)));
  }
}

py::array gated_delta_net(const py::array& q, const py::array& k, const py::array& v, py::array state_pool,
                          const py::array& slots, const std::optional<py::array>& cu_seqlens,
                          const std::optional<py::array>& has_initial_state, const std::optional<py::array>& a,
                          const std::optional<py::array>& b, const std::optional<py::array>& A_log,
                          const std::optional<py::array>& dt_bias, const std::optional<py::array>& g,
                          const std::optional<py::array>& beta, std::optional<float> scale, bool use_qk_l2norm,
                          const std::string& algorithm) {
  require_ndim(q, "q", 3, "[tokens, num_k_heads, head_k_dim]");
  require_ndim(k, "k", 3, "[tokens, num_k_heads, head_k_dim]");
  require_ndim(v, "v", 3, "[tokens, num_v_heads, head_v_dim]");
  require_ndim(state_pool, "state_pool", 4, "[num_slots, num_v_heads, head_k_dim, head_v_dim]");
  require_writeable(state_pool, "state_pool");
  const Shape qs = shape_vec(q);
  if (shape_vec(k) != qs) throw py::value_error("k: expected the shape of q " + shape_string(qs) + ", got " + shape_string(shape_vec(k)));
  if (v.shape(0) != q.shape(0)) {
    throw py::value_error("v: expected " + std::to_string(q.shape(0)) + " tokens (q.shape[0]), got shape " +
                          shape_string(shape_vec(v)));
  }
  const py::ssize_t T = q.shape(0), Hv = v.shape(1);
  if (state_pool.shape(1) != Hv || state_pool.shape(2) != q.shape(2) || state_pool.shape(3) != v.shape(2)) {
    throw py::value_error("state_pool: expected shape [num_slots, " + std::to_string(Hv) + ", " +
                          std::to_string(q.shape(2)) + ", " + std::to_string(v.shape(2)) + "], got " +
                          shape_string(shape_vec(state_pool)));
  }
  require_shape(a, "a", {T, Hv}, "[tokens, num_v_heads]");
  require_shape(b, "b", {T, Hv}, "[tokens, num_v_heads]");
  require_shape(A_log, "A_log", {Hv}, "[num_v_heads]");
  require_shape(dt_bias, "dt_bias", {Hv}, "[num_v_heads]");
  require_shape(g, "g", {T, Hv}, "[tokens, num_v_heads]");
  require_shape(beta, "beta", {T, Hv}, "[tokens, num_v_heads]");
  gdn::Algorithm alg;
  if (algorithm == "auto") {
    alg = gdn::Algorithm::kAuto;
  } else if (algorithm == "chunked") {
    alg = gdn::Algorithm::kChunked;
  } else if (algorithm == "recurrent") {
    alg = gdn::Algorithm::kRecurrent;
  } else {
    throw py::value_error("algorithm: expected 'auto', 'chunked' or 'recurrent', got '" + algorithm + "'");
  }
  const float sc = scale ? *scale : 1.0f / std::sqrt(static_cast<float>(q.shape(2)));
  const Sequences s = sequences(slots, cu_seqlens, has_initial_state);
  if (is_bf16(v)) return gdn_typed<uint16_t>(q, k, v, state_pool, s, a, b, A_log, dt_bias, g, beta, sc, use_qk_l2norm, alg);
  return gdn_typed<float>(q, k, v, state_pool, s, a, b, A_log, dt_bias, g, beta, sc, use_qk_l2norm, alg);
}

}  // namespace

void register_gdn(py::module_& m) {
  m.attr("GDN_CHUNK_SIZE") = gdn::kChunkSize;
  m.def("gdn_causal_conv1d", &causal_conv1d, py::arg("x"), py::arg("weight"), py::arg("state_pool"), py::arg("slots"),
        py::arg("cu_seqlens") = py::none(), py::arg("has_initial_state") = py::none(),
        "CausalConv1d CPU reference (docs/ops.md): x [T, C], weight [C, W], state_pool [num_slots, C, W - 1] "
        "(updated in place), all float32 or all uint16 bf16 bits; slots int32 [B]; prefill: cu_seqlens int32 "
        "[B + 1] and has_initial_state bool/uint8 [B]; decode: neither (T == B). Returns y [T, C] = silu(conv).");
  m.def("gdn_gated_delta_net", &gated_delta_net, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("state_pool"),
        py::arg("slots"), py::arg("cu_seqlens") = py::none(), py::arg("has_initial_state") = py::none(), py::kw_only(),
        py::arg("a") = py::none(), py::arg("b") = py::none(), py::arg("A_log") = py::none(),
        py::arg("dt_bias") = py::none(), py::arg("g") = py::none(), py::arg("beta") = py::none(),
        py::arg("scale") = py::none(), py::arg("use_qk_l2norm") = true, py::arg("algorithm") = "auto",
        "GatedDeltaNet CPU reference (docs/ops.md): q, k [T, Hk, dk], v [T, Hv, dv] (float32 or uint16 bf16 "
        "bits), state_pool float32 [num_slots, Hv, dk, dv] (updated in place), slots int32 [B]; prefill: "
        "cu_seqlens int32 [B + 1] and has_initial_state [B]; decode: neither. Gates fused (a, b [T, Hv] in "
        "q's dtype, A_log, dt_bias float32 [Hv]) or precomputed (g, beta float32 [T, Hv]). scale defaults to "
        "dk^-0.5; algorithm 'auto' (chunked prefill, recurrent decode), 'chunked' or 'recurrent'. Returns "
        "o [T, Hv, dv] in v's dtype.");
}

}  // namespace qwen35_trt::bindings
