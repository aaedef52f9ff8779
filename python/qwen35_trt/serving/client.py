"""A small tritonclient (gRPC) client for the published model: one streaming request, printed as
it arrives. Used by the demo and as an example of the tensor contract from the client side.

    python -m qwen35_trt.serving.client --state build/triton/server.json "Once upon a time" --max-tokens 32
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def make_inputs(prompt: str | bytes, max_tokens: int, stream: bool = True, **params):
    """tritonclient gRPC inputs in the ensemble contract (batch 1: every tensor is [1, ...])."""
    import tritonclient.grpc as grpcclient

    dtypes = {"temperature": ("FP32", np.float32), "top_p": ("FP32", np.float32), "top_k": ("INT32", np.int32), "seed": ("UINT64", np.uint64), "random_seed": ("UINT64", np.uint64), "min_length": ("INT32", np.int32),
              "end_id": ("INT32", np.int32), "exclude_input_in_output": ("BOOL", bool), "repetition_penalty": ("FP32", np.float32)}
    text = prompt.encode("utf-8") if isinstance(prompt, str) else prompt
    tensors = [("text_input", "BYTES", np.array([[text]], dtype=np.object_)), ("max_tokens", "INT32", np.array([[max_tokens]], dtype=np.int32)), ("stream", "BOOL", np.array([[stream]], dtype=bool))]
    for name, value in params.items():
        if name in ("stop_words", "bad_words"):
            tensors.append((name, "BYTES", np.array([[w.encode("utf-8") for w in value]], dtype=np.object_)))
        else:
            triton_type, np_type = dtypes[name]
            tensors.append((name, triton_type, np.array([[value]], dtype=np_type)))
    out = []
    for name, triton_type, arr in tensors:
        t = grpcclient.InferInput(name, list(arr.shape), triton_type)
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


@dataclass
class StreamResult:
    text: str = ""
    ids: list[int] = field(default_factory=list)
    responses: int = 0
    error: str | None = None
    ttft: float | None = None  # seconds to the first response
    times: list[float] = field(default_factory=list)  # arrival time of each response


def stream_generate(client, model: str, prompt: str, max_tokens: int, timeout: float = 60.0, on_delta=None, request_id: str = "",
                    stream: bool = True, **params) -> StreamResult:
    """One request on a fresh gRPC stream of ``client`` (a tritonclient.grpc client), until its final
    response; ``stream`` false asks the model for one response. Raises queue.Empty after ``timeout``
    seconds without a response."""
    q: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: q.put((result, error)))
    res = StreamResult()
    t0 = time.perf_counter()
    try:
        client.async_stream_infer(model, make_inputs(prompt, max_tokens, stream, **params), request_id=request_id, enable_empty_final_response=True)
        deadline = t0 + timeout
        while True:
            result, error = q.get(timeout=max(0.01, deadline - time.perf_counter()))
            if error is not None:
                res.error = str(error)
                break
            resp = result.get_response()
            text = result.as_numpy("text_output")
            if text is not None:
                now = time.perf_counter() - t0
                res.ttft = now if res.ttft is None else res.ttft
                res.times.append(now)
                res.responses += 1
                delta = text.reshape(-1)[0].decode("utf-8")
                res.text += delta
                res.ids.extend(int(i) for i in result.as_numpy("output_ids").reshape(-1))
                if on_delta is not None:
                    on_delta(delta)
            if resp.parameters.get("triton_final_response") and resp.parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
    return res


def _live(client) -> bool:
    try:
        return bool(client.is_server_live())
    except Exception:  # connection refused, DNS, ...: the same answer for this command
        return False


def main(argv: list[str] | None = None) -> int:
    import tritonclient.grpc as grpcclient

    p = argparse.ArgumentParser(prog="python -m qwen35_trt.serving.client", description="Send one streaming generate request over gRPC and print the text as it arrives.")
    p.add_argument("prompt")
    p.add_argument("--url", help="gRPC address host:port (default: from --state)")
    p.add_argument("--state", type=Path, default=Path("build/triton/server.json"), help="the launcher's state file")
    p.add_argument("--model", default="qwen35")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    if args.url:
        url = args.url
    else:
        try:
            url = "127.0.0.1:{}".format(json.loads(args.state.read_text())["grpc_port"])
        except FileNotFoundError:
            print(f"error: no server recorded in {args.state}: start one with 'python -m qwen35_trt.serving.launcher start' or pass --url", file=sys.stderr)
            return 2
        except (ValueError, KeyError) as e:
            print(f"error: {args.state}: not a launcher state file ({type(e).__name__}: {e})", file=sys.stderr)
            return 2
    params = {k: v for k, v in (("temperature", args.temperature), ("seed", args.seed)) if v is not None}
    client = grpcclient.InferenceServerClient(url)
    if not _live(client):
        print(f"error: no server answering at {url} (is it running? 'python -m qwen35_trt.serving.launcher start')", file=sys.stderr)
        return 1
    print(args.prompt, end="", flush=True)
    try:
        res = stream_generate(client, args.model, args.prompt, args.max_tokens, on_delta=lambda d: print(d, end="", flush=True), **params)
    except queue.Empty:
        print(f"\nerror: no response from {url} within the timeout", file=sys.stderr)
        return 1
    print()
    if res.error:
        print(f"error: {res.error}", file=sys.stderr)
        return 1
    print(f"[{len(res.ids)} tokens in {res.responses} responses, first after {res.ttft * 1000:.0f} ms]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
