"""Soak test: a real tritonserver under a mixed load for minutes to hours, watched for crashes,
errors, drift of greedy outputs and memory growth.

    .venv/bin/python bench/soak.py [--minutes 10] [--clients 16] [--window 30] [--engine DIR | --state FILE]

The load is ``qwen35_trt.serving.loadgen`` (streams, non-streaming, plain infer, cancellations,
malformed requests; every outcome checked), run in consecutive windows of ``--window`` seconds.
A sampler records the RSS of the server, each stub and the watchdog every 5 s. Without
``--state`` the script publishes the engine (default: a tiny engine built in a temporary
directory) and starts its own server; a crash is counted and the server started again, so a long
run reports every crash rather than stopping at the first. Prints a table per window and a
summary with the RSS trend (least-squares slope over the second half of the run, MiB per 10 min).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def tiny_engine(tmp: Path) -> Path:
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine
    from qwen35_trt.testing.tiny_checkpoint import make_tiny_checkpoint

    build_engine(open_checkpoint(make_tiny_checkpoint(tmp / "ckpt")), tmp / "engine", target="sm_100", progress=False)
    return tmp / "engine"


def mib(n: float) -> float:
    return n / 2**20


class RssSampler(threading.Thread):
    """Every ``every`` s: RSS (MiB) of the server, its stubs by instance, and the watchdog."""

    def __init__(self, get_info, every: float = 5.0):
        super().__init__(daemon=True)
        self.get_info, self.every = get_info, every
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> dict:
        from qwen35_trt.serving import processes

        info = self.get_info()
        row = {"t": time.monotonic() - self.t0}
        try:
            row["server"] = mib(psutil.Process(info.pid).memory_info().rss)
        except psutil.Error:
            row["server"] = float("nan")
        for s in processes.stubs(info.pid):
            try:
                row[s.instance] = mib(psutil.Process(s.proc.pid).memory_info().rss)
            except psutil.Error:
                pass
        if info.watchdog_pid:
            try:
                row["watchdog"] = mib(psutil.Process(info.watchdog_pid).memory_info().rss)
            except psutil.Error:
                pass
        return row

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.sample())
            self.stop.wait(self.every)


def slope_per_10min(samples: list[dict], key: str) -> float | None:
    """Least-squares slope of ``key`` over the second half of the samples, in MiB per 10 minutes."""
    pts = [(s["t"], s[key]) for s in samples[len(samples) // 2 :] if key in s and s[key] == s[key]]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (v - mv) for t, v in pts) / var * 600 if var else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--window", type=float, default=30.0, help="seconds per reported window")
    p.add_argument("--engine", type=Path, help="engine directory to publish (default: a tiny engine)")
    p.add_argument("--state", type=Path, help="use the running server recorded in this launcher state file")
    p.add_argument("--json", type=Path, help="also write windows, RSS samples and the summary here")
    args = p.parse_args()

    from qwen35_trt.serving import launcher, processes
    from qwen35_trt.serving.loadgen import LoadGenerator
    from qwen35_trt.serving.params import Limits
    from qwen35_trt.serving.publish import publish

    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        tmp = Path(d)
        own = args.state is None
        if own:
            launcher.prepare(quiet=True)
            engine = args.engine or tiny_engine(tmp)
            limits = Limits(max_running=8, max_tokens_per_step=72, max_prefill_chunk=64, max_context=512, max_new_tokens=64)
            publish(engine, tmp / "repo", "qwen35", limits)
            info = launcher.start(tmp / "repo", tmp / "server.log")
        else:
            info = launcher.ServerInfo(**json.loads(args.state.read_text()))
        holder = {"info": info}
        sampler = RssSampler(lambda: holder["info"])
        sampler.start()
        windows, greedy, crashes, drift = [], {}, 0, 0
        print(f"soak: {args.minutes:g} min, {args.clients} clients, windows of {args.window:g} s; server pid {info.pid}", flush=True)
        header = "| t min | requests | req/s | stream p50/p99 ms | infer p50/p99 ms | TTFT p50 ms | unexpected | server MiB | qwen35 stub MiB | infer stub MiB |"
        print(header + "\n|" + "---:|" * 10, flush=True)
        t_end = time.monotonic() + args.minutes * 60
        try:
            w = 0
            while time.monotonic() < t_end:
                secs = min(args.window, t_end - time.monotonic())
                report = LoadGenerator(holder["info"].grpc_url, clients=args.clients, seed=w).run(secs)
                w += 1
                for key, ids in report.greedy.items():
                    if greedy.setdefault(key, ids) != ids:
                        drift += 1
                s = report.summary()
                rss = sampler.sample()
                info = holder["info"]
                crashed = not processes.alive(info.pid) or "Signal (" in Path(info.log).read_text(errors="replace")
                windows.append({"summary": s, "rss": rss, "crashed": crashed})
                lat = s["latency_ms"]
                print(f"| {rss['t'] / 60:.1f} | {s['requests']} | {s['requests_per_s']} | {lat.get('stream', {}).get('p50')}/{lat.get('stream', {}).get('p99')} | "
                      f"{lat.get('infer', {}).get('p50')}/{lat.get('infer', {}).get('p99')} | {s['ttft_ms']['p50']} | {s['unexpected']} | "
                      f"{rss['server']:.0f} | {rss.get('qwen35_0_0', float('nan')):.0f} | {rss.get('qwen35_infer_0_0', float('nan')):.0f} |", flush=True)
                for kind, msg in report.unexpected[:3]:
                    print(f"  unexpected ({kind}): {msg}", flush=True)
                if crashed:
                    crashes += 1
                    print(f"  CRASH: server pid {info.pid} died or caught a signal (log {info.log})", flush=True)
                    if not own:
                        break
                    launcher.stop(info)
                    holder["info"] = launcher.start(tmp / "repo", tmp / f"server-{crashes}.log")
        finally:
            sampler.stop.set()
            sampler.join(10)
            if own:
                print(launcher.stop(holder["info"]).describe())

        total = sum(x["summary"]["requests"] for x in windows)
        secs = sum(x["summary"]["seconds"] for x in windows)
        unexpected = sum(x["summary"]["unexpected"] for x in windows)
        keys = ["server", "qwen35_0_0", "qwen35_infer_0_0", "watchdog"]
        trend = {k: slope_per_10min(sampler.samples, k) for k in keys}
        first = {k: next((s[k] for s in sampler.samples if k in s), None) for k in keys}
        last = {k: next((s[k] for s in reversed(sampler.samples) if k in s), None) for k in keys}
        summary = {"minutes": round(secs / 60, 1), "requests": total, "requests_per_s": round(total / secs, 1) if secs else None,
                   "crashes": crashes, "unexpected": unexpected, "greedy_drift": drift,
                   "rss_mib_first": {k: round(v, 0) for k, v in first.items() if v is not None},
                   "rss_mib_last": {k: round(v, 0) for k, v in last.items() if v is not None},
                   "rss_trend_mib_per_10min_second_half": {k: round(v, 1) for k, v in trend.items() if v is not None}}
        print("\nsummary: " + json.dumps(summary, indent=2))
        if args.json:
            args.json.write_text(json.dumps({"windows": windows, "rss": sampler.samples, "summary": summary}, indent=1))
        return 0 if crashes == 0 and unexpected == 0 and drift == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
