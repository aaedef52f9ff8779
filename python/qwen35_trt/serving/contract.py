"""The Triton tensor contract: tensorrtllm_backend's ensemble inputs and outputs.

One list, used both to write config.pbtxt (``publish``) and to read requests (the Triton model),
so the two cannot drift. Shapes are per request with ``max_batch_size`` > 0, i.e. clients send
[1, 1] for a scalar (batch 1), as TensorRT-LLM clients do. ``output_ids`` (the new token ids of
a response) is an addition to the contract; clients that do not ask for it never see it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton TYPE_* without the prefix
    dims: tuple[int, ...]
    optional: bool = True
    kind: type = int  # the Python value the model reads (str, int, float, bool, list)


INPUTS = (
    TensorSpec("text_input", "STRING", (1,), optional=False, kind=str),
    TensorSpec("max_tokens", "INT32", (1,), optional=False, kind=int),
    TensorSpec("stream", "BOOL", (1,), kind=bool),
    TensorSpec("temperature", "FP32", (1,), kind=float),
    TensorSpec("top_k", "INT32", (1,), kind=int),
    TensorSpec("top_p", "FP32", (1,), kind=float),
    TensorSpec("seed", "UINT64", (1,), kind=int),
    TensorSpec("random_seed", "UINT64", (1,), kind=int),  # the ensemble's name; ``seed`` is an alias
    TensorSpec("min_length", "INT32", (1,), kind=int),
    TensorSpec("end_id", "INT32", (1,), kind=int),
    TensorSpec("pad_id", "INT32", (1,), kind=int),
    TensorSpec("stop_words", "STRING", (-1,), kind=list),
    TensorSpec("bad_words", "STRING", (-1,), kind=list),
    TensorSpec("repetition_penalty", "FP32", (1,), kind=float),
    TensorSpec("exclude_input_in_output", "BOOL", (1,), kind=bool),
)
OUTPUTS = (
    TensorSpec("text_output", "STRING", (-1,), kind=str),
    TensorSpec("output_ids", "INT32", (-1,), kind=list),
)
MAX_BATCH_SIZE = 64  # what config.pbtxt declares; the model takes one prompt per request


def _tensor_block(specs: tuple[TensorSpec, ...], with_optional: bool) -> str:
    rows = []
    for s in specs:
        dims = ", ".join(str(d) for d in s.dims)
        opt = " optional: true" if with_optional and s.optional else ""
        rows.append(f'  {{ name: "{s.name}" data_type: TYPE_{s.dtype} dims: [ {dims} ]{opt} }}')
    return ",\n".join(rows)


def config_pbtxt(model_name: str, decoupled: bool, parameters: dict[str, str], instances: int = 1, dynamic_batching: bool = False) -> str:
    params = "\n".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in sorted(parameters.items()))
    return (
        f'# Written by qwen35_trt publish; the tensors follow the tensorrtllm_backend ensemble contract.\n'
        f'name: "{model_name}"\n'
        f'backend: "python"\n'
        f"max_batch_size: {MAX_BATCH_SIZE}\n"
        f"model_transaction_policy {{ decoupled: {'true' if decoupled else 'false'} }}\n"
        + ("dynamic_batching { }\n" if dynamic_batching else "")
        + f"input [\n{_tensor_block(INPUTS, True)}\n]\n"
        f"output [\n{_tensor_block(OUTPUTS, False)}\n]\n"
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        f"{params}\n"
    )


def is_parameter_error(message: str) -> bool:
    """Whether an error message is a request-parameter error (``RequestError`` messages start with
    the input's name). Triton 2.51's BLS keeps an error's message but not its code, so the
    forwarding model recovers INVALID_ARG from the message."""
    return any(message.startswith(f"{s.name}: ") for s in INPUTS)


def request_values(get) -> dict:
    """Python values of a request's inputs. ``get(name)`` returns the input as a numpy array or
    None. Scalars may come as [1, 1] (batch 1) or [1]; a batch of several prompts is refused."""
    from .errors import RequestError

    out = {}
    for s in INPUTS:
        a = get(s.name)
        if a is None:
            continue
        if a.ndim >= 1 and a.shape[0] > 1 and s.kind is not list:
            raise RequestError(s.name, f"batch of {a.shape[0]} in one request; send one prompt per request")
        flat = a.reshape(-1)
        if s.kind is list:
            out[s.name] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
            continue
        if flat.size != 1:
            raise RequestError(s.name, f"expected one value, got shape {list(a.shape)}")
        v = flat[0]
        if s.kind is str:
            out[s.name] = v if isinstance(v, (bytes, str)) else str(v)
        elif s.kind is bool:
            out[s.name] = bool(v)
        elif s.kind is int:
            out[s.name] = int(v)
        else:
            out[s.name] = float(v)
    return out
