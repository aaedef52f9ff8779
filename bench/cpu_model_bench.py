#!/usr/bin/env python3
"""Speed of the CPU reference model (``qwen35_trt.model``), and a full-dimension smoke run.

    python bench/cpu_model_bench.py            tiny model: prefill and decode tokens/s
    python bench/cpu_model_bench.py --full     also the 2-layer synthetic checkpoint with the real
                                               35B-A3B dimensions: load, prefill, decode, RSS
    ... --full --transformers                  and, in the same run, transformers' Qwen3.5 MoE of
                                               that config (random bf16 weights, grouped_mm experts,
                                               logits_to_keep=1): the baseline of the same steps

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
        warm = model.new_cache(1)  # first calls pay one-time costs (allocations, pools): not timed
        model.forward([(warm.allocate(), torch.randint(0, V, (T,), generator=g).tolist())], warm)
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
        logits = model.forward([(s, [int(l.float().argmax())]) for s, l in zip(slots, logits)], cache)  # warm-up step
        t = time.perf_counter()
        for _ in range(decode_steps):
            toks = [int(l.float().argmax()) for l in logits]
            logits = model.forward([(s, [tok]) for s, tok in zip(slots, toks)], cache)
        sec = (time.perf_counter() - t) / decode_steps
        rows.append((label, "decode (ctx 16+)", B, B / sec, sec * 1e3))
    return rows


def transformers_rows(cfg_dict: dict, prefill_lengths, decode_steps: int) -> tuple[list[tuple], float]:
    """transformers' Qwen3_5MoeForCausalLM of ``cfg_dict`` with random bf16 weights: prefill of one
    sequence (``logits_to_keep=1``, as our model returns the last token's logits) and decode steps
    through its cache. Returns (rows, bf16 bytes of the decoder layers' weights)."""
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    keep = {k: v for k, v in cfg_dict.items() if k not in ("quantization_config",)}
    cfg = Qwen3_5MoeTextConfig(**keep)
    cfg._experts_implementation = "grouped_mm"  # transformers 5's fused expert GEMMs
    model = Qwen3_5MoeForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()
    layer_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".layers." in n)
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for T in prefill_lengths:
            model(torch.randint(0, cfg.vocab_size, (1, T), generator=g), use_cache=True, logits_to_keep=1)  # warm-up
            ids = torch.randint(0, cfg.vocab_size, (1, T), generator=g)
            t = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            sec = time.perf_counter() - t
            rows.append(("transformers", f"prefill T={T}", 1, T / sec, sec * 1e3))
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        out = model(tok, past_key_values=past, use_cache=True, logits_to_keep=1)  # warm-up step
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t = time.perf_counter()
        for _ in range(decode_steps):
            out = model(tok, past_key_values=past, use_cache=True, logits_to_keep=1)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sec = (time.perf_counter() - t) / decode_steps
        rows.append(("transformers", "decode (ctx 16+)", 1, 1 / sec, sec * 1e3))
    return rows, layer_bytes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="also run the full-dimension 2-layer synthetic checkpoint")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", help="where to write checkpoints and engines (default: a temporary folder)")
    p.add_argument("--transformers", action="store_true",
                   help="with --full: the same steps on transformers' model of the full-dimension config (the baseline)")
    p.add_argument("--prefill", type=int, nargs="+", default=[32], help="prefill lengths of the full-dimension runs (default 32)")
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
            rows += bench_model(big, "35B dims, 2 layers", tuple(args.prefill), 4, (1,))
            from qwen35_trt.safetensors_io import SafetensorsFile

            ours_bytes = sum(t.nbytes for n, t in SafetensorsFile(big.engine.weights_path).tensors.items() if n.startswith("layers."))
            cache = big.new_cache(1)
            slot = cache.allocate()
            logits = big.forward([(slot, list(range(8)))], cache)[0]
            finite = bool(torch.isfinite(logits.float()).all())
            full_note = (
                f"full-dimension engine: build {t_build:.1f} s, load {t_load:.1f} s, logits shape "
                f"{tuple(logits.shape)} ({'finite' if finite else 'NOT finite: random synthetic weights'}), "
                f"peak RSS {rss_mib():.0f} MiB; layer weights {ours_bytes / 2**20:.0f} MiB"
            )
            if args.transformers:
                import json

                cfg_dict = json.loads((ckpt / "config.json").read_text())
                del big
                print("transformers' model of the same config (random bf16 weights) ...", file=sys.stderr)
                trows, tbytes = transformers_rows(cfg_dict, tuple(args.prefill), 4)
                rows += trows
                full_note += f"; transformers layer weights {tbytes / 2**20:.0f} MiB (bf16), peak RSS after it {rss_mib():.0f} MiB"
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
