#!/usr/bin/env python3
"""The whole 40-layer Qwen3.5-35B-A3B model on a CPU machine: convert, load, prefill, decode.

    python bench/full_model_run.py --workdir DIR [--layers 40] [--prompt 8] [--new-tokens 8]
                                   [--threads 1] [--keep] [--json FILE] [--small]

Synthesises a ModelOpt NVFP4 checkpoint with every dimension of Qwen3.5-35B-A3B (all 40 layers
by default: ~19.6 GiB, qwen35_trt.testing.synthetic), converts it with ``build_engine.py build
--target sm_100`` (codes in ModelOpt's order, which the CPU reference model reads in place; only the
swizzled block scales, 1/8 of the weight bytes, are converted at load) and runs the CPU reference
model on it: load, one prefill of ``--prompt`` tokens, ``--new-tokens`` greedy decode steps.
Each phase runs in its own process so its wall time and peak RSS (``wait4``'s ru_maxrss) are its
own. The model run happens twice: cold (page cache dropped first, when permitted) and warm.

Memory: the model maps weights.safetensors instead of copying it, so only the pages a forward
touches become resident, and those are file-backed (the kernel can drop and re-read them); the
run also reports the anonymous part of its RSS (``RssAnon``: activations, caches, everything
that is not the weights file). Target (issue "fast CPU path"): peak RSS below 20 GiB on a 24 GiB
machine. Nothing here is needed by tests: the checkpoint is ~20 GB and the engine as much again,
so ``--workdir`` must name a filesystem with ~42 GB free, and both are deleted unless ``--keep``
(a kept checkpoint of the same shape is reused by the next run). ``--small`` runs the same steps
on the tiny test dimensions in seconds (the numbers then mean nothing; it keeps the script working).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert_bench import drop_caches, machine_summary, run_child  # noqa: E402

GIB = 2**30
RSS_TARGET = 20 * GIB
TARGET = "sm_100"  # the engine layout whose NVFP4 codes the CPU model reads as stored (mapped)

# The model phase, run as its own process: prints one JSON line.
_MODEL_CHILD = """
import json, sys, time
import torch
engine, prompt_len, new_tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from qwen35_trt.model import Qwen35Model

def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out

t = time.perf_counter()
model = Qwen35Model(engine)
load = time.perf_counter() - t
after_load = status()
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, model.cfg.vocab_size, (prompt_len,), generator=g).tolist()
cache = model.new_cache(1)
slot = cache.allocate()
t = time.perf_counter()
logits = model.forward([(slot, ids)], cache)
prefill = time.perf_counter() - t
tokens, steps = [], []
for _ in range(new_tokens):
    tok = int(logits[0].float().argmax())
    tokens.append(tok)
    t = time.perf_counter()
    logits = model.forward([(slot, [tok])], cache)
    steps.append(time.perf_counter() - t)
print(json.dumps({"load": load, "prefill": prefill, "decode_steps": steps, "tokens": tokens,
                  "after_load": after_load, "end": status()}))
"""


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _checkpoint_matches(ckpt: Path, layers: int, hidden: int) -> bool:
    from qwen35_trt.testing.synthetic import INDEX_FILE, MARKER_FILE

    try:
        cfg = json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (ckpt / MARKER_FILE).is_file() and (ckpt / INDEX_FILE).is_file() and cfg.get("num_hidden_layers") == layers and cfg.get("hidden_size") == hidden


def _phase(name: str, cmd: list[str], logs: Path, what: str) -> tuple[float, int]:
    print(f"[{name}] {what} ...", file=sys.stderr, flush=True)
    rc, wall, rss = run_child(cmd, logs / name)
    if rc != 0:
        err = (logs / f"{name}.err").read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{name} failed (exit {rc}); last lines of {logs / name}.err:\n" + "\n".join(err))
    print(f"[{name}] {wall:.1f} s, peak RSS {rss / GIB:.2f} GiB", file=sys.stderr, flush=True)
    return wall, rss


def _model_run(name: str, engine: Path, args, logs: Path) -> dict:
    cmd = [sys.executable, "-c", _MODEL_CHILD, str(engine), str(args.prompt), str(args.new_tokens), str(args.threads)]
    wall, rss = _phase(name, cmd, logs, f"load, prefill {args.prompt} tokens, decode {args.new_tokens} ({args.threads} thread(s))")
    r = json.loads((logs / f"{name}.out").read_text().strip().splitlines()[-1])
    r.update(wall=wall, peak_rss=rss)
    return r


def _row(label: str, r: dict) -> str:
    steps = r["decode_steps"]
    first, rest = steps[0], steps[1:] or steps
    return (f"| {label} | {r['load']:.1f} | {r['prefill']:.1f} | {first:.2f} | {sum(rest) / len(rest):.2f} | "
            f"{r['wall']:.1f} | {r['peak_rss'] / GIB:.2f} | {r['end']['RssAnon'] / GIB:.2f} | {r['end']['RssFile'] / GIB:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="folder for the checkpoint and the engine (~42 GB free)")
    ap.add_argument("--layers", type=int, default=40, help="decoder layers (default 40: the whole model)")
    ap.add_argument("--prompt", type=int, default=8, help="prompt tokens (default 8)")
    ap.add_argument("--new-tokens", type=int, default=8, help="greedy decode steps (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch and kernel threads of the model run (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and the engine")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--small", action="store_true", help="tiny dimensions: the whole run takes seconds")
    args = ap.parse_args(argv)
    if args.layers < 1 or args.prompt < 1 or args.new_tokens < 1 or args.threads < 1:
        ap.error("--layers, --prompt, --new-tokens and --threads must be positive")

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckpt, engine, logs = work / "ckpt", work / "engine-sm90", work / "logs"
    logs.mkdir(exist_ok=True)
    from qwen35_trt.testing.synthetic import FULL_TEXT_CONFIG, tiny_overrides

    overrides = tiny_overrides() if args.small else {}
    hidden = overrides.get("hidden_size", FULL_TEXT_CONFIG["hidden_size"])
    reuse = _checkpoint_matches(ckpt, args.layers, hidden)
    need = 0 if args.small else int(args.layers * 0.46 * GIB + 2.2 * GIB) * (1 if reuse else 2)  # engine ~ checkpoint
    if engine.exists():
        shutil.rmtree(engine)
    if _free_bytes(work) < need:
        print(f"error: {work} has {_free_bytes(work) / GIB:.1f} GiB free; this run needs ~{need / GIB:.0f} GiB", file=sys.stderr)
        return 2

    machine = machine_summary(work)
    results: dict = {"machine": machine, "layers": args.layers, "prompt": args.prompt, "new_tokens": args.new_tokens, "threads": args.threads}
    try:
        if reuse:
            print(f"[checkpoint] reusing {ckpt}", file=sys.stderr)
            results["checkpoint"] = None
        else:
            make = (f"from qwen35_trt.testing.synthetic import make_synthetic_checkpoint as m; "
                    f"m({str(ckpt)!r}, num_layers={args.layers}, overrides={overrides!r}, progress=True, overwrite=True)")
            wall, rss = _phase("checkpoint", [sys.executable, "-c", make], logs, f"synthesising {args.layers} layers into {ckpt}")
            results["checkpoint"] = {"wall": wall, "peak_rss": rss}
        ckpt_bytes = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
        results["checkpoint_bytes"] = ckpt_bytes
        wall, rss = _phase("convert", [sys.executable, str(ROOT / "build_engine.py"), "build", str(ckpt), "--output", str(engine),
                                       "--target", TARGET, "--force", "--quiet"], logs, f"build_engine.py build --target {TARGET} -> {engine}")
        results["convert"] = {"wall": wall, "peak_rss": rss, "engine_bytes": (engine / "weights.safetensors").stat().st_size}
        why_not = "not dropped with --small" if args.small else drop_caches()
        results["cold_note"] = why_not or "page cache dropped"
        results["cold"] = _model_run("model-cold", engine, args, logs)
        results["warm"] = _model_run("model-warm", engine, args, logs)
    finally:
        if not args.keep:
            shutil.rmtree(engine, ignore_errors=True)
            shutil.rmtree(ckpt, ignore_errors=True)

    same = results["cold"]["tokens"] == results["warm"]["tokens"]
    conv = results["convert"]
    lines = [f"{k}: {v}" for k, v in machine.items()]
    lines += [
        "",
        f"{args.layers} layers, checkpoint {ckpt_bytes / GIB:.2f} GiB -> engine weights {conv['engine_bytes'] / GIB:.2f} GiB; "
        f"prompt {args.prompt} tokens, {args.new_tokens} decode steps, {args.threads} thread(s)",
    ]
    if results["checkpoint"]:
        lines.append(f"synthesise checkpoint: {results['checkpoint']['wall']:.1f} s, peak RSS {results['checkpoint']['peak_rss'] / GIB:.2f} GiB")
    lines += [
        f"convert (build_engine.py build --target {TARGET}): {conv['wall']:.1f} s ({ckpt_bytes / GIB / conv['wall']:.2f} GiB/s), "
        f"peak RSS {conv['peak_rss'] / GIB:.2f} GiB",
        "",
        "| model run | load s | prefill s | first decode step s | later decode steps s (mean) | process wall s | peak RSS GiB | RssAnon GiB (end) | RssFile GiB (end) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        _row(f"cold ({results['cold_note']})", results["cold"]),
        _row("warm", results["warm"]),
        "",
        f"greedy tokens: {results['warm']['tokens']} ({'the same' if same else 'DIFFERENT'} in both runs)",
        f"peak RSS target < {RSS_TARGET / GIB:.0f} GiB: "
        + ("met" if max(results['cold']['peak_rss'], results['warm']['peak_rss']) < RSS_TARGET else "MISSED"),
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
