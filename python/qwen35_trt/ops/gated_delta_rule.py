"""The gated delta rule (Gated DeltaNet), recurrent and chunked, variable-length.

Per sequence and value head, with fp32 state ``S`` [dk, dv] ("K-first") and per-token inputs
q, k [dk], v [dv], log-decay g <= 0 and write strength beta in (0, 1):

    S = exp(g_t) * S
    u = beta_t * (v_t - S^T k_t)        (the delta rule: write only what S does not predict)
    S = S + k_t u^T
    o_t = S^T q_t

q and k are L2-normalised per head (``x * rsqrt(sum(x^2) + 1e-6)``) and q is scaled by
``dk^-0.5`` when ``use_qk_l2norm`` (the model always uses it). Value head j reads q/k head
``j // (Hv / Hk)`` (grouped values). The chunked form computes the same function 64 tokens at a
time through the WY / UT transform; the two agree to fp32 rounding.

Shapes (sequences concatenated along T, delimited by ``cu_seqlens`` [B + 1]):
q, k [T, Hk, dk]; v [T, Hv, dv]; g, beta [T, Hv]; states [B, Hv, dk, dv] fp32.
Outputs o [T, Hv, dv] in v's dtype and the final states [B, Hv, dk, dv] fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

L2NORM_EPS = 1e-6


def gdn_gating(a: torch.Tensor, b: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, beta) from the projections: ``g = -exp(A_log) * softplus(a + dt_bias)`` in fp32,
    ``beta = sigmoid(b)`` in b's dtype. a, b: [T, Hv]; A_log, dt_bias: [Hv]."""
    g = -A_log.float().exp() * F.softplus(a.float() + dt_bias)
    return g, b.sigmoid()


def _prepare(q, k, v, g, beta, scale, use_qk_l2norm):
    """fp32, heads expanded to Hv, normalised and scaled: the common front of both forms."""
    hk, hv = k.shape[1], v.shape[1]
    if hv % hk:
        raise ValueError(f"value heads ({hv}) must be a multiple of key heads ({hk})")
    q, k, v, g, beta = (t.float() for t in (q, k, v, g, beta))
    if use_qk_l2norm:
        q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + L2NORM_EPS)
        k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + L2NORM_EPS)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    q = q * scale
    if hv != hk:
        q = q.repeat_interleave(hv // hk, dim=1)
        k = k.repeat_interleave(hv // hk, dim=1)
    return q, k, v, g, beta


def _initial(states, b, hv, dk, dv, device):
    if states is None:
        return torch.zeros(hv, dk, dv, dtype=torch.float32, device=device)
    return states[b].float().clone()


def recurrent_gated_delta_rule(q, k, v, g, beta, cu_seqlens, initial_states=None, scale=None, use_qk_l2norm=True):
    """Token-by-token gated delta rule (the definition). See the module docstring for shapes."""
    cu = [int(c) for c in cu_seqlens]
    out_dtype = v.dtype
    q, k, v, g, beta = _prepare(q, k, v, g, beta, scale, use_qk_l2norm)
    hv, dk, dv = v.shape[1], k.shape[-1], v.shape[-1]
    o = torch.empty_like(v)
    finals = []
    for b in range(len(cu) - 1):
        S = _initial(initial_states, b, hv, dk, dv, v.device)  # [Hv, dk, dv]
        for t in range(cu[b], cu[b + 1]):
            S = S * g[t].exp()[:, None, None]
            pred = (S * k[t][:, :, None]).sum(-2)  # S^T k: what the state already predicts for k
            u = (v[t] - pred) * beta[t][:, None]
            S = S + k[t][:, :, None] * u[:, None, :]
            o[t] = (S * q[t][:, :, None]).sum(-2)
        finals.append(S)
    return o.to(out_dtype), torch.stack(finals)


def chunk_gated_delta_rule(q, k, v, g, beta, cu_seqlens, initial_states=None, scale=None, use_qk_l2norm=True, chunk_size=64):
    """Chunked (WY / UT) gated delta rule; same function as ``recurrent_gated_delta_rule``.

    Within a chunk of C tokens with cumulative log-decay c_i = g_0 + ... + g_i:
      A[i, j] = beta_i (k_i . k_j) exp(c_i - c_j) for j < i;  T = (I + A)^-1 (unit lower triangular)
      U = T (beta * V),  W = T (beta * exp(c) * K)          (the WY representation)
      V' = U - W S                                          (per-token corrections vs the old state)
      O = (exp(c) * Q) S + [(Q K^T) * exp(c_i - c_j)]_{j<=i} V'
      S <- exp(c_last) S + (exp(c_last - c) * K)^T V'
    """
    cu = [int(c) for c in cu_seqlens]
    out_dtype = v.dtype
    q, k, v, g, beta = _prepare(q, k, v, g, beta, scale, use_qk_l2norm)
    hv, dk, dv = v.shape[1], k.shape[-1], v.shape[-1]
    C = chunk_size
    o = torch.empty_like(v)
    finals = []
    causal = torch.ones(C, C, dtype=torch.bool, device=v.device).tril()
    strict = causal.tril(-1)
    eye = torch.eye(C, dtype=torch.float32, device=v.device)
    for b in range(len(cu) - 1):
        S = _initial(initial_states, b, hv, dk, dv, v.device)
        for s in range(cu[b], cu[b + 1], C):
            e = min(s + C, cu[b + 1])
            n = e - s
            # [Hv, C, d] views of the chunk, zero-padded to C (padding has g = 0, beta = 0: no effect)
            qc, kc, vc = (F.pad(x[s:e].transpose(0, 1), (0, 0, 0, C - n)) for x in (q, k, v))
            gc, bc = (F.pad(x[s:e].transpose(0, 1), (0, C - n)) for x in (g, beta))
            c = gc.cumsum(-1)  # [Hv, C]
            diff = c[:, :, None] - c[:, None, :]  # c_i - c_j
            decay = torch.where(causal, diff, torch.full_like(diff, float("-inf"))).exp()
            kk = kc @ kc.transpose(-1, -2)
            A = torch.where(strict, bc[:, :, None] * kk * decay, torch.zeros_like(kk))
            T_inv = A + eye
            U = torch.linalg.solve_triangular(T_inv, bc[:, :, None] * vc, upper=False, unitriangular=True)
            Wm = torch.linalg.solve_triangular(T_inv, (bc * c.exp())[:, :, None] * kc, upper=False, unitriangular=True)
            Vn = U - Wm @ S
            qk = (qc @ kc.transpose(-1, -2)) * decay
            oc = (qc * c.exp()[:, :, None]) @ S + qk @ Vn
            o[s:e] = oc[:, :n].transpose(0, 1)
            last = c[:, -1]
            S = S * last.exp()[:, None, None] + (kc * (last[:, None] - c).exp()[:, :, None]).transpose(-1, -2) @ Vn
        finals.append(S)
    return o.to(out_dtype), torch.stack(finals)


def gated_delta_net(q, k, v, a, b, A_log, dt_bias, state_pool: torch.Tensor, slots, cu_seqlens=None, has_initial_state=None) -> torch.Tensor:
    """The GatedDeltaNet contract op (docs/ops.md) on the spec functions: fused gating
    (``gdn_gating``), states from and to the slots of ``state_pool`` [num_slots, Hv, dk, dv] fp32
    (updated in place). Decode (no cu_seqlens): one token per sequence, the recurrent form.
    Prefill: cu_seqlens [B + 1], has_initial_state [B], the chunked form. Each sequence is computed
    on its own (batch-invariant). Returns o [T, Hv, dv] in v's dtype."""
    slots = [int(s) for s in slots]
    decode = cu_seqlens is None
    cu = list(range(len(slots) + 1)) if decode else [int(c) for c in cu_seqlens]
    outs = []
    for i, slot in enumerate(slots):
        s, e = cu[i], cu[i + 1]
        g, beta = gdn_gating(a[s:e], b[s:e], A_log, dt_bias)
        init = state_pool[slot][None] if decode or bool(has_initial_state[i]) else None
        form = recurrent_gated_delta_rule if decode else chunk_gated_delta_rule
        o, state = form(q[s:e], k[s:e], v[s:e], g, beta, [0, e - s], initial_states=init)
        state_pool[slot] = state[0]
        outs.append(o)
    return torch.cat(outs, 0)
