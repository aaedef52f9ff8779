"""``python -m qwen35_trt generate``: greedy generation on the CPU, with the reference model
(``--executor cpu``) or with the engine's step graph (``--executor onnx``: model.onnx run node by
node, plugin nodes on the C++ references)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .engine import EngineDir
from .errors import UserInputError


def load_tokenizer(engine: EngineDir):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(engine.require_tokenizer(hint="; use --prompt-ids instead of --prompt")))


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise UserInputError(f"--prompt-ids {text!r}: expected comma-separated integers") from None
    if not ids:
        raise UserInputError("--prompt-ids: empty prompt")
    return ids


def cmd_generate(args) -> dict:
    import torch

    from .model import Qwen35Model, greedy_generate

    torch.set_num_threads(args.threads)
    engine = EngineDir(args.engine_dir)  # says what is wrong when it is not an engine directory
    if args.max_new_tokens < 1:
        raise UserInputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    tok = None
    if args.prompt is not None:
        tok = load_tokenizer(engine)
        ids = tok.encode(args.prompt).ids
        if not ids:
            raise UserInputError("--prompt: the text encodes to no tokens")
    else:
        ids = parse_ids(args.prompt_ids)
    if len(ids) + args.max_new_tokens > engine.max_context:
        raise UserInputError(
            f"--max-new-tokens {args.max_new_tokens}: the prompt ({len(ids)} tokens) plus the new tokens exceed the model's context of "
            f"{engine.max_context} tokens (max_position_embeddings); ask for at most {max(0, engine.max_context - len(ids))}"
        )
    t0 = time.perf_counter()
    if args.executor == "onnx":
        from .export.onnx_runner import OnnxModel

        model = OnnxModel(engine.path)
    else:
        model = Qwen35Model(engine.path)
    t_load = time.perf_counter() - t0
    vocab = model.cfg.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise UserInputError(f"--prompt-ids: token id {bad[0]} outside the vocabulary [0, {vocab})")
    eos = None if args.ignore_eos else model.cfg.eos_token_id
    t1 = time.perf_counter()
    out = greedy_generate(model, ids, args.max_new_tokens, eos)
    seconds = time.perf_counter() - t1
    if tok is None and engine.tokenizer_path.is_file():
        tok = load_tokenizer(engine)
    text = tok.decode(out) if tok is not None else None
    return {
        "prompt_tokens": len(ids),
        "output_ids": out,
        "text": text,
        "seconds": round(seconds, 4),
        "load_seconds": round(t_load, 4),
        "tokens_per_second": round(len(out) / seconds, 2) if seconds > 0 else None,
        "executor": args.executor,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qwen35_trt", description="Run an engine directory with the CPU reference model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="greedy generation from a prompt", description="Greedy generation on the CPU: the reference model (W4A16) or the engine's step graph.")
    g.add_argument("engine_dir", metavar="ENGINE_DIR", help="engine directory written by build_engine.py build")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (encoded with the engine's tokenizer)")
    src.add_argument("--prompt-ids", help="comma-separated prompt token ids")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-sequence token")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    g.add_argument("--executor", choices=("cpu", "onnx"), default="cpu",
                   help="cpu: the CPU reference model (default); onnx: the engine's step graph model.onnx, run on the CPU")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    try:
        res = cmd_generate(args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        print(res["text"] if res["text"] is not None else ",".join(map(str, res["output_ids"])))
        print(f"[{res['prompt_tokens']} prompt tokens, {len(res['output_ids'])} generated in {res['seconds']:.2f} s]", file=sys.stderr)
    return 0
