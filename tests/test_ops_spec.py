"""Spec ops against transformers' Qwen3.5 building blocks and ModelOpt, on fresh random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe as hf

from qwen35_trt.ops import attention, conv1d, gated_delta_rule as gdr, moe, norms, nvfp4_linear

BF16 = torch.bfloat16


def rand(*shape, dtype=BF16, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def gdn_inputs(T, hk=2, hv=4, dk=32, dv=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, hk, dk, generator=g).to(BF16)
    k = torch.randn(T, hk, dk, generator=g).to(BF16)
    v = torch.randn(T, hv, dv, generator=g).to(BF16)
    a = torch.randn(T, hv, generator=g).to(BF16)
    b = torch.randn(T, hv, generator=g).to(BF16)
    A_log = torch.log(torch.empty(hv).uniform_(1, 16, generator=g))
    dt_bias = torch.randn(hv, generator=g).to(BF16)
    gate, beta = gdr.gdn_gating(a, b, A_log, dt_bias)
    return q, k, v, gate, beta


def test_norms_match_transformers():
    x, w = rand(7, 64, seed=1), rand(64, seed=2, scale=0.1)
    m = hf.Qwen3_5MoeRMSNorm(64, eps=1e-6).to(BF16)
    m.weight.data.copy_(w)
    assert torch.equal(norms.rms_norm(x, w, 1e-6), m(x))
    z = rand(7, 64, seed=3)
    gm = hf.Qwen3_5MoeRMSNormGated(64, eps=1e-6).to(BF16)
    gm.weight.data.copy_(w + 1)
    assert torch.equal(norms.gated_rms_norm(x, z, w + 1, 1e-6), gm(x, z))


@pytest.mark.parametrize("T,hk,hv,dk,dv", [(1, 2, 4, 32, 32), (63, 2, 4, 32, 24), (130, 3, 6, 16, 16), (200, 4, 4, 64, 64)])
def test_gdn_chunked_and_recurrent_match_transformers(T, hk, hv, dk, dv):
    q, k, v, g, beta = gdn_inputs(T, hk, hv, dk, dv, seed=T)
    init = torch.randn(1, hv, dk, dv, generator=torch.Generator().manual_seed(9)) * 0.1
    want_o, want_s = hf.torch_recurrent_gated_delta_rule(q[None], k[None], v[None], g[None], beta[None], initial_state=init, output_final_state=True, use_qk_l2norm_in_kernel=True)
    for fn in (gdr.recurrent_gated_delta_rule, gdr.chunk_gated_delta_rule):
        o, s = fn(q, k, v, g, beta, [0, T], initial_states=init)
        assert rel_err(o, want_o[0]) < 1e-2  # bf16 output
        assert rel_err(s, want_s) < 1e-5  # fp32 state
    want_c, _ = hf.torch_chunk_gated_delta_rule(q[None], k[None], v[None], g[None], beta[None], output_final_state=True, use_qk_l2norm_in_kernel=True)
    o, _ = gdr.chunk_gated_delta_rule(q, k, v, g, beta, [0, T])
    assert rel_err(o, want_c[0]) < 1e-2


def test_gdn_varlen_and_splits_match_whole():
    lens = [1, 2, 63, 64, 65, 127, 300]
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    q, k, v, g, beta = gdn_inputs(cu[-1], seed=5)
    o_rec, s_rec = gdr.recurrent_gated_delta_rule(q, k, v, g, beta, cu)
    o_chk, s_chk = gdr.chunk_gated_delta_rule(q, k, v, g, beta, cu)
    assert rel_err(o_chk, o_rec) < 1e-2 and rel_err(s_chk, s_rec) < 1e-5
    # each sequence alone == its part of the batch
    for i in range(len(lens)):
        s, e = cu[i], cu[i + 1]
        o1, s1 = gdr.chunk_gated_delta_rule(q[s:e], k[s:e], v[s:e], g[s:e], beta[s:e], [0, e - s])
        assert torch.equal(o1, o_chk[s:e]) and torch.equal(s1[0], s_chk[i])
    # prefill in two pieces at chunk-relevant split points == prefill at once
    s, e = cu[-2], cu[-1]
    for split in (1, 63, 64, 65, 200):
        o_a, st_a = gdr.chunk_gated_delta_rule(q[s : s + split], k[s : s + split], v[s : s + split], g[s : s + split], beta[s : s + split], [0, split])
        o_b, st_b = gdr.chunk_gated_delta_rule(q[s + split : e], k[s + split : e], v[s + split : e], g[s + split : e], beta[s + split : e], [0, e - s - split], initial_states=st_a)
        assert rel_err(torch.cat([o_a, o_b]), o_chk[s:e]) < 1e-2
        assert rel_err(st_b[0], s_chk[-1]) < 1e-5


def test_conv1d_prefill_and_decode_match_transformers():
    C, W, T = 48, 4, 20
    x, w = rand(T, C, seed=1), rand(C, W, seed=2, scale=0.5)
    want = hf.causal_conv1d_fn(x.t()[None], w, None, activation="silu")[0].t()
    y, state = conv1d.causal_conv1d_prefill(x, w, [0, T])
    assert torch.equal(y, want)
    assert torch.equal(state[0], x[-(W - 1):].t())
    # decode continues the state exactly like transformers' update
    ref_state = state.clone()
    xt = rand(1, C, seed=3)
    want_d = hf.causal_conv1d_update(xt.t()[None], ref_state, w, None, "silu")[0].t()
    yd, new_state = conv1d.causal_conv1d_decode(xt, w, state)
    assert torch.equal(yd, want_d) and torch.equal(new_state, ref_state)
    # continuing from the state left by the first 5 tokens == the same positions of the whole
    _, head_state = conv1d.causal_conv1d_prefill(x[:5], w, [0, 5])
    y_tail, tail_state = conv1d.causal_conv1d_prefill(x[5:], w, [0, T - 5], initial_states=head_state)
    assert rel_err(y_tail, want[5:]) < 1e-2 and torch.equal(tail_state, state)
    # a varlen batch == its sequences one by one
    y_b, s_b = conv1d.causal_conv1d_prefill(x, w, [0, 5, T])
    assert torch.equal(y_b[:5], want[:5]) and torch.equal(y_b[5:], conv1d.causal_conv1d_prefill(x[5:], w, [0, T - 5])[0])
    assert torch.equal(s_b[0], head_state[0])


def test_router_matches_transformers():
    cfg = hf.Qwen3_5MoeTextConfig(num_experts=8, num_experts_per_tok=3, hidden_size=32)
    r = hf.Qwen3_5MoeTopKRouter(cfg).to(BF16)
    r.weight.data.copy_(rand(8, 32, seed=4))
    x = rand(11, 32, seed=5)
    _, want_w, want_i = r(x)
    w, i = moe.route(F.linear(x, r.weight), 3)
    assert torch.equal(w, want_w) and torch.equal(i, want_i)
    assert torch.allclose(w.float().sum(-1), torch.ones(11), atol=1e-2)


def test_rope_and_gate_split_match_transformers():
    T, nh, hd, rot = 9, 4, 32, 8
    q, k = rand(T, nh, hd, seed=1), rand(T, 2, hd, seed=2)
    cfg = hf.Qwen3_5MoeTextConfig(head_dim=hd, rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": rot / hd, "mrope_section": [2, 1, 1]})
    rope = hf.Qwen3_5MoeTextRotaryEmbedding(cfg)
    pos = torch.arange(3, 3 + T)
    cos_w, sin_w = rope(q, pos.view(1, 1, -1).expand(3, 1, -1))
    cos, sin = attention.rope_cos_sin(pos, rot, 1e7, BF16)
    assert torch.equal(cos, cos_w[0]) and torch.equal(sin, sin_w[0])
    qw, kw = hf.apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos_w, sin_w)
    assert torch.equal(attention.apply_partial_rope(q, cos, sin), qw[0].transpose(0, 1))
    assert torch.equal(attention.apply_partial_rope(k, cos, sin), kw[0].transpose(0, 1))
    qg = rand(T, nh * 2 * hd, seed=3)
    q_, gate = attention.split_query_gate(qg, nh, hd)
    wq, wg = torch.chunk(qg.view(T, -1, hd * 2), 2, dim=-1)
    assert torch.equal(q_, wq) and torch.equal(gate, wg.reshape(T, -1))


def test_causal_gqa_decode_equals_prefill():
    T, nh, nkv, hd = 12, 4, 2, 16
    q, k, v = rand(T, nh, hd, seed=1), rand(T, nkv, hd, seed=2), rand(T, nkv, hd, seed=3)
    full = attention.causal_gqa(q, k, v, 0, hd**-0.5)
    last = attention.causal_gqa(q[-1:], k, v, T - 1, hd**-0.5)
    assert rel_err(last[0], full[-1]) < 1e-2
    # the first token attends only to itself
    assert torch.allclose(full[0].float(), v[0].repeat_interleave(nh // nkv, 0).float(), atol=1e-2)


def test_nvfp4_linears_against_modelopt():
    from modelopt.torch.quantization.qtensor import NVFP4QTensor

    N, K = 24, 64
    w = rand(N, K, dtype=torch.float32, seed=1)
    s2 = NVFP4QTensor.get_weights_scaling_factor_2(w)
    q, scales, _ = NVFP4QTensor.quantize(w, 16, weights_scaling_factor_2=s2)
    packed = q._quantized_data
    want_w = q.dequantize(dtype=torch.float32, scale=scales, double_scale=s2, block_sizes={-1: 16})
    assert torch.equal(nvfp4_linear.dequantize(packed, scales, s2), want_w)
    x = rand(5, K, seed=2)
    assert torch.equal(nvfp4_linear.linear_w4a16(x, packed, scales, s2), F.linear(x, want_w.to(BF16)))
    # W4A4: activations quantized per 16 with the static input scale, exactly as ModelOpt would
    input_scale = x.float().abs().amax() / (6 * 448)
    qa, sa, _ = NVFP4QTensor.quantize(x.float(), 16, weights_scaling_factor_2=input_scale)
    xa = qa.dequantize(dtype=torch.float32, scale=sa, double_scale=input_scale, block_sizes={-1: 16})
    assert torch.equal(nvfp4_linear.quantize_activations(x, input_scale), xa)
    y = nvfp4_linear.linear_w4a4(x, packed, scales, s2, input_scale)
    assert torch.equal(y, (xa @ want_w.t()).to(BF16))
    assert rel_err(y, F.linear(x.float(), w)) < 0.25  # 4-bit both sides: coarse but sane
