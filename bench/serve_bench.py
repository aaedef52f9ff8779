"""Serving benchmark on the CPU: a real tritonserver with N concurrent gRPC clients (half streaming
from qwen35, half plain infer on qwen35_infer, so the two paths are measured under the same load),
and the runtime's own per-step overhead (scheduler + sampler + detokenization, null executor).

    .venv/bin/python bench/serve_bench.py [--engine engines/tiny-nvfp4] [--clients 16] [--requests 4] [--executor cuda]

Without --engine a tiny engine is built in a temporary directory (needs the fixtures extra).
Prints markdown tables (paste into bench/RESULTS.md, section "Serving").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def tiny_engine(tmp: Path) -> Path:
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine
    from qwen35_trt.testing.tiny_checkpoint import make_tiny_checkpoint

    build_engine(open_checkpoint(make_tiny_checkpoint(tmp / "ckpt")), tmp / "engine", target="sm_100", progress=False)
    return tmp / "engine"


def server_bench(engine: Path, tmp: Path, clients: int, requests: int, max_tokens: int, limits, mixed: bool = True, infer_instances: int | None = None,
                 executor: str = "cpu") -> str:
    import tritonclient.grpc as grpcclient

    from qwen35_trt.serving import launcher
    from qwen35_trt.serving.client import make_inputs, stream_generate
    from qwen35_trt.serving.publish import publish

    launcher.prepare(quiet=True)
    repo = tmp / f"repo-{infer_instances or 'default'}"
    publish(engine, repo, "qwen35", limits, infer_instances=infer_instances, executor=executor)
    info = launcher.start(repo, tmp / "server.log")
    words = "the engine directory holds weights repacked for the kernels and a manifest with sizes".split()
    results, latency, errors = [], {"stream": [], "infer": []}, []
    try:
        warm = stream_generate(grpcclient.InferenceServerClient(info.grpc_url), "qwen35", "warm up", 4)
        assert warm.error is None, warm.error

        def client(i):
            # even clients stream from qwen35, odd ones make plain infer calls on qwen35_infer:
            # the two paths under the same load, side by side
            c = grpcclient.InferenceServerClient(info.grpc_url)
            for r in range(requests):
                prompt = " ".join(words[: 3 + (i * 7 + r * 3) % len(words)])
                t = time.perf_counter()
                if i % 2 == 0 or not mixed:
                    res = stream_generate(c, "qwen35", prompt, max_tokens, timeout=300)
                    (errors if res.error else results).append(res.error or res)
                    latency["stream"].append(time.perf_counter() - t)
                else:
                    try:
                        c.infer("qwen35_infer", make_inputs(prompt, max_tokens, stream=False), client_timeout=300)
                        latency["infer"].append(time.perf_counter() - t)
                    except Exception as e:
                        errors.append(str(e))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        launcher.stop(info)
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    ttft = [r.ttft * 1000 for r in results]
    itl = [(b - a) * 1000 for r in results for a, b in zip(r.times, r.times[1:])]
    tokens = sum(len(r.ids) for r in results)
    n = len(results) + len(latency["infer"])
    rows = [
        "| clients | requests | stream tokens | wall s | requests/s | TTFT p50 / p90 / p99 ms | ITL p50 / p90 / p99 ms |",
        "|---:|---:|---:|---:|---:|---|---|",
        f"| {clients} | {n} | {tokens} | {wall:.1f} | {n / wall:.2f} | "
        f"{pct(ttft, 50):.0f} / {pct(ttft, 90):.0f} / {pct(ttft, 99):.0f} | {pct(itl, 50):.0f} / {pct(itl, 90):.0f} / {pct(itl, 99):.0f} |",
        "",
        "| path | requests | latency p50 / p90 / p99 ms |",
        "|---|---:|---|",
    ]
    for kind, model in (("stream", "qwen35 (gRPC stream)"), ("infer", "qwen35_infer (plain infer)")):
        xs = [x * 1000 for x in latency[kind]]
        if xs:
            rows.append(f"| {model} | {len(xs)} | {pct(xs, 50):.0f} / {pct(xs, 90):.0f} / {pct(xs, 99):.0f} |")
    return "\n".join(rows)


def overhead_bench(engine: Path, vocab: int, steps: int = 30) -> str:
    from qwen35_trt.serving.executors import NullExecutor
    from qwen35_trt.serving.params import Limits
    from qwen35_trt.serving.runtime import Runtime
    from qwen35_trt.serving.tokenizer import TextCodec

    codec = TextCodec(engine / "tokenizer.json")
    rows = ["| running | vocab | step ms (runtime only) | per sequence us |", "|---:|---:|---:|---:|"]
    for n in (1, 16, 64, 256):
        limits = Limits(max_running=n, max_tokens_per_step=n + 64, max_prefill_chunk=64, max_context=4096, max_new_tokens=4000)
        rt = Runtime(NullExecutor(n, vocab, token=100), codec, limits, end_ids=frozenset([0]))
        for _ in range(n):
            req = rt.validate({"text_input": "the engine directory", "max_tokens": 4000})
            req.on_event = lambda ev: None
            rt.submit(req)
        while any(s.in_prefill for s in rt.scheduler.running) or rt.scheduler.waiting or rt._inbox:
            rt.step()
        rt.step()  # every sequence decoding now
        t0 = time.perf_counter()
        for _ in range(steps):
            rt.step()
        dt = (time.perf_counter() - t0) / steps
        assert len(rt.scheduler.running) == n
        rows.append(f"| {n} | {vocab} | {dt * 1000:.2f} | {dt / n * 1e6:.0f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", type=Path)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-running", type=int, default=16)
    p.add_argument("--skip-server", action="store_true")
    p.add_argument("--streams-only", action="store_true", help="every client streams (default: odd clients use plain infer)")
    p.add_argument("--executor", default="cpu", choices=("auto", "trt", "cuda", "onnx", "cpu"), help="the served executor (publish --executor)")
    args = p.parse_args()
    torch.set_num_threads(1)
    from qwen35_trt.serving.params import Limits

    with tempfile.TemporaryDirectory(prefix="serve_bench-") as d:
        tmp = Path(d)
        engine = args.engine or tiny_engine(tmp)
        limits = Limits(max_running=args.max_running, max_tokens_per_step=args.max_running + 64, max_prefill_chunk=64, max_context=256, max_new_tokens=128)
        print(f"engine {engine}; executor {args.executor}; torch threads 1; limits {limits.to_dict()}\n")
        if not args.skip_server:
            print(f"qwen35_infer with one instance per slot ({min(args.max_running, 16)}, the default):")
            print(server_bench(engine, tmp, args.clients, args.requests, args.max_tokens, limits, mixed=not args.streams_only,
                               executor=args.executor))
            if not args.streams_only:
                print("\nbaseline, qwen35_infer with one instance (each plain infer waits for the one before it):")
                print(server_bench(engine, tmp, args.clients, args.requests, args.max_tokens, limits, infer_instances=1,
                                   executor=args.executor))
            print()
        print(overhead_bench(engine, 512))
        print()
        print(overhead_bench(engine, 248320, steps=10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
