"""A mixed load of gRPC clients against a published model, for stress tests and soak runs.

Each client thread loops until the deadline, picking one kind of request at a time (weights in
``Mix``): a streaming request, a non-streaming request on the decoupled model, a plain ``infer``
on ``<model>_infer``, a stream cancelled after its first response, or a malformed request. Every
outcome is checked, not only counted:
- a well-formed request must end with its final response and no error; greedy requests of the
  same (prompt, max_tokens) must get the same tokens every time (``mismatches``), and the caller
  can compare them with solo runs (``Report.greedy``);
- a malformed request must get an error that names the bad parameter (and, on plain infer, the
  gRPC status INVALID_ARGUMENT);
- anything else is an ``unexpected`` error, kept with its message.

    python -m qwen35_trt.serving.loadgen --state build/triton/server.json --clients 16 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

WORDS = ("the engine directory holds weights repacked for the kernels and a manifest with sizes "
         "while the server streams text deltas to every client that asks for tokens").split()


def prompts(n: int = 24, seed: int = 0) -> list[str]:
    """``n`` fixed short prompts (3 to 20 words)."""
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 20))).capitalize() for _ in range(n)]


# (what, make inputs, the parameter the error must name)
def _bad_requests():
    from .client import make_inputs

    return [
        ("max_tokens 0", lambda: make_inputs("hello there", 0, stream=False), "max_tokens"),
        ("top_p 1.5", lambda: make_inputs("hello there", 4, stream=False, top_p=1.5), "top_p"),
        ("empty prompt", lambda: make_inputs("", 4, stream=False), "text_input"),
        ("negative temperature", lambda: make_inputs("hello there", 4, stream=False, temperature=-1.0), "temperature"),
        ("no text_input", lambda: make_inputs("hello there", 4, stream=False)[1:], "text_input"),
    ]


@dataclass
class Mix:
    stream: float = 4.0
    nonstream: float = 1.0
    infer: float = 2.0
    cancel: float = 1.0
    bad: float = 1.0

    def pick(self, rnd: random.Random) -> str:
        kinds = ["stream", "nonstream", "infer", "cancel", "bad"]
        return rnd.choices(kinds, weights=[getattr(self, k) for k in kinds])[0]


@dataclass
class Report:
    seconds: float = 0.0
    counts: dict = field(default_factory=lambda: defaultdict(int))  # kind -> requests done as expected
    latency: dict = field(default_factory=lambda: defaultdict(list))  # kind -> seconds
    ttft: list = field(default_factory=list)
    tokens: int = 0
    unexpected: list = field(default_factory=list)  # (kind, message)
    no_final: int = 0  # well-formed requests that never got their final response
    mismatches: list = field(default_factory=list)  # (prompt, max_tokens, first ids, other ids)
    greedy: dict = field(default_factory=dict)  # (prompt, max_tokens) -> ids (first seen)

    @property
    def requests(self) -> int:
        return sum(self.counts.values()) + len(self.unexpected)

    def ok(self) -> bool:
        return not self.unexpected and not self.mismatches and self.no_final == 0

    def summary(self) -> dict:
        def pct(xs, p):
            xs = sorted(xs)
            return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000, 1) if xs else None

        return {
            "seconds": round(self.seconds, 1),
            "requests": self.requests,
            "requests_per_s": round(self.requests / self.seconds, 2) if self.seconds else None,
            "tokens": self.tokens,
            "by_kind": dict(self.counts),
            "latency_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in sorted(self.latency.items())},
            "ttft_ms": {"p50": pct(self.ttft, 50), "p99": pct(self.ttft, 99)},
            "unexpected": len(self.unexpected),
            "no_final": self.no_final,
            "mismatches": len(self.mismatches),
        }


class LoadGenerator:
    """``clients`` threads of mixed requests against ``grpc_url`` (see the module docstring)."""

    def __init__(self, grpc_url: str, model: str = "qwen35", clients: int = 16, mix: Mix | None = None,
                 prompt_set: list[str] | None = None, max_tokens: tuple[int, int] = (1, 4), timeout: float = 120.0, seed: int = 0):
        self.url, self.model, self.clients = grpc_url, model, clients
        self.mix = mix or Mix()
        self.prompts = prompt_set or prompts()
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.seed = seed
        self.report = Report()
        self._lock = threading.Lock()

    def run(self, seconds: float) -> Report:
        deadline = time.monotonic() + seconds
        t0 = time.perf_counter()
        threads = [threading.Thread(target=self._client, args=(i, deadline), daemon=True) for i in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + self.timeout + 30)
        self.report.seconds = time.perf_counter() - t0
        with self._lock:
            if any(t.is_alive() for t in threads):
                self.report.unexpected.append(("client", "a client thread did not finish (a request hung past its timeout)"))
        return self.report

    # ---- one client ----

    def _client(self, i: int, deadline: float) -> None:
        import tritonclient.grpc as grpcclient

        rnd = random.Random(self.seed * 1000 + i)
        client = grpcclient.InferenceServerClient(self.url)
        bad = _bad_requests()
        while time.monotonic() < deadline:
            kind = self.mix.pick(rnd)
            prompt = rnd.choice(self.prompts)
            n = rnd.randint(*self.max_tokens)
            t0 = time.perf_counter()
            try:
                if kind == "bad":
                    what, inputs, param = rnd.choice(bad)
                    err = self._bad(client, inputs(), param, plain=rnd.random() < 0.5)
                    self._done(kind, t0, error=err and f"{what}: {err}")
                elif kind == "cancel":
                    self._done(kind, t0, error=self._cancel(client, prompt))
                elif kind == "infer":
                    ids, err = self._infer(client, prompt, n)
                    self._done(kind, t0, prompt, n, ids, err)
                else:
                    ids, err, ttft = self._stream(client, prompt, n, stream=kind == "stream")
                    self._done(kind, t0, prompt, n, ids, err, ttft)
            except Exception as e:  # the client library itself failed: the server went away?
                self._done(kind, t0, error=f"{type(e).__name__}: {e}")
                time.sleep(0.1)

    def _done(self, kind, t0, prompt=None, n=None, ids=None, error=None, ttft=None) -> None:
        dt = time.perf_counter() - t0
        with self._lock:
            r = self.report
            if error is not None:
                if error == "no final response":
                    r.no_final += 1
                r.unexpected.append((kind, error))
                return
            r.counts[kind] += 1
            r.latency[kind].append(dt)
            if ttft is not None:
                r.ttft.append(ttft)
            if ids is not None:
                r.tokens += len(ids)
                first = r.greedy.setdefault((prompt, n), ids)
                if first != ids:
                    r.mismatches.append((prompt, n, first, ids))

    def _stream(self, client, prompt: str, n: int, stream: bool):
        from .client import stream_generate

        try:
            res = stream_generate(client, self.model, prompt, n, timeout=self.timeout, stream=stream, exclude_input_in_output=True)
        except queue.Empty:
            return [], "no final response", None
        return res.ids, res.error, res.ttft

    def _infer(self, client, prompt: str, n: int):
        from .client import make_inputs

        r = client.infer(f"{self.model}_infer", make_inputs(prompt, n, stream=False, exclude_input_in_output=True), client_timeout=self.timeout)
        return [int(t) for t in r.as_numpy("output_ids").reshape(-1)], None

    def _cancel(self, client, prompt: str) -> str | None:
        """A long stream cancelled after its first response; None when that went as expected."""
        from .client import make_inputs

        q: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: q.put((result, error)))
        cancelled = False
        try:
            client.async_stream_infer(self.model, make_inputs(prompt, 30, stream=True), enable_empty_final_response=True)
            try:
                result, error = q.get(timeout=self.timeout)
            except queue.Empty:
                return "no final response"
            if error is not None:
                return str(error)
            client.stop_stream(cancel_requests=True)
            cancelled = True
            return None
        finally:
            if not cancelled:
                client.stop_stream()

    def _bad(self, client, inputs, param: str, plain: bool) -> str | None:
        """A malformed request; None when its error names ``param`` (INVALID_ARGUMENT on plain infer)."""
        from tritonclient.utils import InferenceServerException

        if plain:
            try:
                client.infer(f"{self.model}_infer", inputs, client_timeout=self.timeout)
            except InferenceServerException as e:
                if param not in e.message():
                    return f"error does not name {param}: {e.message()}"
                if e.status() != "StatusCode.INVALID_ARGUMENT":
                    return f"status {e.status()}, expected INVALID_ARGUMENT: {e.message()}"
                return None
            return "no error for a malformed request"
        q: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: q.put((result, error)))
        try:
            client.async_stream_infer(self.model, inputs)
            try:
                result, error = q.get(timeout=self.timeout)
            except queue.Empty:
                return "no final response"
        finally:
            client.stop_stream()
        if error is None:
            return "no error for a malformed request"
        return None if param in str(error) else f"error does not name {param}: {error}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qwen35_trt.serving.loadgen", description="Mixed gRPC load against a running server; prints a JSON summary.")
    p.add_argument("--url", help="gRPC address host:port (default: from --state)")
    p.add_argument("--state", type=Path, default=Path("build/triton/server.json"), help="the launcher's state file")
    p.add_argument("--model", default="qwen35")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    url = args.url or "127.0.0.1:{}".format(json.loads(args.state.read_text())["grpc_port"])
    report = LoadGenerator(url, args.model, args.clients).run(args.seconds)
    print(json.dumps(report.summary(), indent=2))
    for kind, msg in report.unexpected[:10]:
        print(f"unexpected ({kind}): {msg}", file=sys.stderr)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
