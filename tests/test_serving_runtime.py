"""The serving runtime in-process: executor batch invariance, scheduler, cache manager, sampler,
validation, detokenization and publishing (no server; see test_serving.py for that)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from conftest import run_cli
from serving_fixtures import make_limits, tiny_engine  # noqa: F401

from qwen35_trt.errors import UserInputError
from qwen35_trt.serving.errors import RequestError, ShuttingDown
from qwen35_trt.serving.executors import CpuExecutor, Executor, NullExecutor
from qwen35_trt.serving.params import Limits, SamplingParams
from qwen35_trt.serving.runtime import Runtime
from qwen35_trt.serving.sampler import filtered_probs, new_generator, sample
from qwen35_trt.serving.tokenizer import IncrementalDetokenizer, TextCodec


@pytest.fixture(scope="module")
def codec(tiny_engine):
    return TextCodec(tiny_engine / "tokenizer.json")


@pytest.mark.parametrize("backend", ["reference", "spec"])
def test_cpu_executor_is_batch_invariant(tiny_engine, backend):
    """A sequence's logits are bit-identical alone and in any mix of prefill chunks and decodes,
    with the C++ reference ops (the default) and with the torch spec ops."""
    from qwen35_trt.model import Qwen35Model

    rng = random.Random(0)
    torch.set_num_threads(1)
    chunk = 64  # big steps (300+ rows): plain bf16 GEMMs here do change with the row count
    seqs = [[rng.randrange(1, 500) for _ in range(n)] for n in (1, 5, 64, 65, 150, 99, 3, 130)]
    decode = [[rng.randrange(1, 500) for _ in range(3)] for _ in seqs]
    pieces = [[s[i : i + chunk] for i in range(0, len(s), chunk)] + [[d] for d in dec] for s, dec in zip(seqs, decode)]
    model = Qwen35Model(tiny_engine, gdn_backend=backend, moe_backend=backend, attention_backend=backend, batch_invariant=True)
    ex = CpuExecutor(tiny_engine, num_slots=len(seqs), model=model)
    alone = []
    for p in pieces:
        slot = ex.allocate_slot()
        alone.append([ex.step([(slot, piece)])[0].clone() for piece in p])
        ex.release_slot(slot)
    for trial in range(2):
        slots = [ex.allocate_slot() for _ in seqs]
        nxt = [0] * len(seqs)
        got = [[] for _ in seqs]
        start = [rng.randrange(0, 3) for _ in seqs]  # staggered starts: prefill next to decode
        step = 0
        while any(n < len(p) for n, p in zip(nxt, pieces)):
            live = [i for i in range(len(seqs)) if nxt[i] < len(pieces[i]) and start[i] <= step]
            rng.shuffle(live)
            if live:
                logits = ex.step([(slots[i], pieces[i][nxt[i]]) for i in live])
                for row, i in zip(logits, live):
                    got[i].append(row.clone())
                    nxt[i] += 1
            step += 1
        for i in range(len(seqs)):
            for k, (a, b) in enumerate(zip(alone[i], got[i])):
                assert torch.equal(a, b), f"trial {trial}: sequence {i} piece {k} differs in a batch"
        for s in slots:
            ex.release_slot(s)
    assert ex.free_slots == len(seqs)


class RecordingExecutor(NullExecutor):
    def __init__(self, *a, fail_at: int | None = None, **k):
        super().__init__(*a, **k)
        self.batches = []
        self.fail_at = fail_at

    def step(self, batch):
        self.batches.append([(s, list(t)) for s, t in batch])
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise RuntimeError("device lost")
        return super().step(batch)


def _runtime(codec, limits: Limits, token: int = 100, **kw) -> tuple[Runtime, RecordingExecutor]:
    ex = RecordingExecutor(limits.max_running, codec.vocab_size, token=token, **kw)
    return Runtime(ex, codec, limits, end_ids=frozenset([0])), ex


def _submit(rt: Runtime, prompt: str, max_tokens: int, **params):
    events = []
    req = rt.validate({"text_input": prompt, "max_tokens": max_tokens, **params})
    req.on_event = events.append
    rt.submit(req)
    return req, events


def _idle(rt: Runtime):
    s = rt.stats()
    assert (s["running"], s["waiting"], s["slots_used"], s["kv_blocks_used"], s["kv_blocks_reserved"]) == (0, 0, 0, 0, 0), s


def test_scheduler_continuous_batching_with_chunked_prefill(codec):
    limits = Limits(max_running=2, max_tokens_per_step=6, max_prefill_chunk=4, max_context=64, max_new_tokens=8, kv_block_size=4)
    rt, ex = _runtime(codec, limits)
    text = "the engine directory holds weights repacked for the kernels"
    order = []
    reqs = []
    for i in range(5):  # 5 requests > 2 slots
        req, events = _submit(rt, text[: 10 + 9 * i], 3 + i)
        req.on_event = lambda ev, events=events: (events.append(ev), ev.finished and order.append(ev.request_id))
        reqs.append((req, events))
    steps = 0
    while rt.step():
        steps += 1
        assert steps < 200
    for req, events in reqs:
        assert events[-1].finished and events[-1].finish_reason == "length"
        assert sum(len(e.token_ids) for e in events) == req.max_tokens
    for b in ex.batches:
        assert sum(len(t) for _, t in b) <= limits.max_tokens_per_step
        assert len(b) <= limits.max_running
        assert all(len(t) <= limits.max_prefill_chunk for _, t in b)
    assert max(len(b) for b in ex.batches) == 2  # continuous batching: both slots busy together
    # first come, first served: later requests are longer, so they finish in submission order
    assert order == [r.request_id for r, _ in reqs]
    _idle(rt)
    assert rt.counters.finished == 5


def test_prefill_chunks_never_shrink_to_fit_the_budget(codec):
    limits = Limits(max_running=3, max_tokens_per_step=3 + 8, max_prefill_chunk=8, max_context=64, max_new_tokens=4, kv_block_size=4)
    rt, ex = _runtime(codec, limits)
    prompt = "the engine directory holds weights repacked for the kernels and a manifest"
    reqs = [_submit(rt, prompt, 4) for _ in range(3)]
    while rt.step():
        pass
    n = len(reqs[0][0].prompt_ids)
    expected = [min(8, n - i) for i in range(0, n, 8)]
    for slot in range(3):
        firsts = []
        for b in ex.batches:
            for s, toks in b:
                if s == slot and len(firsts) < len(expected):
                    firsts.append(len(toks))
        assert firsts == expected, (slot, firsts)
    _idle(rt)


def test_cancel_and_executor_error_free_everything(codec):
    limits = Limits(max_running=2, max_tokens_per_step=10, max_prefill_chunk=8, max_context=64, max_new_tokens=20)
    rt, ex = _runtime(codec, limits, fail_at=4)
    a, ea = _submit(rt, "first request", 20)
    b, eb = _submit(rt, "second request", 20)
    c, ec = _submit(rt, "third, waiting", 20)
    rt.step()
    rt.cancel(c.request_id)  # cancel while waiting
    rt.step()
    rt.cancel(a.request_id)  # cancel while running
    rt.step()
    assert ec[-1].finish_reason == "cancelled" and ea[-1].finish_reason == "cancelled"
    rt.step()  # the 4th executor call fails: b ends with an error
    assert eb[-1].finished and eb[-1].finish_reason == "error" and "device lost" in eb[-1].error
    _idle(rt)
    d, ed = _submit(rt, "after the failure", 2)  # the runtime keeps serving
    while rt.step():
        pass
    assert ed[-1].finish_reason == "length"
    _idle(rt)


def test_stop_conditions(codec):
    limits = make_limits()
    tok = codec.encode(" the")[0]
    word = codec.decode([tok])
    rt, _ = _runtime(codec, limits, token=tok)
    _, e1 = _submit(rt, "hello", 10, stop_words=[word])
    _, e2 = _submit(rt, "hello", 10, end_id=tok)
    _, e3 = _submit(rt, "hello", 3)
    while rt.step():
        pass
    assert (e1[-1].finish_reason, "".join(e.text for e in e1)) == ("stop", word)
    assert (e2[-1].finish_reason, "".join(e.text for e in e2), e2[-1].token_ids) == ("stop", "", [tok])
    assert (e3[-1].finish_reason, "".join(e.text for e in e3)) == ("length", word * 3)
    _idle(rt)


def test_runtime_thread_and_shutdown(codec):
    import threading

    rt, _ = _runtime(codec, make_limits())
    rt.start()
    done = threading.Event()
    events = []

    def on_event(ev):
        events.append(ev)
        if ev.finished:
            done.set()

    req = rt.validate({"text_input": "hello", "max_tokens": 5})
    req.on_event = on_event
    rt.submit(req)
    assert done.wait(10)
    rt.shutdown()
    with pytest.raises(ShuttingDown):
        rt.submit(rt.validate({"text_input": "late", "max_tokens": 2}))
    _idle(rt)


@pytest.mark.parametrize(
    "raw,param",
    [
        ({"max_tokens": 4}, "text_input"),
        ({"text_input": "", "max_tokens": 4}, "text_input"),
        ({"text_input": "hi"}, "max_tokens"),
        ({"text_input": "hi", "max_tokens": 0}, "max_tokens"),
        ({"text_input": "hi", "max_tokens": 41}, "max_tokens"),
        ({"text_input": "hi " * 200, "max_tokens": 4}, "text_input"),
        ({"text_input": "hi " * 60, "max_tokens": 40}, "max_tokens"),
        ({"text_input": "hi", "max_tokens": 4, "top_p": 0.0}, "top_p"),
        ({"text_input": "hi", "max_tokens": 4, "top_p": 1.01}, "top_p"),
        ({"text_input": "hi", "max_tokens": 4, "temperature": -1.0}, "temperature"),
        ({"text_input": "hi", "max_tokens": 4, "top_k": -1}, "top_k"),
        ({"text_input": "hi", "max_tokens": 4, "end_id": 10**6}, "end_id"),
        ({"text_input": "hi", "max_tokens": 4, "repetition_penalty": 1.2}, "repetition_penalty"),
        ({"text_input": "hi", "max_tokens": 4, "bad_words": ["x"]}, "bad_words"),
        ({"text_input": b"\xff", "max_tokens": 4}, "text_input"),
        ({"text_input": "hi", "max_tokens": 4, "min_length": -1}, "min_length"),
        ({"text_input": "hi", "max_tokens": 4, "random_seed": -1}, "random_seed"),
        ({"text_input": "hi", "max_tokens": 4, "seed": 3, "random_seed": 4}, "random_seed"),
    ],
)
def test_validation_names_the_parameter(codec, raw, param):
    rt, _ = _runtime(codec, make_limits())
    with pytest.raises(RequestError) as e:
        rt.validate(raw)
    assert e.value.param == param and str(e.value).startswith(param)


def test_min_length_holds_back_the_end_id(codec):
    rt, _ = _runtime(codec, make_limits(), token=0)  # the executor always prefers 0, the end id
    _, plain = _submit(rt, "hello", 10)
    _, held = _submit(rt, "hello", 10, min_length=4)
    _, capped = _submit(rt, "hello", 3, min_length=8)  # min_length beyond max_tokens: max_tokens wins
    while rt.step():
        pass
    assert [t for e in plain for t in e.token_ids] == [0] and plain[-1].finish_reason == "stop"
    ids = [t for e in held for t in e.token_ids]
    assert len(ids) == 5 and 0 not in ids[:4] and ids[4] == 0 and held[-1].finish_reason == "stop"  # 4 tokens, then the end id
    ids = [t for e in capped for t in e.token_ids]
    assert len(ids) == 3 and 0 not in ids and capped[-1].finish_reason == "length"
    _idle(rt)


def test_random_seed_is_the_seed(codec):
    rt, _ = _runtime(codec, make_limits())
    assert rt.validate({"text_input": "hi", "max_tokens": 2, "random_seed": 7}).sampling.seed == 7
    assert rt.validate({"text_input": "hi", "max_tokens": 2, "random_seed": 7, "seed": 7}).sampling.seed == 7
    assert rt.validate({"text_input": "hi", "max_tokens": 2, "seed": 9}).sampling.seed == 9


def test_parameter_errors_are_recognised_by_their_message():
    from qwen35_trt.serving.contract import INPUTS, is_parameter_error

    for spec in INPUTS:
        assert is_parameter_error(str(RequestError(spec.name, "bad")))
    assert not is_parameter_error("executor failed: RuntimeError: device lost")
    assert not is_parameter_error("text_input_extra: no")


def test_sampler():
    torch.manual_seed(0)
    logits = torch.randn(4, 50).bfloat16()
    greedy = SamplingParams()
    assert sample(logits, [greedy] * 4, [None] * 4) == torch.argmax(logits, -1).tolist()
    p = SamplingParams(temperature=1.0, top_k=1)  # top_k 1 is greedy
    assert p.greedy and sample(logits[:1], [p], [None]) == [int(torch.argmax(logits[0]))]
    s = SamplingParams(temperature=0.7, top_k=10, top_p=0.9, seed=7)
    a = [sample(logits[i : i + 1], [s], [new_generator(s)]) for i in range(4)]
    b = [sample(logits[i : i + 1], [s], [new_generator(s)]) for i in range(4)]
    assert a == b  # a seed makes sampling reproducible, whatever else is in the batch
    mixed = sample(logits, [s, greedy, s, greedy], [new_generator(s), None, new_generator(s), None])
    assert [mixed[0], mixed[2]] == [a[0][0], a[2][0]]
    probs = filtered_probs(logits[0], SamplingParams(temperature=1.0, top_k=5))
    assert int((probs > 0).sum()) == 5 and abs(float(probs.sum()) - 1) < 1e-5
    probs = filtered_probs(logits[0], SamplingParams(temperature=1.0, top_p=1e-6))
    assert int((probs > 0).sum()) == 1 and int(torch.argmax(probs)) == int(torch.argmax(logits[0]))


def test_incremental_detokenizer_streams_multibyte_text(codec):
    text = "héllo wörld — ünïcode ✓ 你好, the engine"
    ids = codec.encode(text)
    d = IncrementalDetokenizer(codec)
    deltas = [d.add([t]) for t in ids] + [d.flush()]
    assert "".join(deltas) == codec.decode(ids) == d.text
    assert not any("\ufffd" in x for x in deltas)


def test_null_executor_meets_the_interface():
    ex = NullExecutor(3, 10)
    assert isinstance(ex, Executor)
    s = [ex.allocate_slot() for _ in range(3)]
    assert ex.free_slots == 0 and ex.step([(s[0], [1, 2]), (s[1], [3])]).shape == (2, 10)
    for x in s:
        ex.release_slot(x)
    assert ex.free_slots == 3


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_tokens_per_step"):
        Limits(max_running=8, max_tokens_per_step=16, max_prefill_chunk=16)
    with pytest.raises(ValueError, match="max_running"):
        Limits(max_running=0)


# ---- publish ----


def _numbered(d):
    return sorted(p.name for p in d.iterdir() if p.name.isdigit())


def test_publish_writes_versions_atomically(tiny_engine, tmp_path, monkeypatch):
    from qwen35_trt.serving import publish as pub

    repo = tmp_path / "repo"
    r1 = pub.publish(tiny_engine, repo, "m", make_limits())
    assert r1.version == 1 and (repo / "m" / "1" / "model.py").is_file()
    spec = json.loads((repo / "m" / "1" / "serving.json").read_text())
    assert spec["engine_dir"] == str(tiny_engine.resolve()) and spec["limits"]["max_running"] == 8
    cfg = (repo / "m" / "config.pbtxt").read_text()
    assert "decoupled: true" in cfg and 'name: "text_input"' in cfg and "TYPE_INT32" in cfg
    assert "decoupled: false" in (repo / "m_infer" / "config.pbtxt").read_text()
    r2 = pub.publish(tiny_engine, repo, "m", make_limits(), copy_engine=True)
    assert r2.version == 2 and (repo / "m" / "2" / "engine" / "manifest.json").is_file()

    # a publish that fails half-way leaves the repository as it was
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pub.shutil, "copytree", broken)
    with pytest.raises(OSError):
        pub.publish(tiny_engine, repo, "m", make_limits(), copy_engine=True)
    monkeypatch.setattr(pub.shutil, "copyfile", broken)
    with pytest.raises(OSError):
        pub.publish(tiny_engine, repo, "new_model", make_limits())
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]
    monkeypatch.undo()
    pub.publish(tiny_engine, repo, "m", make_limits())  # keeps the newest two versions
    assert _numbered(repo / "m") == ["2", "3"]


def test_publish_rejects_bad_input(tiny_engine, tmp_path):
    from qwen35_trt.serving.publish import publish

    with pytest.raises(UserInputError, match="no such engine directory"):
        publish(tmp_path / "missing", tmp_path / "repo")
    (tmp_path / "notengine").mkdir()
    with pytest.raises(UserInputError, match="manifest.json"):
        publish(tmp_path / "notengine", tmp_path / "repo")
    with pytest.raises(UserInputError, match="model-name"):
        publish(tiny_engine, tmp_path / "repo", "bad/name")
    with pytest.raises(UserInputError, match="--max-context 100000: the model supports at most"):
        publish(tiny_engine, tmp_path / "repo", limits=Limits(max_context=100000))
    with pytest.raises(UserInputError, match="--infer-instances"):
        publish(tiny_engine, tmp_path / "repo", infer_instances=0)
    assert not (tmp_path / "repo" / "qwen35").exists()


def test_a_published_engine_that_changed_is_refused_before_anything_starts(tiny_engine, tmp_path):
    import shutil

    from qwen35_trt.serving.publish import check_repository, publish

    engine = tmp_path / "engine"
    shutil.copytree(tiny_engine, engine)
    publish(engine, tmp_path / "repo", limits=make_limits())
    check_repository(tmp_path / "repo")
    manifest = engine / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version"', '"rebuilt": true, "format_version"', 1))
    with pytest.raises(UserInputError, match="model qwen35 version 1: engine .* changed since it was published"):
        check_repository(tmp_path / "repo")
    shutil.rmtree(engine)
    with pytest.raises(UserInputError, match="cannot load its engine: .*no such engine directory"):
        check_repository(tmp_path / "repo")
    # the launcher says so with exit code 2, before starting a server
    from qwen35_trt.serving import launcher

    assert launcher.main(["start", "--repo", str(tmp_path / "repo"), "--state", str(tmp_path / "s.json")]) == 2
    assert not (tmp_path / "s.json").exists()


def test_client_without_a_server_says_so_in_one_line(tmp_path, capsys):
    from qwen35_trt.serving import client

    assert client.main(["hello", "--state", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no server recorded" in err


def test_publish_cli(tiny_engine, tmp_path):
    r = run_cli("publish", str(tiny_engine), "--repo", str(tmp_path / "repo"), "--max-running", "4", "--max-context", "128")
    assert r.returncode == 0, r.stderr
    assert "qwen35 version 1" in r.stdout
    r = run_cli("publish", str(tmp_path / "nope"), "--repo", str(tmp_path / "repo"))
    assert r.returncode == 2 and "no such engine directory" in r.stderr
    r = run_cli("publish", str(tiny_engine), "--repo", str(tmp_path / "repo"), "--max-running", "64", "--max-tokens-per-step", "32")
    assert r.returncode == 2 and "max-tokens-per-step" in r.stderr
