#!/usr/bin/env python3
"""Speed of the CPU reference model (``qwen35_trt.model``), and a full-dimension smoke run.

    python bench/cpu_model_bench.py            tiny model: prefill and decode tokens/s
    python bench/cpu_model_bench.py --full     also the 2-layer synthetic checkpoint with the real
                                               35B-A3B dimensions: load, prefill, decode, RSS

The tiny model is the README demo's (``make_tiny_checkpoint``). The reference model is the
correctness anchor, not a fast path: the numbers say how long the CPU tests and the CPU server
take, nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(ckpt: Path, out: Path) -> Path:
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine

    build_engine(open_checkpoint(ckpt), out, target="sm_90", force=True, progress=False)
    return out


def timed_forward(model, batch, cache, repeats=1):
    t = time.perf_counter()
    for _ in range(repeats):
        out = model.forward(batch, cache)
    return (time.perf_counter() - t) / repeats, out


def bench_model(model, label: str, prefill_lengths, decode_steps: int, batch_sizes) -> list[tuple]:
    rows = []
    g = torch.Generator().manual_seed(0)
    V = model.cfg.vocab_size
    for T in prefill_lengths:
        cache = model.new_cache(1)
        slot = cache.allocate()
        ids = torch.randint(0, V, (T,), generator=g).tolist()
        sec, _ = timed_forward(model, [(slot, ids)], cache)
        rows.append((label, f"prefill T={T}", 1, T / sec, sec * 1e3))
    for B in batch_sizes:
        cache = model.new_cache(B)
        slots = [cache.allocate() for _ in range(B)]
        batch = [(s, torch.randint(0, V, (16,), generator=g).tolist()) for s in slots]
        _, logits = timed_forward(model, batch, cache)
        t = time.perf_counter()
        for _ in range(decode_steps):
            toks = [int(l.float().argmax()) for l in logits]
            logits = model.forward([(s, [tok]) for s, tok in zip(slots, toks)], cache)
        sec = (time.perf_counter() - t) / decode_steps
        rows.append((label, "decode (ctx 16+)", B, B / sec, sec * 1e3))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="also run the full-dimension 2-layer synthetic checkpoint")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", help="where to write checkpoints and engines (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from qwen35_trt.model import Qwen35Model
    from qwen35_trt.testing.tiny_checkpoint import make_tiny_checkpoint

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        print("making the tiny checkpoint ...", file=sys.stderr)
        tiny = build(make_tiny_checkpoint(tmp / "tiny"), tmp / "tiny-engine")
        model = Qwen35Model(tiny)
        rows = bench_model(model, "tiny", (16, 128, 512), 32, (1, 8, 32))
        full_note = None
        if args.full:
            from qwen35_trt.testing.synthetic import make_synthetic_checkpoint

            print("synthesising the full-dimension 2-layer checkpoint (~3 GB) ...", file=sys.stderr)
            ckpt = make_synthetic_checkpoint(tmp / "full", num_layers=2)
            t = time.perf_counter()
            engine = build(ckpt, tmp / "full-engine")
            t_build = time.perf_counter() - t
            del model
            t = time.perf_counter()
            big = Qwen35Model(engine)
            t_load = time.perf_counter() - t
            rows += bench_model(big, "35B dims, 2 layers", (32,), 4, (1,))
            cache = big.new_cache(1)
            slot = cache.allocate()
            logits = big.forward([(slot, list(range(8)))], cache)[0]
            finite = bool(torch.isfinite(logits.float()).all())
            full_note = (
                f"full-dimension engine: build {t_build:.1f} s, load {t_load:.1f} s, logits shape "
                f"{tuple(logits.shape)} ({'finite' if finite else 'NOT finite: random synthetic weights'}), "
                f"peak RSS {rss_mib():.0f} MiB"
            )
    print(f"\nCPU reference model, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'model':<20} {'step':<18} {'seqs':>5} {'tokens/s':>10} {'ms/step':>10}")
    for label, step, b, tps, ms in rows:
        print(f"{label:<20} {step:<18} {b:>5} {tps:>10.1f} {ms:>10.1f}")
    if full_note:
        print(full_note)
    print(f"peak RSS {rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
