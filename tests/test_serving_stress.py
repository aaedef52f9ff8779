"""Load and lifecycle: 16 concurrent clients of mixed requests against a real tritonserver.

The request mix (``qwen35_trt.serving.loadgen``): streaming and non-streaming requests on the
decoupled model, plain infer on ``qwen35_infer``, streams cancelled after their first response,
and malformed requests. Before the request table took ownership of the Triton objects, this load
crashed tritonserver within seconds (a cancellation check on a request whose final response had
been sent).
"""

from __future__ import annotations

import os

import pytest

from serving_fixtures import reference, tiny_engine, triton_server  # noqa: F401

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the serving extra) is not installed")

STRESS_SECONDS = float(os.environ.get("QWEN35_STRESS_SECONDS", "45"))


def test_16_clients_of_mixed_requests_leave_the_server_up_and_exact(triton_server, reference):
    from qwen35_trt.serving import processes
    from qwen35_trt.serving.loadgen import LoadGenerator

    pid = triton_server.info.pid
    report = LoadGenerator(triton_server.grpc_url, clients=16, seed=7).run(STRESS_SECONDS)
    summary = report.summary()
    print(summary)

    log = triton_server.log.read_text(errors="replace")
    assert processes.alive(pid) and triton_server.info.pid == pid, "tritonserver died under load"
    assert "Signal (" not in log, "tritonserver caught a signal:\n" + log[log.index("Signal ("):][:2000]
    assert not report.unexpected, f"{len(report.unexpected)} unexpected outcomes, e.g. {report.unexpected[:5]}"
    assert report.no_final == 0
    for kind in ("stream", "nonstream", "infer", "cancel", "bad"):
        assert report.counts[kind] > 0, f"no {kind} request completed: {summary}"
    assert report.requests > 300, f"too little load to mean anything: {summary}"

    # greedy outputs under load equal the same requests run alone
    assert not report.mismatches
    for (prompt, n), ids in report.greedy.items():
        assert ids == reference.generate(prompt, n)[0], f"{prompt!r} (max_tokens {n}) differs from its solo run"

    # every request ended: the runtime holds nothing, and it counted what happened
    m = triton_server.wait_idle(timeout=30)
    assert m["requests_failed"] == 0
    assert m["requests_cancelled"] >= 1
    assert m["requests_rejected"] >= 1
