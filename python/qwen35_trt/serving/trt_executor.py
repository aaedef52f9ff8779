"""A TensorRT plan of the step graph as the serving executor (``publish --executor trt``).

Thin by design: the per-step inputs come from ``export.step_inputs.step_feeds``, the same code the
CPU run of the graph uses (so the CPU tests exercise it), the state pools are a ``StateCache`` on
the GPU whose KV pools are preallocated to the plan's profile (``plans.<target>.limits`` in the
manifest), and a step binds every input, the logits buffer and each pool's aliased output to its
input's memory, then enqueues the plan on the current CUDA stream. The plan carries the plugin
library (built with ``plugins_to_serialize``), so the runtime is allowed to load host code from it.

Not run yet: deserialising a plan needs a GPU, and none has been lent to this project so far.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from ..cache import StateCache
from ..engine import EngineDir
from ..engine.targets import TARGETS
from .executors import Batch, CachedExecutor, ExecutorUnavailable

RUNTIME_MODULES = {"tensorrt-rtx": ("tensorrt_rtx", "tensorrt-rtx==1.7.1.116"), "tensorrt": ("tensorrt", "TensorRT 10.14+ (NVIDIA's tensorrt package)")}


def runtime_module(builder: str):
    """The TensorRT module that runs plans of ``builder``; ImportError naming the package otherwise."""
    module, package = RUNTIME_MODULES[builder]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"the plan was built by {builder}; running it needs the Python module '{module}' ({package})") from None


class TrtExecutor(CachedExecutor):
    name = "trt"

    def __init__(self, engine_dir: str | Path, num_slots: int, device: str | torch.device = "cuda"):
        if not torch.cuda.is_available():
            raise ExecutorUnavailable("executor 'trt' cannot run here: no CUDA device is visible")
        self.device = torch.device(device)
        engine = EngineDir(engine_dir)
        cc = tuple(torch.cuda.get_device_capability(self.device))
        target = next((t.name for t in TARGETS.values() if t.compute_capability == cc), None)
        rec = engine.manifest.get("plans", {}).get(target or "")
        if rec is None:
            raise ExecutorUnavailable(f"executor 'trt': {engine.path} has no plan for this GPU (compute capability {cc[0]}.{cc[1]})")
        limits = rec["limits"]
        if num_slots != limits["max_running"]:
            raise ExecutorUnavailable(f"executor 'trt': the plan was built for --max-running {limits['max_running']}, the runtime asks for "
                                      f"{num_slots}; publish with the plan's limits or rebuild the plan")
        trt = runtime_module(rec["builder"])
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        runtime.engine_host_code_allowed = True  # the plugin library serialised into the plan
        self.plan = runtime.deserialize_cuda_engine(engine.plan_path(target).read_bytes())
        if self.plan is None:
            raise ExecutorUnavailable(f"executor 'trt': {rec['builder']} could not deserialise {engine.plan_path(target)}")
        self.context = self.plan.create_execution_context()
        self.cfg = engine.config
        self.num_slots = num_slots
        self.vocab_size = self.cfg.vocab_size
        self.cache = StateCache(self.cfg, num_slots, block_size=limits["kv_block_size"], device=self.device)
        self.cache.preallocate(limits["num_kv_blocks"])  # the profile fixes the pool shapes

    @torch.no_grad()
    def step(self, batch: Batch) -> torch.Tensor:
        """Sequences with one new token and the others run as two executions of the plan: the GDN
        plugin picks its kernel per call from the shapes (T == B: the recurrent kernel, else the
        chunked prefill; docs/plugins.md), so grouping by length gives every sequence the same kernel,
        hence the same bits, whatever else is in its step."""
        ones = [i for i, (_, toks) in enumerate(batch) if len(toks) == 1]
        rest = [i for i, (_, toks) in enumerate(batch) if len(toks) != 1]
        if not ones or not rest:
            return self._execute(batch)
        logits = torch.empty(len(batch), self.vocab_size, dtype=torch.bfloat16, device=self.device)
        for group in (ones, rest):
            logits[group] = self._execute([batch[i] for i in group])
        return logits

    def _execute(self, batch: Batch) -> torch.Tensor:
        from ..export.step_graph import updated
        from ..export.step_inputs import step_feeds

        feeds = step_feeds(batch, self.cache, self.vocab_size)
        ctx = self.context
        bound = {}
        for name, t in feeds.items():
            t = t.to(self.device, non_blocking=True).contiguous()
            bound[name] = t  # keeps the device copies alive until the step is done
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
            if name.startswith("layers."):
                ctx.set_tensor_address(updated(name), t.data_ptr())  # the aliased output is the pool itself
        logits = torch.empty(len(batch), self.vocab_size, dtype=torch.bfloat16, device=self.device)
        ctx.set_tensor_address("logits", logits.data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT could not enqueue the step (its log names the failing layer)")
        for slot, toks in batch:
            self.cache.lengths[slot] += len(toks)
        return logits
