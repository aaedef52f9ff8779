#!/usr/bin/env python3
"""Gated DeltaNet kernels on a GPU: our CUDA kernels against flash-linear-attention and the
bandwidth floor, at Qwen3.5-35B-A3B shapes (Hk=16, Hv=32, dk=dv=128, conv C=8192, W=4).

    python bench/gdn_bench.py [--out DIR] [--quick] [--no-fla]

Timing: each measurement is a CUDA graph captured once over the calls and replayed (as
bench/moe_bench.py does), the median of --repeat replays between two CUDA events divided by the calls
per replay: the kernels' own time, without Python, argument checks and launch overhead (tens of
microseconds, the size of a decode step's floor). Our kernels are also timed eagerly ("eager":
each call between two events) to show that overhead. A measurement whose capture fails (a baseline
that synchronises with the host, say) falls back to eager timing; the table says which was used.

Sections:
  copy       device-to-device copy of 1 GiB: the measured bandwidth (bytes read + written / time)
  conv1d     CausalConv1d prefill, B x T = 1 x 8192, 8 x 2048, 32 x 512 (FLA causal_conv1d, silu)
  prefill    chunked GatedDeltaNet prefill, the same B x T (FLA chunk_gated_delta_rule, varlen)
  decode     recurrent decode, B = 1, 16, 64, 256 (FLA fused_recurrent_gated_delta_rule); floor =
             the state bytes read and written over the measured copy bandwidth. Decode rotates
             over several state pools so that small batches are not timed out of L2.
Every FLA comparison runs on the same inputs and reports the relative difference of the outputs
(and final states). FLA gets its gates precomputed (g, beta), i.e. its time excludes the gating
that our kernels fuse. Without FLA (not installed, --no-fla) only our numbers and the floors.

Writes gdn_bench.json and gdn_bench.md to --out (default: $OUT, else <tmp>/gdn_bench) and prints the
table. Needs a CUDA device; --help works anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HK, HV, DK, DV, W = 16, 32, 128, 128, 4
CONV_C = 2 * HK * DK + HV * DV
PREFILL_SHAPES = [(1, 8192), (8, 2048), (32, 512)]
DECODE_BATCHES = [1, 16, 64, 256]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else <tmp>/gdn_bench)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and only the first shape of each section")
    p.add_argument("--no-fla", action="store_true", help="skip the flash-linear-attention baseline")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per measurement (median reported)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Timing


def time_ms(fn, repeat: int, warmup: int = 3, setup=None) -> float:
    """Median milliseconds of fn() over `repeat` runs, each between two CUDA events."""
    import torch

    for _ in range(warmup):
        if setup:
            setup()
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_graph(calls, repeat: int, warmup: int = 2) -> float | None:
    """Median milliseconds per call of `calls` (a list of no-argument callables, e.g. one per
    rotated input set) captured once, in order, as one CUDA graph and replayed: the kernels' time
    without Python and launch overhead. None when the capture fails (the caller times eagerly)."""
    import torch

    for _ in range(warmup):  # outside the capture: one-time kernel attributes, autotuning, allocator
        for c in calls:
            c()
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for c in calls:
                c()
    except Exception as e:  # noqa: BLE001 - e.g. a host synchronisation inside the captured calls
        torch.cuda.synchronize()
        print(f"gdn_bench: CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              "timing eagerly", file=sys.stderr)
        return None
    ms = time_ms(graph.replay, repeat, warmup=1) / len(calls)
    del graph
    return ms


def measure(calls, repeat: int, setup=None) -> tuple[float, str]:
    """(ms per call, "graph" or "eager"): graph replay when the capture works, else eager."""
    ms = time_graph(calls, repeat)
    if ms is not None:
        return ms, "graph"
    if len(calls) == 1:
        return time_ms(calls[0], repeat), "eager"
    it = {"i": 0}

    def one():
        calls[it["i"]]()
        it["i"] = (it["i"] + 1) % len(calls)

    return time_ms(one, repeat * len(calls)), "eager"


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    if not bool(a.isfinite().all()):
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def git_commit() -> str:
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return c.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if c.returncode == 0 else "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


# --------------------------------------------------------------------------------------------
# Inputs


def gdn_inputs(T: int, seed: int):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s, std=1.0: (torch.randn(*s, generator=g, device="cuda") * std).bfloat16()  # noqa: E731
    return dict(q=r(T, HK, DK), k=r(T, HK, DK), v=r(T, HV, DV), a=r(T, HV), b=r(T, HV, std=1.5),
                A_log=torch.randn(HV, generator=g, device="cuda") - 0.5, dt_bias=torch.randn(HV, generator=g, device="cuda") * 0.5)


def gates(x):
    """(g fp32, beta bf16) exactly as our kernels compute them, for FLA."""
    import torch.nn.functional as F

    g = -x["A_log"].float().exp() * F.softplus(x["a"].float() + x["dt_bias"].float())
    return g, x["b"].float().sigmoid().bfloat16()


def load_fla():
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except Exception as e:  # noqa: BLE001
        return None, f"flash-linear-attention not importable: {e}"
    conv = None
    try:
        from fla.modules.causal_conv1d import causal_conv1d as conv
    except Exception:  # noqa: BLE001
        pass
    import fla

    return dict(chunk=chunk_gated_delta_rule, recurrent=fused_recurrent_gated_delta_rule, conv=conv,
                version=getattr(fla, "__version__", "?")), None


# --------------------------------------------------------------------------------------------
# Sections


def bench_copy(repeat):
    import torch

    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), repeat)
    return {"bytes": 2 * n, "ms": ms, "GBps": 2 * n / ms / 1e6}


def bench_conv(B, T, fla, repeat, bw):
    import torch

    from qwen35_trt.ops import gdn_cuda

    g = torch.Generator(device="cuda").manual_seed(B * T)
    x = torch.randn(T * B, CONV_C, generator=g, device="cuda").bfloat16()
    w = (torch.randn(CONV_C, W, generator=g, device="cuda") * 0.5).bfloat16()
    pool = torch.zeros(B, CONV_C, W - 1, dtype=torch.bfloat16, device="cuda")
    cu = torch.arange(0, B * T + 1, T, dtype=torch.int32, device="cuda")
    slots = torch.arange(B, dtype=torch.int32, device="cuda")
    init = torch.zeros(B, dtype=torch.uint8, device="cuda")
    ours = lambda: gdn_cuda.causal_conv1d(x, w, pool, slots, cu, init, validate=False)  # noqa: E731
    row = {"B": B, "T": T, "ours_eager_ms": time_ms(ours, repeat)}
    row["ours_ms"], row["ours_timing"] = measure([ours], repeat)
    row["floor_ms"] = 2 * x.numel() * 2 / (bw * 1e6)
    row["ours_of_floor"] = row["floor_ms"] / row["ours_ms"]
    if fla and fla.get("conv"):
        try:
            cu_l = cu.long()
            f = lambda: fla["conv"](x[None], weight=w, activation="silu", cu_seqlens=cu_l)  # noqa: E731
            row["fla_ms"], row["fla_timing"] = measure([f], repeat)
            y_f = f()
            y_f = y_f[0] if isinstance(y_f, tuple) else y_f
            row["rel_diff_vs_fla"] = rel(ours(), y_f.reshape(T * B, CONV_C))
            row["speedup_vs_fla"] = row["fla_ms"] / row["ours_ms"]
        except Exception as e:  # noqa: BLE001
            row["fla_error"] = f"{type(e).__name__}: {e}"
    return row


def bench_prefill(B, T, fla, repeat, bw):
    import torch

    from qwen35_trt.ops import gdn_cuda

    x = gdn_inputs(B * T, seed=B + T)
    pool = torch.zeros(B, HV, DK, DV, device="cuda")
    cu = torch.arange(0, B * T + 1, T, dtype=torch.int32, device="cuda")
    slots = torch.arange(B, dtype=torch.int32, device="cuda")
    init = torch.zeros(B, dtype=torch.uint8, device="cuda")
    ws = torch.empty(gdn_cuda.workspace_bytes(B, B * T, HV, DK, DV), dtype=torch.uint8, device="cuda")
    ours = lambda: gdn_cuda.gated_delta_net(**x, state_pool=pool, slots=slots, cu_seqlens=cu, has_initial_state=init,  # noqa: E731
                                            algorithm="chunked", validate=False, workspace=ws)
    row = {"B": B, "T": T, "ours_eager_ms": time_ms(ours, repeat), "workspace_MiB": ws.numel() / 2**20}
    row["ours_ms"], row["ours_timing"] = measure([ours], repeat)
    io = (2 * B * T * HK * DK + 2 * B * T * HV * DV + 2 * B * T * HV) * 2 + B * HV * DK * DV * 4
    row["io_floor_ms"] = io / (bw * 1e6)
    row["tokens_per_s"] = B * T / (row["ours_ms"] / 1e3)
    if fla:
        try:
            g, beta = gates(x)
            cu_l = cu.long()
            f = lambda: fla["chunk"](x["q"][None], x["k"][None], x["v"][None], g[None], beta[None],  # noqa: E731
                                     scale=DK ** -0.5, initial_state=None, output_final_state=True,
                                     use_qk_l2norm_in_kernel=True, cu_seqlens=cu_l)
            row["fla_ms"], row["fla_timing"] = measure([f], repeat)
            o_f, s_f = f()
            o = ours()
            torch.cuda.synchronize()
            row["rel_diff_vs_fla"] = rel(o, o_f[0])
            row["state_rel_diff_vs_fla"] = rel(pool, s_f)
            row["speedup_vs_fla"] = row["fla_ms"] / row["ours_ms"]
        except Exception as e:  # noqa: BLE001
            row["fla_error"] = f"{type(e).__name__}: {e}"
    return row


def bench_decode(B, fla, repeat, bw):
    import torch

    from qwen35_trt.ops import gdn_cuda

    x = gdn_inputs(B, seed=1000 + B)
    state_bytes = B * HV * DK * DV * 4
    n_rot = max(1, math.ceil((256 << 20) / state_bytes))  # > L2 in total: time HBM, not the cache
    pools = [torch.randn(B, HV, DK, DV, device="cuda") * 0.1 for _ in range(n_rot)]
    slots = torch.randperm(B, device="cuda").to(torch.int32)
    it = {"i": 0}

    def rotate():
        it["i"] = (it["i"] + 1) % n_rot

    ours = lambda: gdn_cuda.gated_delta_net(**x, state_pool=pools[it["i"]], slots=slots, validate=False)  # noqa: E731
    row = {"B": B, "ours_eager_ms": time_ms(ours, repeat, setup=rotate), "state_MiB": 2 * state_bytes / 2**20,
           "rotations": n_rot}
    # One graph over every pool in turn: each replay reads and writes n_rot different states.
    ours_each = [lambda p=p: gdn_cuda.gated_delta_net(**x, state_pool=p, slots=slots, validate=False) for p in pools]
    row["ours_ms"], row["ours_timing"] = measure(ours_each, repeat)
    row["floor_ms"] = 2 * state_bytes / (bw * 1e6)
    row["ours_of_floor"] = row["floor_ms"] / row["ours_ms"]
    if fla:
        try:
            g, beta = gates(x)
            states = [p[slots.long()].contiguous() for p in pools]  # FLA's best case: states already gathered
            cu_l = torch.arange(B + 1, device="cuda", dtype=torch.long)

            def fla_on(state):
                return fla["recurrent"](x["q"][None], x["k"][None], x["v"][None], g[None], beta[None],
                                        scale=DK ** -0.5, initial_state=state, output_final_state=True,
                                        use_qk_l2norm_in_kernel=True, cu_seqlens=cu_l)

            row["fla_ms"], row["fla_timing"] = measure([lambda s=s: fla_on(s) for s in states], repeat)
            f = lambda: fla_on(states[0])  # noqa: E731
            check = pools[0].clone()
            o_f, s_f = f()
            o = gdn_cuda.gated_delta_net(**x, state_pool=check, slots=slots, validate=False)
            torch.cuda.synchronize()
            row["rel_diff_vs_fla"] = rel(o, o_f[0])
            row["state_rel_diff_vs_fla"] = rel(check[slots.long()], s_f)
            row["speedup_vs_fla"] = row["fla_ms"] / row["ours_ms"]
        except Exception as e:  # noqa: BLE001
            row["fla_error"] = f"{type(e).__name__}: {e}"
    return row


# --------------------------------------------------------------------------------------------


def fmt(v, spec=".4f", suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def table(res) -> str:
    def t(r, key):  # a time, marked "(e)" when the graph capture failed and it was timed eagerly
        v = r.get(f"{key}_ms")
        return fmt(v) + (" (e)" if v is not None and r.get(f"{key}_timing") == "eager" else "")

    def pct(r):
        return fmt(100 * r["ours_of_floor"] if "ours_of_floor" in r else None, ".0f")

    lines = [f"device: {res['device']}  commit: {res['commit']}  FLA: {res['fla']}",
             f"copy bandwidth: {res['copy']['GBps']:.0f} GB/s (read + write)",
             "ours / FLA ms: per call, CUDA-graph replays (median); (e): capture failed, timed eagerly; "
             "eager ms: our call timed eagerly (Python, checks and launch included)", ""]
    lines += ["| op | shape | ours ms | eager ms | FLA ms | ours vs FLA | floor ms | % of floor | rel diff vs FLA |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["conv1d"]:
        lines.append(f"| conv1d | {r['B']}x{r['T']} | {t(r, 'ours')} | {fmt(r.get('ours_eager_ms'))} | {t(r, 'fla')} | "
                     f"{fmt(r.get('speedup_vs_fla'), '.2f', 'x')} | {fmt(r.get('floor_ms'))} | {pct(r)} | "
                     f"{fmt(r.get('rel_diff_vs_fla'), '.1e')} |")
    for r in res["prefill"]:
        lines.append(f"| prefill | {r['B']}x{r['T']} | {t(r, 'ours')} | {fmt(r.get('ours_eager_ms'))} | {t(r, 'fla')} | "
                     f"{fmt(r.get('speedup_vs_fla'), '.2f', 'x')} | {fmt(r.get('io_floor_ms'))} (io) | - | {fmt(r.get('rel_diff_vs_fla'), '.1e')} |")
    for r in res["decode"]:
        lines.append(f"| decode | B={r['B']} | {t(r, 'ours')} | {fmt(r.get('ours_eager_ms'))} | {t(r, 'fla')} | "
                     f"{fmt(r.get('speedup_vs_fla'), '.2f', 'x')} | {fmt(r.get('floor_ms'))} | {pct(r)} | "
                     f"{fmt(r.get('rel_diff_vs_fla'), '.1e')} |")
    errors = [f"{sec} {r.get('B')}x{r.get('T', 1)}: {r[k]}" for sec in ("conv1d", "prefill", "decode") for r in res[sec]
              for k in ("fla_error", "error") if k in r]
    if errors:
        lines += ["", "errors:"] + [f"- {e}" for e in errors]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or Path(tempfile.gettempdir()) / "gdn_bench")
    import torch

    from qwen35_trt.ops import gdn_cuda

    if not gdn_cuda.available():
        print("gdn_bench: no CUDA device, or qwen35_trt._C built without CUDA", file=sys.stderr)
        return 2
    repeat = 5 if args.quick else args.repeat
    fla, why = (None, "disabled (--no-fla)") if args.no_fla else load_fla()
    res = {"device": torch.cuda.get_device_name(0), "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "torch": torch.__version__, "python": platform.python_version(),
           "fla": fla["version"] if fla else why, "conv1d": [], "prefill": [], "decode": []}
    res["copy"] = bench_copy(repeat)
    bw = res["copy"]["GBps"]
    shapes = PREFILL_SHAPES[:1] if args.quick else PREFILL_SHAPES
    batches = DECODE_BATCHES[:2] if args.quick else DECODE_BATCHES
    for name, fn, items in (("conv1d", bench_conv, shapes), ("prefill", bench_prefill, shapes), ("decode", bench_decode, batches)):
        for item in items:
            shape = item if isinstance(item, tuple) else (item,)
            try:
                res[name].append(fn(*shape, fla, repeat, bw))
            except Exception as e:  # noqa: BLE001 - keep the other measurements
                traceback.print_exc()
                res[name].append({"B": shape[0], "T": shape[1] if len(shape) > 1 else 1, "error": f"{type(e).__name__}: {e}"})
            print(f"{name} {shape}: {res[name][-1]}", flush=True)
            save(out, res)  # after each measurement: a run stopped by a time limit keeps what it measured
    print(save(out, res))
    return 0


def save(out: Path, res) -> str:
    """Write gdn_bench.json and gdn_bench.md to `out`; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gdn_bench.json").write_text(json.dumps(res, indent=2) + "\n")
    text = table(res)
    (out / "gdn_bench.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
