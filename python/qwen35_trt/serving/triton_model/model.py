"""Triton python-backend model (decoupled): the qwen35_trt serving runtime behind the
tensorrtllm_backend ensemble tensor contract. Copied by ``publish`` into each version folder next
to ``serving.json`` (engine directory, limits, executor); needs the qwen35_trt package importable
by the stub's Python.

``execute`` validates and queues requests and returns at once; the runtime thread sends the
responses: with ``stream`` true one response per step (the new text and token ids) and the final
flag on the last one; otherwise one response with the whole text (the prompt first unless
``exclude_input_in_output``). Bad requests get an error response naming the parameter. A watcher
thread turns cancelled requests into runtime cancels and publishes the runtime's counters as
Triton metrics (``qwen35_runtime_*`` gauges on the metrics port).
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
    "requests_cancelled": "requests cancelled since start",
}


def _error(message, invalid_arg=True):
    try:
        code = pb_utils.TritonError.INVALID_ARG if invalid_arg else pb_utils.TritonError.INTERNAL
        return pb_utils.TritonError(message, code)
    except (AttributeError, TypeError):
        return pb_utils.TritonError(message)


class _Active:
    """A request in flight: its Triton objects and what a non-streaming response accumulates."""

    __slots__ = ("request", "sender", "gen", "text", "ids", "done")

    def __init__(self, request, sender, gen):
        self.request, self.sender, self.gen = request, sender, gen
        self.text, self.ids, self.done = [], [], False


class TritonPythonModel:
    def initialize(self, args):
        from qwen35_trt.serving.params import Limits
        from qwen35_trt.serving.runtime import build_runtime

        self.model_name = args["model_name"]
        version_dir = Path(args["model_repository"]) / args["model_version"]
        spec = json.loads((version_dir / "serving.json").read_text())
        engine = Path(spec["engine_dir"])
        if not engine.is_absolute():
            engine = version_dir / engine
        _check_engine(engine, spec.get("engine_manifest_sha256"))
        self.limits = Limits.from_dict(spec["limits"])
        self.runtime = build_runtime(engine, self.limits, executor=spec.get("executor", "cpu"), threads=int(spec.get("threads", 1))).start()
        self.active = {}
        self.lock = threading.Lock()
        self.counter = 0
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
        for request in requests:
            sender = request.get_response_sender()
            try:
                raw = _request_values(request)
                with self.lock:
                    self.counter += 1
                    rid = f"{request.request_id() or 'req'}#{self.counter}"
                gen = self.runtime.validate(raw, request_id=rid)
            except Exception as e:  # RequestError names the parameter
                sender.send(pb_utils.InferenceResponse(error=_error(str(e))), flags=FINAL)
                continue
            act = _Active(request, sender, gen)
            gen.on_event = lambda ev, act=act: self._on_event(act, ev)
            with self.lock:
                self.active[rid] = act
            try:
                self.runtime.submit(gen)
            except Exception as e:
                with self.lock:
                    self.active.pop(rid, None)
                sender.send(pb_utils.InferenceResponse(error=_error(str(e), False)), flags=FINAL)
        return None

    def _on_event(self, act, ev):
        """Runtime thread: turn an event into a response (see the module docstring)."""
        if ev.finished:
            with self.lock:
                self.active.pop(ev.request_id, None)
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
        while not self.stop.wait(0.02):
            with self.lock:
                items = list(self.active.items())
            for rid, act in items:
                try:
                    cancelled = act.request.is_cancelled()
                except Exception:
                    cancelled = False
                if cancelled:
                    self.runtime.cancel(rid)
            stats = self.runtime.stats()
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


def _check_engine(engine, expected_sha256):
    import hashlib

    manifest = engine / "manifest.json"
    if not manifest.is_file():
        raise pb_utils.TritonModelException(f"{engine}: not an engine directory (no manifest.json); publish again")
    if expected_sha256 and hashlib.sha256(manifest.read_bytes()).hexdigest() != expected_sha256:
        raise pb_utils.TritonModelException(f"{engine}: changed since it was published (manifest.json differs); publish it again")
