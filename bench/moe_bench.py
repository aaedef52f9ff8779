#!/usr/bin/env python3
"""Nvfp4MoE W4A16 kernel vs BF16 baselines at Qwen3.5-35B-A3B shapes, on a CUDA GPU.

For each token count: our routed-expert MoE (``ops.moe_cuda.nvfp4_moe``, backend w4a16: routing,
permutation, gate_up + SwiGLU, down, combine) with the weights in the W4A16 fragment layout that
sm_90 engines store ("ours"; also in ModelOpt's order, "modelopt ms", the layout sm_100's W4A16
fallback reads) against, on the same routing,
- ``torch._grouped_mm`` in BF16 with the dequantized weights (permute, grouped GEMM, SiLU*up,
  grouped GEMM, weighted combine; routing and the sort are not timed),
- a per-expert matmul loop in BF16 (same steps, one matmul pair per expert that has tokens),
and the two floors: bandwidth (expert bytes touched + activations, over the measured copy
bandwidth) and compute (2 * T * k * 3 * H * I flops over the measured BF16 matmul rate).

Token routings rotate over several random sets per timing so that repeated calls do not find the
same experts in L2. "ours" and grouped_mm are timed as CUDA-graph replays (kernel time; "eager"
adds Python and launch overhead); the per-expert loop runs eagerly (it syncs for the counts). Prints a table; with ``--out DIR`` also writes ``moe_bench.json`` and ``moe_bench.md`` there
(after each token count). Exits 2 without a CUDA device.
Targets (DESIGN.md): tokens <= 256: >= 75 % of the bandwidth floor and >= 2.5x grouped_mm;
tokens >= 4096: >= 0.9x grouped_mm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from qwen35_trt.engine.targets import ROW_MAJOR, W4A16_FRAGMENTS  # noqa: E402
from qwen35_trt.ops import moe_cuda  # noqa: E402
from qwen35_trt.ops import moe_reference as ref  # noqa: E402
from qwen35_trt.w4a16_fragments import pack_w4a16_fragments  # noqa: E402

E, TOP_K, H, I = 256, 8, 2048, 512
TOKENS = (1, 8, 64, 256, 1024, 4096, 16384)
E2M1 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float32)


def random_experts(gen: torch.Generator, dev) -> tuple[ref.MoeExperts, torch.Tensor, torch.Tensor]:
    """NVFP4 experts (row-major scales) and their BF16 dequantization [E, 2I, H], [E, H, I]."""

    def one(n, k, s2):
        packed = torch.randint(0, 256, (E, n, k // 2), generator=gen, dtype=torch.uint8)
        scales = (torch.randint(4, 11, (E, n, k // 16), generator=gen) * 8 + torch.randint(0, 8, (E, n, k // 16), generator=gen)).to(torch.uint8)
        return packed.to(dev), scales.to(dev), s2.to(dev)

    gu = one(2 * I, H, torch.rand(E, 2, generator=gen) * 0.002 + 0.001)
    dn = one(H, I, torch.rand(E, generator=gen) * 0.002 + 0.001)
    experts = ref.MoeExperts(ref.Nvfp4Weight(*gu), ref.Nvfp4Weight(*dn))

    def dequant(packed, scales, s2_rows):
        codes = torch.stack([packed & 0xF, packed >> 4], -1).flatten(-2).long()
        vals = E2M1.to(dev)[codes].unflatten(-1, (-1, 16))
        sf = scales.view(torch.float8_e4m3fn).float().unsqueeze(-1)
        return (vals * sf).flatten(-2).mul_(s2_rows[..., None]).to(torch.bfloat16)

    s2_gu = torch.cat([gu[2][:, :1].expand(E, I), gu[2][:, 1:].expand(E, I)], dim=1)
    w13 = torch.stack([dequant(gu[0][e], gu[1][e], s2_gu[e]) for e in range(E)])
    w2 = torch.stack([dequant(dn[0][e], dn[1][e], dn[2][e].expand(H)) for e in range(E)])
    return experts, w13, w2


def measure_ceilings(dev) -> tuple[float, float]:
    """(copy bandwidth bytes/s counting read + write, bf16 matmul flop/s), median of 10."""
    src = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    bw = 2 * src.numel() / time_ms(lambda: dst.copy_(src), reps=10) * 1e3
    del src, dst
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    flops = 2 * 8192**3 / time_ms(lambda: a @ b, reps=10) * 1e3
    return bw, flops


def time_ms(fn, reps: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def time_rotating(fn, inputs: list, reps: int = 10) -> float:
    """Median over `reps` of (one pass over all inputs) / len(inputs), in ms (eager launches)."""
    return time_ms(lambda: [fn(*x) for x in inputs], reps=reps) / len(inputs)


def time_graph(fn, inputs: list, reps: int = 10) -> float | None:
    """As time_rotating, with the pass captured once as a CUDA graph and replayed: the kernels'
    own time without Python and launch overhead. None if the capture fails."""
    for x in inputs:  # warm-up outside the capture (one-time kernel attributes, allocator)
        fn(*x)
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for x in inputs:
                fn(*x)
    except RuntimeError as e:
        print(f"moe_bench: CUDA graph capture failed ({e}); eager timing only", file=sys.stderr)
        return None
    return time_ms(graph.replay, reps=reps) / len(inputs)


def routing(logits: torch.Tensor):
    probs = torch.softmax(logits.float(), -1)
    w, ids = probs.topk(TOP_K, -1)
    w = w / w.sum(-1, keepdim=True)
    flat = ids.flatten()
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=E)
    offs = counts.cumsum(0).to(torch.int32)
    return w, order, offs, counts


def baseline_grouped(x, w13, w2, w, order, offs):
    xs = x[order // TOP_K]
    h = torch._grouped_mm(xs, w13.transpose(-2, -1), offs=offs)
    a = F.silu(h[:, :I]) * h[:, I:]
    y = torch._grouped_mm(a, w2.transpose(-2, -1), offs=offs)
    out = torch.zeros(x.shape[0], H, device=x.device, dtype=torch.float32)
    out.index_add_(0, order // TOP_K, y.float() * w.flatten()[order, None])
    return out.to(torch.bfloat16)


def baseline_loop(x, w13, w2, w, order, counts_host):
    xs = x[order // TOP_K]
    ys = torch.empty(xs.shape[0], H, device=x.device, dtype=torch.bfloat16)
    start = 0
    for e, n in enumerate(counts_host):
        if n:
            h = xs[start : start + n] @ w13[e].T
            ys[start : start + n] = (F.silu(h[:, :I]) * h[:, I:]) @ w2[e].T
            start += n
    out = torch.zeros(x.shape[0], H, device=x.device, dtype=torch.float32)
    out.index_add_(0, order // TOP_K, ys.float() * w.flatten()[order, None])
    return out.to(torch.bfloat16)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="*", default=list(TOKENS))
    ap.add_argument("--rotations", type=int, default=16, help="random routings cycled per timing")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not moe_cuda.available():
        print("moe_bench: no CUDA device (or _C without CUDA); nothing to time", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    experts, w13, w2 = random_experts(gen, dev)
    experts = ref.MoeExperts(*[ref.Nvfp4Weight(*(t.to(dev) for t in (p.weight, p.weight_scale, p.weight_scale_2))) for p in (experts.gate_up, experts.down)])

    def fragments(p: ref.Nvfp4Weight) -> ref.Nvfp4Weight:
        codes, scales = pack_w4a16_fragments(p.weight.cpu().numpy(), p.weight_scale.cpu().numpy())
        return ref.Nvfp4Weight(torch.from_numpy(codes).to(dev), torch.from_numpy(scales).to(dev), p.weight_scale_2)

    experts_frag = ref.MoeExperts(fragments(experts.gate_up), fragments(experts.down))
    bw, flops = measure_ceilings(dev)
    expert_bytes = (2 * I * H // 2 + 2 * I * H // 16) + (H * I // 2 + H * I // 16) + 12
    card = torch.cuda.get_device_name(dev)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = "unknown"
    print(f"card {card}, commit {commit}; measured copy {bw / 1e12:.2f} TB/s (read+write), bf16 matmul {flops / 1e12:.0f} TFLOP/s")
    rows = []
    hdr = (f"{'tokens':>6} {'experts':>7} {'ours ms':>8} {'eager ms':>8} {'modelopt':>8} {'grouped ms':>10} {'loop ms':>8} {'bw floor':>8} "
           f"{'fl floor':>8} {'% bw':>5} {'x grp':>6} {'x loop':>6} {'rel err':>8}")
    print(hdr)
    for T in args.tokens:
        inputs = []
        for r in range(args.rotations):
            g = torch.Generator().manual_seed(1000 + r)
            x = torch.randn(T, H, generator=g).to(torch.bfloat16).to(dev)
            logits = torch.randn(T, E, generator=g).to(dev)
            inputs.append((x, logits))
        touched = statistics.mean(int(torch.unique(l.topk(TOP_K, -1).indices).numel()) for _, l in inputs)
        ours_fn = lambda x, l: moe_cuda.nvfp4_moe(x, l, TOP_K, experts_frag, scale_layout=W4A16_FRAGMENTS, backend="w4a16")  # noqa: E731
        modelopt_fn = lambda x, l: moe_cuda.nvfp4_moe(x, l, TOP_K, experts, scale_layout=ROW_MAJOR, backend="w4a16")  # noqa: E731
        t_eager = time_rotating(ours_fn, inputs)
        t_ours = time_graph(ours_fn, inputs) or t_eager
        t_modelopt = time_graph(modelopt_fn, inputs) or time_rotating(modelopt_fn, inputs)
        routed = [(x, *routing(l)) for x, l in inputs]
        grp_fn = lambda x, w, o, offs, c: baseline_grouped(x, w13, w2, w, o, offs)  # noqa: E731
        t_grp = time_graph(grp_fn, routed) or time_rotating(grp_fn, routed)
        loop_inputs = [(x, w, o, c.tolist()) for x, w, o, _, c in routed[:4]]  # slow: fewer rotations
        t_loop = time_rotating(lambda x, w, o, c: baseline_loop(x, w13, w2, w, o, c), loop_inputs, reps=3)
        bytes_floor = touched * expert_bytes + T * H * 2 * 2 + T * E * 4
        t_bw = bytes_floor / bw * 1e3
        t_fl = 2 * T * TOP_K * 3 * H * I / flops * 1e3
        x, l = inputs[0]
        ours = ours_fn(x, l)
        if not torch.equal(ours, modelopt_fn(x, l)):  # the same products, the same order: the same bits
            print(f"moe_bench: T={T}: the fragment layout and ModelOpt's order give different outputs", file=sys.stderr)
            return 1
        base = baseline_grouped(x, w13, w2, *routed[0][1:4])
        err = ((ours.float() - base.float()).norm() / base.float().norm()).item()
        row = dict(tokens=T, experts_touched=touched, ours_ms=t_ours, ours_eager_ms=t_eager, modelopt_order_ms=t_modelopt,
                   grouped_mm_ms=t_grp, loop_ms=t_loop,
                   bw_floor_ms=t_bw, flop_floor_ms=t_fl, pct_bw_floor=100 * t_bw / t_ours,
                   speedup_vs_grouped=t_grp / t_ours, speedup_vs_loop=t_loop / t_ours, rel_err_vs_grouped=err)
        rows.append(row)
        print(f"{T:>6} {touched:>7.0f} {t_ours:>8.4f} {t_eager:>8.4f} {t_modelopt:>8.4f} {t_grp:>10.4f} {t_loop:>8.3f} {t_bw:>8.4f} {t_fl:>8.4f} "
              f"{row['pct_bw_floor']:>5.0f} {row['speedup_vs_grouped']:>6.2f} {row['speedup_vs_loop']:>6.2f} {err:>8.1e}", flush=True)
        if args.out is not None:  # after each token count: a run stopped by a time limit keeps its rows
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "moe_bench.json").write_text(json.dumps(
                {"card": card, "commit": commit, "copy_bytes_per_s": bw, "bf16_flops": flops, "shape": dict(E=E, top_k=TOP_K, H=H, I=I), "rows": rows}, indent=2))
            (args.out / "moe_bench.md").write_text(markdown(card, commit, bw, flops, rows))
    return 0


def markdown(card: str, commit: str, bw: float, flops: float, rows: list[dict]) -> str:
    """The table as markdown (ms per call; "ours" (fragment layout), "modelopt order" and grouped_mm are
    CUDA-graph replays)."""
    lines = [f"card {card}, commit {commit}; copy {bw / 1e12:.2f} TB/s (read+write), bf16 matmul {flops / 1e12:.0f} TFLOP/s", "",
             "| tokens | experts | ours ms | eager ms | modelopt order ms | grouped_mm ms | loop ms | bw floor ms | flop floor ms | % bw floor | x grouped | x loop | rel err |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['tokens']} | {r['experts_touched']:.0f} | {r['ours_ms']:.4f} | {r['ours_eager_ms']:.4f} | {r['modelopt_order_ms']:.4f} | {r['grouped_mm_ms']:.4f} | "
                     f"{r['loop_ms']:.3f} | {r['bw_floor_ms']:.4f} | {r['flop_floor_ms']:.4f} | {r['pct_bw_floor']:.0f} | "
                     f"{r['speedup_vs_grouped']:.2f} | {r['speedup_vs_loop']:.2f} | {r['rel_err_vs_grouped']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
