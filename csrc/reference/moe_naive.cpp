// Nvfp4Linear and Nvfp4MoE computed the original way (moe::naive in qwen35_trt/moe.h): every
// matrix dequantized into a full fp32 copy, then row-by-row dot products in the fixed order on
// one thread. The fused kernels of moe.cpp must agree with this bit for bit.
#include <vector>

#include "moe_detail.h"
#include "nvfp4_gemm.h"

namespace qwen35_trt::moe::naive {
namespace {

namespace fp4 = qwen35_trt::nvfp4;
using detail::bf16_row;
using detail::dot_fixed_order;
using detail::prepare_activation;
using math::round_bf16;

// Matrix `index` of `w`, rows [row0, row0 + rows), dequantized without the global: Wq (fp32,
// exact) into out [rows, cols].
void dequantize_rows(const Nvfp4Weights& w, std::size_t index, std::size_t row0, std::size_t rows,
                     float* out) {
  const std::size_t blocks = w.cols / fp4::kBlockSize;
  const uint8_t* packed = w.packed.data() + index * w.rows * (w.cols / 2);
  const uint8_t* scales = w.scales.data() + index * scale_bytes(w.layout, w.rows, w.cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t row = row0 + r;
    for (std::size_t b = 0; b < blocks; ++b) {
      const float s = fp4::decode_e4m3(scales[scale_offset(w.layout, row, b, blocks)]);
      const uint8_t* p = packed + row * (w.cols / 2) + b * (fp4::kBlockSize / 2);
      float* o = out + r * w.cols + b * fp4::kBlockSize;
      for (int j = 0; j < fp4::kBlockSize / 2; ++j) {
        o[2 * j] = fp4::decode_e2m1(p[j] & 0xF) * s;
        o[2 * j + 1] = fp4::decode_e2m1(p[j] >> 4) * s;
      }
    }
  }
}

// A SwiGLU MLP on one activation row: dequantized gate/up [I, H] and down [H, I] weights (Wq),
// their globals and (W4A4) input scales -> y [H] fp32 values already rounded to bf16.
struct DenseMlp {
  const float* gate;  // [I, H]
  const float* up;    // [I, H]
  const float* down;  // [H, I]
  float gate_scale, up_scale, down_scale;  // weight_scale_2 (times input_scale for W4A4)
  float gate_up_input_scale, down_input_scale;
  std::size_t hidden, intermediate;
};

void mlp_row(const DenseMlp& m, const float* x, Activation act, std::vector<float>& xa,
             std::vector<float>& a, std::vector<float>& aq, float* y) {
  const std::size_t H = m.hidden, I = m.intermediate;
  prepare_activation(x, H, act, m.gate_up_input_scale, xa.data());
  for (std::size_t n = 0; n < I; ++n) {
    const float g = m.gate_scale * dot_fixed_order(xa.data(), m.gate + n * H, H);
    const float u = m.up_scale * dot_fixed_order(xa.data(), m.up + n * H, H);
    a[n] = round_bf16(math::swiglu(g, u));
  }
  prepare_activation(a.data(), I, act, m.down_input_scale, aq.data());
  for (std::size_t h = 0; h < H; ++h) {
    y[h] = round_bf16(m.down_scale * dot_fixed_order(aq.data(), m.down + h * I, I));
  }
}

}  // namespace

void nvfp4_linear(Span<const uint16_t> x, std::size_t rows, const Nvfp4LinearWeights& lw,
                  Activation act, Span<uint16_t> y) {
  detail::check_linear_call(x, rows, lw, act, y);
  const Nvfp4Weights& w = lw.weight;
  const std::size_t N = w.rows, K = w.cols;
  std::vector<float> wq(N * K), xf(K), xa(K);
  dequantize_rows(w, 0, 0, N, wq.data());
  const float alpha =
      act == Activation::kW4A4 ? lw.input_scale * lw.weight_scale_2 : lw.weight_scale_2;
  for (std::size_t m = 0; m < rows; ++m) {
    bf16_row(x.data() + m * K, K, xf.data());
    prepare_activation(xf.data(), K, act, lw.input_scale, xa.data());
    for (std::size_t n = 0; n < N; ++n) {
      y[m * N + n] = fp4::float_to_bf16(alpha * dot_fixed_order(xa.data(), wq.data() + n * K, K));
    }
  }
}

void nvfp4_moe(Span<const uint16_t> hidden, Span<const float> router_logits, std::size_t tokens,
               std::size_t top_k, const MoeExperts& ex, const SharedExpert* shared,
               Activation act, Span<uint16_t> out) {
  detail::check_moe_call(hidden, router_logits, tokens, top_k, ex, shared, act, out);
  const std::size_t E = ex.num_experts, H = ex.hidden, I = ex.intermediate;
  if (tokens == 0) return;

  std::vector<int32_t> ids(tokens * top_k);
  std::vector<float> weights(tokens * top_k);
  route(router_logits, tokens, E, top_k, ids, weights);

  // Routed experts, one expert at a time (its weights dequantized once): y[t * top_k + j].
  std::vector<float> y(tokens * top_k * H);
  std::vector<float> gate_up(2 * I * H), down(H * I);
  std::vector<float> xf(H), xa(H), a(I), aq(I);
  const bool w4a4 = act == Activation::kW4A4;
  for (std::size_t e = 0; e < E; ++e) {
    bool used = false;
    for (std::size_t i = 0; i < ids.size() && !used; ++i) used = ids[i] == static_cast<int32_t>(e);
    if (!used) continue;
    dequantize_rows(ex.gate_up, e, 0, 2 * I, gate_up.data());
    dequantize_rows(ex.down, e, 0, H, down.data());
    const float gis = w4a4 ? ex.gate_up_input_scale[e] : 1.0f;
    const float dis = w4a4 ? ex.down_input_scale[e] : 1.0f;
    const DenseMlp m{gate_up.data(), gate_up.data() + I * H, down.data(),
                     gis * ex.gate_up_scale_2[2 * e], gis * ex.gate_up_scale_2[2 * e + 1],
                     dis * ex.down_scale_2[e], gis, dis, H, I};
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] != static_cast<int32_t>(e)) continue;
      bf16_row(hidden.data() + (i / top_k) * H, H, xf.data());
      mlp_row(m, xf.data(), act, xa, a, aq, y.data() + i * H);
    }
  }

  // Shared expert and its per-token gate.
  std::vector<float> ys, shared_gate;
  if (shared != nullptr) {
    const std::size_t Is = shared->gate.weight.rows;
    std::vector<float> sg(Is * H), su(Is * H), sd(H * Is), sgw(H), sa(Is), saq(Is);
    dequantize_rows(shared->gate.weight, 0, 0, Is, sg.data());
    dequantize_rows(shared->up.weight, 0, 0, Is, su.data());
    dequantize_rows(shared->down.weight, 0, 0, H, sd.data());
    bf16_row(shared->gate_weight.data(), H, sgw.data());
    const float gis = w4a4 ? shared->gate.input_scale : 1.0f;
    const float dis = w4a4 ? shared->down.input_scale : 1.0f;
    // Gate and up read the same activations; W4A4 quantizes them once, with gate's input_scale
    // (ModelOpt exports equal input scales for layers that read the same input).
    const DenseMlp m{sg.data(), su.data(), sd.data(),
                     gis * shared->gate.weight_scale_2, gis * shared->up.weight_scale_2,
                     dis * shared->down.weight_scale_2, gis, dis, H, Is};
    ys.resize(tokens * H);
    shared_gate.resize(tokens);
    for (std::size_t t = 0; t < tokens; ++t) {
      bf16_row(hidden.data() + t * H, H, xf.data());
      mlp_row(m, xf.data(), act, xa, sa, saq, ys.data() + t * H);
      shared_gate[t] = math::sigmoid(dot_fixed_order(xf.data(), sgw.data(), H));
    }
  }

  // Weighted combine in rank order, then the shared term.
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::size_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (std::size_t j = 0; j < top_k; ++j) acc += weights[t * top_k + j] * y[(t * top_k + j) * H + h];
      if (shared != nullptr) acc += shared_gate[t] * ys[t * H + h];
      out[t * H + h] = fp4::float_to_bf16(acc);
    }
  }
}

}  // namespace qwen35_trt::moe::naive
