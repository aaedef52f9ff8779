"""Serving: a continuous-batching generation runtime over an executor, and its Triton packaging.

Runtime pieces (each its own module): ``params`` (limits, request validation), ``scheduler``
(continuous batching, chunked prefill), ``cache_manager`` (state slots + paged KV blocks),
``sampler``, ``executors`` (the executor interface, the CPU model, a null executor),
``tokenizer`` (incremental detokenization) and ``runtime`` (the loop). Triton: ``contract`` (the
tensor contract), ``publish`` (model repository), ``triton_model/`` (the python-backend models),
``launcher`` (tritonserver from the nvidia-pytriton wheel) and ``client``.
"""

from .errors import RequestError
from .params import Event, GenerationRequest, Limits, SamplingParams

__all__ = ["Event", "GenerationRequest", "Limits", "RequestError", "SamplingParams"]
