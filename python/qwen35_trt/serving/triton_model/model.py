"""Triton python-backend model (decoupled): the qwen35_trt serving runtime behind the
tensorrtllm_backend ensemble tensor contract. Copied by ``publish`` into each version folder next
to ``serving.json`` (engine directory, limits, executor); needs the qwen35_trt package importable
by the stub's Python.

``execute`` validates and queues requests and returns at once; the runtime thread sends the
responses: with ``stream`` true one response per step (the new text and token ids) and the final
flag on the last one; otherwise one response with the whole text (the prompt first unless
``exclude_input_in_output``). Bad requests get an INVALID_ARG error response naming the
parameter. A watcher thread turns cancelled requests into runtime cancels and publishes the
runtime's counters as Triton metrics (``qwen35_runtime_*`` gauges on the metrics port), including
a heartbeat so that a dead stub shows as a stale one.
"""

import json
import threading
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
GAUGES = {
    "running": "sequences running (holding a state slot)",
    "waiting": "requests queued for a slot",
    "slots_used": "executor state slots in use",
    "kv_blocks_used": "paged KV blocks in block tables",
    "kv_blocks_reserved": "paged KV blocks reserved by running sequences",
    "generated_tokens": "tokens generated since start",
    "steps": "runtime steps since start",
    "peak_batch": "most sequences in one executor call since start",
    "requests_finished": "requests answered in full (stop word, end id or length) since start",
    "requests_cancelled": "requests cancelled by their client since start",
    "requests_failed": "requests ended by an internal error since start",
    "requests_rejected": "requests refused for bad parameters (INVALID_ARG) since start",
    "start_time_seconds": "unix time this runtime started (changes when the model is restarted)",
    "heartbeat_seconds": "unix time of the watcher's last pass (stale: the runtime is not running)",
}
WATCH_INTERVAL = 0.02  # seconds between cancellation polls


def _error(message, invalid_arg):
    code = pb_utils.TritonError.INVALID_ARG if invalid_arg else pb_utils.TritonError.INTERNAL
    return pb_utils.TritonError(message, code)


class _Active:
    """A request in flight: its Triton objects and what a non-streaming response accumulates."""

    __slots__ = ("sender", "gen", "text", "ids")

    def __init__(self, sender, gen):
        self.sender, self.gen = sender, gen
        self.text, self.ids = [], []


class RequestTable:
    """The requests in flight; the one owner of their Triton objects.

    Why a lock and this order: a request's response sender and its cancellation check both reach
    the server's response factory for that request, and the server frees that factory as soon as
    the response carrying the FINAL flag is sent. Calling ``is_cancelled()`` after that is a
    use-after-free inside tritonserver (it crashes the whole server). So a request enters the table
    before the runtime sees it; ``take`` removes it under the lock BEFORE its final response is
    sent, by whoever sends it; and ``cancelled`` asks Triton only about requests still in the
    table, holding the same lock for the whole pass. Each ``is_cancelled()`` call returns only
    after the server has answered it, so every such call completes before any final send of the
    same request can start. Non-final responses need no lock: the factory lives until the final.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = {}
        self._counter = 0

    def next_id(self, base):
        with self._lock:
            self._counter += 1
            return f"{base or 'req'}#{self._counter}"

    def add(self, rid, act):
        with self._lock:
            self._active[rid] = act

    def take(self, rid):
        """Remove a request; the caller then owns its final response. None if already taken."""
        with self._lock:
            return self._active.pop(rid, None)

    def cancelled(self):
        """Ids of the requests whose client has cancelled them (polled under the lock)."""
        out = []
        with self._lock:
            for rid, act in self._active.items():
                try:
                    if act.sender.is_cancelled():
                        out.append(rid)
                except Exception:  # the client went away: the runtime's next send fails and ends it
                    pass
        return out

    def __len__(self):
        with self._lock:
            return len(self._active)


class TritonPythonModel:
    def initialize(self, args):
        from qwen35_trt.serving.params import Limits
        from qwen35_trt.serving.runtime import build_runtime

        self.model_name = args["model_name"]
        from qwen35_trt.errors import UserInputError
        from qwen35_trt.serving.publish import check_served_engine

        version_dir = Path(args["model_repository"]) / args["model_version"]
        spec = json.loads((version_dir / "serving.json").read_text())
        try:
            engine = check_served_engine(version_dir, f"{self.model_name} version {args['model_version']}")
        except UserInputError as e:
            raise pb_utils.TritonModelException(str(e)) from None
        from qwen35_trt.serving.executors import ExecutorUnavailable

        self.limits = Limits.from_dict(spec["limits"])
        try:
            runtime = build_runtime(engine, self.limits, executor=spec.get("executor", "cpu"), threads=int(spec.get("threads", 1)))
        except ExecutorUnavailable as e:  # the model does not load: no server half-working on another executor
            raise pb_utils.TritonModelException(f"{self.model_name}: {e}") from None
        self.runtime = runtime.start()
        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:  # which executor "auto" chose, in the server log
            logger.log_info(f"{self.model_name}: executor {runtime.executor.name}")
        self.table = RequestTable()
        self.rejected = 0
        self.started = time.time()
        self.stop = threading.Event()
        self.gauges = {}
        try:
            for key, desc in GAUGES.items():
                fam = pb_utils.MetricFamily(name=f"qwen35_runtime_{key}", description=desc, kind=pb_utils.MetricFamily.GAUGE)
                self.gauges[key] = (fam, fam.Metric(labels={"model": self.model_name}))
        except Exception as e:  # metrics are an aid, never a reason not to serve
            pb_utils.Logger.log_warn(f"custom metrics unavailable: {e}")
        self.watcher = threading.Thread(target=self._watch, name="qwen35-watch", daemon=True)
        self.watcher.start()
        pb_utils.Logger.log_info(f"{self.model_name}: serving {engine} with limits {self.limits.to_dict()}")

    def execute(self, requests):
        from qwen35_trt.serving.errors import RequestError

        for request in requests:
            sender = request.get_response_sender()
            rid = self.table.next_id(request.request_id())
            try:
                gen = self.runtime.validate(_request_values(request), request_id=rid)
            except RequestError as e:
                self.rejected += 1
                sender.send(pb_utils.InferenceResponse(error=_error(str(e), True)), flags=FINAL)
                continue
            except Exception as e:  # a bug, not the client's fault: say so, keep serving
                sender.send(pb_utils.InferenceResponse(error=_error(f"internal error reading the request: {type(e).__name__}: {e}", False)), flags=FINAL)
                continue
            act = _Active(sender, gen)
            gen.on_event = lambda ev, act=act: self._on_event(act, ev)
            self.table.add(rid, act)
            try:
                self.runtime.submit(gen)
            except Exception as e:
                if self.table.take(rid) is not None:
                    sender.send(pb_utils.InferenceResponse(error=_error(str(e), False)), flags=FINAL)
        return None

    def _on_event(self, act, ev):
        """Runtime thread: turn an event into a response (see the module docstring)."""
        if ev.finished and self.table.take(ev.request_id) is None:
            return  # its final response was already sent
        if ev.finish_reason == "cancelled":
            act.sender.send(flags=FINAL)
            return
        if ev.error is not None:
            act.sender.send(pb_utils.InferenceResponse(error=_error(ev.error, False)), flags=FINAL)
            return
        if act.gen.stream:
            act.sender.send(_response(ev.text, ev.token_ids), flags=FINAL if ev.finished else 0)
            return
        act.text.append(ev.text)
        act.ids.extend(ev.token_ids)
        if ev.finished:
            prefix = "" if act.gen.exclude_input_in_output else act.gen.prompt_text
            act.sender.send(_response(prefix + "".join(act.text), act.ids), flags=FINAL)

    def _watch(self):
        last = {}
        beat = 0.0
        while not self.stop.wait(WATCH_INTERVAL):
            for rid in self.table.cancelled():
                self.runtime.cancel(rid)
            now = time.time()
            if now - beat >= 0.25:  # a heartbeat four times a second is plenty
                beat = now
            stats = dict(self.runtime.stats(), requests_rejected=self.rejected, start_time_seconds=self.started, heartbeat_seconds=beat)
            for key, (_, metric) in self.gauges.items():
                if last.get(key) != stats[key]:
                    try:
                        metric.set(float(stats[key]))
                        last[key] = stats[key]
                    except Exception:
                        pass

    def finalize(self):
        self.stop.set()
        self.watcher.join(5)
        self.runtime.shutdown()
        for _, metric in self.gauges.values():
            del metric
        self.gauges.clear()
        pb_utils.Logger.log_info(f"{self.model_name}: runtime stopped; final stats {self.runtime.stats()}")


def _request_values(request):
    from qwen35_trt.serving.contract import request_values

    def get(name):
        t = pb_utils.get_input_tensor_by_name(request, name)
        return None if t is None else t.as_numpy()

    return request_values(get)


def _response(text, ids):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_)),
            pb_utils.Tensor("output_ids", np.array([list(ids)], dtype=np.int32).reshape(1, -1)),
        ]
    )

