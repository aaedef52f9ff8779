"""Serving fixtures: a tiny engine, an in-process reference runtime, and a real tritonserver.

The server fixture starts tritonserver from the nvidia-pytriton wheel on free 127.0.0.1 ports,
waits for readiness (bounded) and always stops it by PID. Only a missing wheel skips; any other
failure to start is a test failure.
"""

from __future__ import annotations

import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

# Small enough for a 2-core machine, large enough to queue, chunk prompts and mix prefill with decode.
SERVER_LIMITS = dict(max_running=8, max_tokens_per_step=40, max_prefill_chunk=16, max_context=160, max_new_tokens=40)


def make_limits(**over):
    from qwen35_trt.serving.params import Limits

    return Limits(**{**SERVER_LIMITS, **over})


@pytest.fixture(scope="session")
def tiny_engine(tiny_default, tmp_path_factory) -> Path:
    """Engine directory of the default tiny checkpoint (sm_100 layout, as the demo builds)."""
    from qwen35_trt.checkpoint import open_checkpoint
    from qwen35_trt.engine.writer import build_engine

    out = tmp_path_factory.mktemp("serving") / "engine"
    build_engine(open_checkpoint(tiny_default[0]), out, target="sm_100", progress=False)
    return out


class Reference:
    """Each request run alone through the runtime (one slot): the tokens a request gets alone."""

    def __init__(self, engine: Path, executor: str = "cpu"):
        from qwen35_trt.serving.runtime import build_runtime

        self.runtime = build_runtime(engine, make_limits(max_running=1), executor=executor)
        self.codec = self.runtime.codec
        self.model = self.runtime.executor.model
        self._cache: dict = {}

    def generate(self, prompt: str, max_tokens: int, **params) -> tuple[list[int], str]:
        key = (prompt, max_tokens, tuple(sorted(params.items())))
        if key not in self._cache:
            events = []
            req = self.runtime.validate({"text_input": prompt, "max_tokens": max_tokens, **params})
            req.on_event = events.append
            self.runtime.submit(req)
            while self.runtime.step():
                pass
            assert events and events[-1].finished, "reference request did not finish"
            self._cache[key] = ([t for e in events for t in e.token_ids], "".join(e.text for e in events))
        return self._cache[key]


@pytest.fixture(scope="session")
def reference(tiny_engine) -> Reference:
    return Reference(tiny_engine)


@dataclass
class Server:
    info: object
    repo: Path
    log: Path

    @property
    def grpc_url(self) -> str:
        return self.info.grpc_url

    @property
    def http_url(self) -> str:
        return self.info.http_url

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.info.metrics_url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for m in re.finditer(r'^qwen35_runtime_(\w+)\{model="qwen35"\} ([0-9.e+-]+)$', text, re.M):
            out[m.group(1)] = float(m.group(2))
        return out

    def wait_idle(self, timeout: float = 10.0) -> dict[str, float]:
        """Poll the runtime gauges until nothing runs, waits or holds a slot or KV block."""
        deadline = time.monotonic() + timeout
        m = {}
        while time.monotonic() < deadline:
            m = self.metrics()
            if m and all(m.get(k, -1) == 0 for k in ("running", "waiting", "slots_used", "kv_blocks_used", "kv_blocks_reserved")):
                return m
            time.sleep(0.05)
        raise AssertionError(f"runtime not idle after {timeout} s: {m}")


def start_server(repo: Path, log: Path):
    from qwen35_trt.serving import launcher

    return launcher.start(repo, log, timeout=120)


@pytest.fixture(scope="module")
def triton_server(tiny_engine, tmp_path_factory):
    from qwen35_trt.serving import launcher
    from qwen35_trt.serving.publish import publish

    try:
        launcher.pytriton_root()
    except launcher.PytritonMissing as e:
        pytest.skip(f"nvidia-pytriton wheel not installed: {e}")
    launcher.prepare(install=True, quiet=True)
    d = tmp_path_factory.mktemp("triton")
    repo = d / "repo"
    publish(tiny_engine, repo, "qwen35", make_limits())
    server = Server(start_server(repo, d / "server.log"), repo, d / "server.log")
    try:
        yield server
    finally:
        launcher.stop(server.info)
