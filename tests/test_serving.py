"""The published model on a real tritonserver (from the nvidia-pytriton wheel), over gRPC and HTTP."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving_fixtures import make_limits, reference, start_server, tiny_engine, triton_server  # noqa: F401

tritonclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the serving extra) is not installed")
import tritonclient.grpc as grpcclient  # noqa: E402

from qwen35_trt.serving.client import make_inputs, stream_generate  # noqa: E402

WORDS = ("the engine directory holds weights repacked for the kernels and a manifest with sizes "
         "while the server streams text deltas to every client that asks for tokens").split()
# 16 prompts of 1 to 61 words (single-chunk and multi-chunk prefills), 16 different lengths to generate
PROMPTS = [" ".join(WORDS[i % 7 : i % 7 + 1 + 4 * i]).capitalize() for i in range(16)]
MAX_TOKENS = [6 + (5 * i) % 19 for i in range(16)]


@pytest.fixture(autouse=True)
def runtime_idle_after(triton_server):
    """Every test leaves the runtime with nothing running and every slot and KV block free."""
    yield
    triton_server.wait_idle()


def grpc(server):
    return grpcclient.InferenceServerClient(server.grpc_url)


def http_post(server, path: str, body: dict, timeout: float = 60) -> tuple[int, str]:
    req = urllib.request.Request(f"http://{server.http_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_grpc_streaming_returns_the_cpu_models_greedy_tokens(triton_server, reference):
    from qwen35_trt.model import greedy_generate

    prompt, n = "The engine directory holds", 16
    ids, text = reference.generate(prompt, n)
    res = stream_generate(grpc(triton_server), "qwen35", prompt, n, timeout=60)
    assert res.error is None
    assert res.ids == ids
    assert res.text == text == reference.codec.decode(ids)
    assert res.responses == len(ids)  # one response per generated token
    # and these are the plain CPU model's greedy tokens (a one-chunk prompt)
    prompt_ids = reference.codec.encode(prompt)
    assert ids == greedy_generate(reference.model, prompt_ids, n, reference.runtime.end_ids)


def test_grpc_non_streaming(triton_server, reference):
    prompt, n = PROMPTS[5], 12
    ids, text = reference.generate(prompt, n)
    # decoupled model with stream=false: one response, the prompt first (ensemble default)
    q: queue.Queue = queue.Queue()
    c = grpc(triton_server)
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        c.async_stream_infer("qwen35", make_inputs(prompt, n, stream=False))
        result, error = q.get(timeout=60)
    finally:
        c.stop_stream()
    assert error is None
    assert result.as_numpy("text_output").reshape(-1)[0].decode() == prompt + text
    assert result.as_numpy("output_ids").reshape(-1).tolist() == ids
    # plain unary infer on the non-decoupled model
    r = c.infer("qwen35_infer", make_inputs(prompt, n, stream=False, exclude_input_in_output=True), timeout=60)
    assert r.as_numpy("text_output").reshape(-1)[0].decode() == text
    assert r.as_numpy("output_ids").reshape(-1).tolist() == ids


def test_http_generate_and_generate_stream(triton_server, reference):
    prompt, n = PROMPTS[3], 10
    ids, text = reference.generate(prompt, n)
    status, body = http_post(triton_server, "/v2/models/qwen35/generate", {"text_input": prompt, "max_tokens": n, "exclude_input_in_output": True})
    assert status == 200, body
    assert json.loads(body)["text_output"] == text
    status, body = http_post(triton_server, "/v2/models/qwen35/generate_stream", {"text_input": prompt, "max_tokens": n, "stream": True})
    assert status == 200, body
    events = [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]
    assert len(events) == len(ids)
    assert "".join(e["text_output"] for e in events) == text
    # Triton's generate endpoints write a one-element tensor as a scalar
    assert [t for e in events for t in (e["output_ids"] if isinstance(e["output_ids"], list) else [e["output_ids"]])] == ids


def test_16_concurrent_streams_get_exactly_their_tokens_alone(triton_server, reference):
    expected = [reference.generate(p, n) for p, n in zip(PROMPTS, MAX_TOKENS)]
    results: list = [None] * len(PROMPTS)
    start = threading.Barrier(len(PROMPTS))

    def client(i):
        c = grpc(triton_server)
        start.wait(timeout=30)
        results[i] = stream_generate(c, "qwen35", PROMPTS[i], MAX_TOKENS[i], timeout=120)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    assert not any(t.is_alive() for t in threads)
    for i, (res, (ids, text)) in enumerate(zip(results, expected)):
        assert res is not None and res.error is None, (i, res)
        assert res.ids == ids, f"prompt {i}: tokens differ from the same request alone"
        assert res.text == text
    m = triton_server.wait_idle()
    assert m["generated_tokens"] >= sum(len(ids) for ids, _ in expected)
    assert m["peak_batch"] >= 4, "the streams were not batched together"


def test_cancel_mid_stream_frees_slot_and_blocks(triton_server):
    before = triton_server.metrics()
    q: queue.Queue = queue.Queue()
    c = grpc(triton_server)
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    c.async_stream_infer("qwen35", make_inputs(PROMPTS[9], 40, stream=True))
    for _ in range(3):  # the sequence is running: slot and KV blocks held
        result, error = q.get(timeout=60)
        assert error is None
    m = triton_server.metrics()
    assert m["running"] == 1 and m["slots_used"] == 1 and m["kv_blocks_used"] > 0
    c.stop_stream(cancel_requests=True)
    m = triton_server.wait_idle()
    assert m["requests_cancelled"] == before.get("requests_cancelled", 0) + 1
    assert m["generated_tokens"] < before["generated_tokens"] + 40  # it really stopped early


BAD = [
    ("no text_input", lambda: make_inputs("x", 4)[1:], "text_input"),
    ("empty prompt", lambda: make_inputs("", 4), "text_input"),
    ("max_tokens 0", lambda: make_inputs("hello", 0), "max_tokens"),
    ("max_tokens negative", lambda: make_inputs("hello", -3), "max_tokens"),
    ("max_tokens above the limit", lambda: make_inputs("hello", 41), "max_tokens"),
    ("prompt longer than the context", lambda: make_inputs(" ".join(WORDS * 8), 4), "text_input"),
    ("top_p 0", lambda: make_inputs("hello", 4, top_p=0.0), "top_p"),
    ("top_p above 1", lambda: make_inputs("hello", 4, top_p=1.5), "top_p"),
    ("negative temperature", lambda: make_inputs("hello", 4, temperature=-0.5), "temperature"),
    ("not UTF-8", lambda: make_inputs(b"\xff\xfe", 4), "text_input"),
]


def _wrong_dtype():
    inputs = make_inputs("hello", 4)
    t = grpcclient.InferInput("max_tokens", [1, 1], "FP32")
    t.set_data_from_numpy(np.array([[4.0]], dtype=np.float32))
    return [inputs[0], t, inputs[2]]


BAD.append(("max_tokens as FP32", _wrong_dtype, "max_tokens"))


@pytest.mark.parametrize("what,inputs,param", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_an_error_naming_the_parameter(triton_server, what, inputs, param):
    q: queue.Queue = queue.Queue()
    c = grpc(triton_server)
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        c.async_stream_infer("qwen35", inputs())
        result, error = q.get(timeout=30)
    finally:
        c.stop_stream()
    assert error is not None, f"{what}: no error"
    assert param in str(error), f"{what}: error does not name {param}: {error}"
    # the server answers the next request
    res = stream_generate(c, "qwen35", "hello", 3, timeout=60)
    assert res.error is None and len(res.ids) >= 1


def test_http_bad_request_names_the_parameter(triton_server):
    status, body = http_post(triton_server, "/v2/models/qwen35/generate", {"text_input": "hello", "max_tokens": 4, "top_p": 2.0})
    assert status == 400 and "top_p" in body, (status, body)


def test_more_requests_than_slots_all_complete(triton_server, reference):
    n = 12  # > max_running (8): the rest queue and are never dropped
    expected = [reference.generate(PROMPTS[i], 8) for i in range(n)]
    out: list = [None] * n

    def client(i):
        out[i] = grpc(triton_server).infer("qwen35_infer", make_inputs(PROMPTS[i], 8, stream=False, exclude_input_in_output=True), timeout=120)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    for i, (r, (ids, text)) in enumerate(zip(out, expected)):
        assert r is not None, f"request {i} did not complete"
        assert r.as_numpy("output_ids").reshape(-1).tolist() == ids
        assert r.as_numpy("text_output").reshape(-1)[0].decode() == text


def test_sampling_is_reproducible_with_a_seed(triton_server):
    params = dict(temperature=0.8, top_k=20, top_p=0.9, seed=1234)
    a = stream_generate(grpc(triton_server), "qwen35", PROMPTS[2], 12, timeout=60, **params)
    b = stream_generate(grpc(triton_server), "qwen35", PROMPTS[2], 12, timeout=60, **params)
    assert a.error is None and a.ids == b.ids


def test_server_restarts_on_the_same_repository(triton_server, reference):
    from qwen35_trt.serving import launcher

    launcher.stop(triton_server.info)
    t0 = time.monotonic()
    triton_server.info = start_server(triton_server.repo, triton_server.log)
    assert time.monotonic() - t0 < 120
    ids, text = reference.generate(PROMPTS[1], 8)
    res = stream_generate(grpc(triton_server), "qwen35", PROMPTS[1], 8, timeout=60)
    assert res.error is None and res.ids == ids and res.text == text
