"""The generation loop: scheduler -> one executor call -> sampler -> events, on its own thread.

``Runtime.submit`` validates and queues a request and returns at once; the loop thread runs steps
while there is work and calls each request's ``on_event`` with its new tokens and text delta. A
request ends with exactly one event whose ``finished`` is true (reason ``stop``, ``length``,
``cancelled`` or ``error``), after which its slot and KV blocks are back in the pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .cache_manager import CacheManager
from .errors import ShuttingDown
from .executors import Executor
from .params import Event, GenerationRequest, Limits, validate_request
from .sampler import new_generator, sample
from .scheduler import Scheduler, Sequence
from .tokenizer import IncrementalDetokenizer, TextCodec

log = logging.getLogger("qwen35_trt.serving")


@dataclass
class Counters:
    steps: int = 0
    step_tokens: int = 0
    generated_tokens: int = 0
    peak_batch: int = 0  # most sequences in one executor call
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    executor_seconds: float = 0.0
    overhead_seconds: float = 0.0  # scheduler + sampler + stop checks + detokenization + events
    reasons: dict = field(default_factory=dict)


class Runtime:
    def __init__(self, executor: Executor, codec: TextCodec, limits: Limits, end_ids: frozenset[int] = frozenset()):
        if executor.num_slots != limits.max_running:
            raise ValueError(f"executor has {executor.num_slots} slots but limits.max_running is {limits.max_running}")
        self.executor = executor
        self.codec = codec
        self.limits = limits
        self.end_ids = frozenset(end_ids)
        self.cache = CacheManager(executor, limits)
        self.scheduler = Scheduler(limits, self.cache)
        self.counters = Counters()
        self._by_id: dict[str, Sequence] = {}
        self._inbox: deque = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_id = 0

    # ---- client side (any thread) ----

    def validate(self, raw: dict, request_id: str | None = None) -> GenerationRequest:
        """Check a request's parameters (contract names -> Python values); raises RequestError."""
        if request_id is None:
            self._next_id += 1
            request_id = f"req-{self._next_id}"
        return validate_request(raw, self.limits, self.codec.encode, self.executor.vocab_size, self.end_ids, request_id)

    def submit(self, request: GenerationRequest) -> None:
        with self._wake:
            if self._stopping:
                raise ShuttingDown("the server is shutting down; send the request again later")
            self._inbox.append(("add", request))
            self._wake.notify()

    def cancel(self, request_id: str) -> None:
        with self._wake:
            self._inbox.append(("cancel", request_id))
            self._wake.notify()

    def stats(self) -> dict:
        c = self.counters
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting) + sum(1 for op, _ in list(self._inbox) if op == "add"),
            "slots_used": self.limits.max_running - self.cache.free_slots,
            "slots_total": self.limits.max_running,
            "kv_blocks_used": self.cache.used_blocks,
            "kv_blocks_reserved": self.cache.reserved_blocks,
            "kv_blocks_total": self.cache.total_blocks,
            "steps": c.steps,
            "generated_tokens": c.generated_tokens,
            "peak_batch": c.peak_batch,
            "requests_finished": c.finished,
            "requests_cancelled": c.cancelled,
            "requests_failed": c.failed,
            "executor_seconds": round(c.executor_seconds, 6),
            "overhead_seconds": round(c.overhead_seconds, 6),
        }

    def start(self) -> "Runtime":
        self._thread = threading.Thread(target=self._loop, name="qwen35-runtime", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the loop; requests still queued or running end with an error event."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._drain_inbox()
        for seq in list(self.scheduler.running) + list(self.scheduler.waiting):
            self._finish(seq, "error", error="the server is shutting down")

    # ---- loop thread ----

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._inbox and not self.scheduler.running and not self.scheduler.waiting:
                    self._wake.wait(1.0)
                if self._stopping:
                    return
            try:
                self.step()
            except Exception:  # a bug in the runtime itself: fail what is running, keep serving
                log.exception("runtime step failed")
                for seq in list(self.scheduler.running):
                    self._finish(seq, "error", error="internal error in the serving runtime (see the server log)")

    def _drain_inbox(self) -> None:
        while True:
            with self._wake:
                if not self._inbox:
                    return
                op, arg = self._inbox.popleft()
            if op == "add":
                req: GenerationRequest = arg
                seq = Sequence(req, IncrementalDetokenizer(self.codec), new_generator(req.sampling, self.executor.device))
                self._by_id[req.request_id] = seq
                self.scheduler.add(seq)
            else:
                seq = self._by_id.get(arg)
                if seq is not None:
                    self._finish(seq, "cancelled")

    def step(self) -> bool:
        """One iteration: admit, run one executor call for every scheduled sequence, sample, emit.
        Returns False when there was nothing to do."""
        t0 = time.perf_counter()
        self._drain_inbox()
        batch = self.scheduler.schedule()
        if not batch:
            return False
        t1 = time.perf_counter()
        try:
            logits = self.executor.step([(seq.lease.slot, toks) for seq, toks in batch])
        except Exception as e:
            log.exception("executor step failed")
            for seq, _ in batch:
                self._finish(seq, "error", error=f"executor failed: {type(e).__name__}: {e}")
            return True
        t2 = time.perf_counter()
        ready = []
        for i, (seq, toks) in enumerate(batch):
            seq.computed += len(toks)
            self.cache.grow(seq.lease, seq.computed)
            if not seq.in_prefill:
                ready.append(i)
        if ready:
            seqs = [batch[i][0] for i in ready]
            suppress = [sorted(s.request.end_ids) if len(s.output) < s.request.min_tokens else () for s in seqs]
            tokens = sample(logits if len(ready) == len(batch) else logits[ready], [s.request.sampling for s in seqs], [s.generator for s in seqs], suppress)
            for seq, tok in zip(seqs, tokens):
                self._append(seq, tok)
        c = self.counters
        c.steps += 1
        c.peak_batch = max(c.peak_batch, len(batch))
        c.step_tokens += sum(len(t) for _, t in batch)
        c.executor_seconds += t2 - t1
        c.overhead_seconds += (t1 - t0) + (time.perf_counter() - t2)
        return True

    def _append(self, seq: Sequence, tok: int) -> None:
        req = seq.request
        if seq.first_token is None:
            seq.first_token = time.perf_counter()
        seq.output.append(tok)
        self.counters.generated_tokens += 1
        reason = None
        if tok in req.end_ids:
            reason, delta = "stop", seq.detok.flush()
        else:
            delta = seq.detok.add([tok])
            if req.stop_words:
                text = seq.detok.text
                start = len(text) - len(delta)
                hits = [text.find(w, max(0, start - len(w) + 1)) + len(w) for w in req.stop_words if text.find(w, max(0, start - len(w) + 1)) >= 0]
                if hits:
                    cut = min(hits)  # text ends right after the first stop word
                    delta = delta[: max(0, cut - start)]
                    seq.detok.text = text[:cut]
                    reason = "stop"
            if reason is None and (len(seq.output) >= req.max_tokens or len(seq.prompt) + len(seq.output) >= self.limits.max_context):
                reason, delta = "length", delta + seq.detok.flush()
        if reason is None:
            self._emit(seq, Event(req.request_id, [tok], delta))
        else:
            self._finish(seq, reason, token=tok, delta=delta)

    def _finish(self, seq: Sequence, reason: str, token: int | None = None, delta: str = "", error: str | None = None) -> None:
        if self._by_id.pop(seq.request.request_id, None) is None:
            return  # already finished
        self.scheduler.remove(seq)
        c = self.counters
        if reason == "cancelled":
            c.cancelled += 1
        elif reason == "error":
            c.failed += 1
        else:
            c.finished += 1
        c.reasons[reason] = c.reasons.get(reason, 0) + 1
        ev = Event(seq.request.request_id, [] if token is None else [token], delta, True, reason, error)
        self._emit(seq, ev)

    def _emit(self, seq: Sequence, ev: Event) -> None:
        cb = seq.request.on_event
        if cb is None:
            return
        try:
            cb(ev)
        except Exception as e:  # the client is gone: stop working for it
            log.warning("request %s: delivering an event failed (%s); cancelling it", seq.request.request_id, e)
            if not ev.finished:
                self._finish(seq, "cancelled")


def build_runtime(engine_dir: str | Path, limits: Limits, executor: str = "cpu", threads: int = 1) -> Runtime:
    """The runtime over an engine directory with the named executor (``executors.EXECUTORS``; ``auto``
    picks one, an explicitly named one that cannot run here raises ExecutorUnavailable naming what
    is missing)."""
    from ..engine import EngineDir

    engine = EngineDir(engine_dir)
    cfg = engine.config
    if limits.max_context > engine.max_context:
        raise ValueError(f"limits.max_context {limits.max_context} exceeds the model's {engine.max_context} tokens")
    codec = TextCodec(engine.require_tokenizer())
    from .executors import make_executor

    ex = make_executor(executor, engine_dir, limits.max_running, threads=threads)
    eos = cfg.eos_token_id
    end_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    return Runtime(ex, codec, limits, end_ids)
