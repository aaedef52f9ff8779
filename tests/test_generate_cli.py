"""``python -m qwen35_trt generate`` on a built engine directory."""

from __future__ import annotations

import json
import subprocess
import sys

from qwen35_trt.model import Qwen35Model, greedy_generate


def run(*args):
    return subprocess.run([sys.executable, "-m", "qwen35_trt", *args], capture_output=True, text=True, timeout=300)


def test_generate_json_matches_model(request, tiny_engines):
    _, engine = tiny_engines.get_engine(request, "default")
    r = run("generate", str(engine), "--prompt-ids", "5,17,99,3", "--max-new-tokens", "12", "--ignore-eos", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert set(res) >= {"output_ids", "text", "prompt_tokens", "seconds"}
    assert res["prompt_tokens"] == 4
    assert res["output_ids"] == greedy_generate(Qwen35Model(engine), [5, 17, 99, 3], 12)
    assert isinstance(res["text"], str)


def test_generate_text_prompt(request, tiny_engines):
    _, engine = tiny_engines.get_engine(request, "nvfp4_ab")
    r = run("generate", str(engine), "--prompt", "The quick brown fox", "--max-new-tokens", "5", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert 1 <= len(res["output_ids"]) <= 5 and res["prompt_tokens"] > 1


def test_generate_bad_input(request, tiny_engines, tmp_path):
    _, engine = tiny_engines.get_engine(request, "default")
    for args, needle in [
        (["--prompt-ids", "1,x"], "--prompt-ids"),
        (["--prompt-ids", "1,100000"], "outside the vocabulary"),
        (["--prompt-ids", "1", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["--prompt-ids", "1,2", "--max-new-tokens", "1000000"], "max_position_embeddings"),
    ]:
        r = run("generate", str(engine), *args)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)
    r = run("generate", str(tmp_path), "--prompt-ids", "1")
    assert r.returncode == 2 and "not an engine directory" in r.stderr and "manifest.json" in r.stderr
    r = run("generate", str(tmp_path / "nonexistent"), "--prompt", "hi")
    assert r.returncode == 2 and "no such engine directory" in r.stderr, r.stderr
