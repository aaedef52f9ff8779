"""``build_engine.py`` commands: inspect a checkpoint, build an engine directory, build a TensorRT
plan of its step graph, publish it to a Triton model repository.

Exit codes: 0 success, 2 bad input (the message names the file, tensor or field), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from .engine.targets import DEFAULT_TARGET, TARGETS
from .errors import UserInputError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def inspect_summary(ckpt) -> dict:
    """The machine-readable summary ``inspect --json`` prints."""
    cfg = ckpt.config
    return {
        "path": str(ckpt.path),
        "model_type": cfg.model_type,
        "num_layers": cfg.num_hidden_layers,
        "layer_types": cfg.layer_counts(),
        "hidden_size": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "num_experts": cfg.num_experts,
        "top_k": cfg.num_experts_per_tok,
        "quant_algo": ckpt.quant.quant_algo,
        "group_size": ckpt.quant.group_size,
        "kv_cache_quant_algo": ckpt.quant.kv_cache_quant_algo,
        "producer": ckpt.quant.producer,
        "modules": dict(sorted(ckpt.module_formats().items())),
        "bytes_by_dtype": ckpt.bytes_by_dtype(),
        "excluded_modules": list(ckpt.quant.exclude_modules),
        "skipped": sorted(ckpt.skipped),
        "skipped_tensors": ckpt.skipped,
        "unused_tensors": ckpt.unused,
        "shards": [f.path.name for f in ckpt.files],
        "tokenizer": bool(any(p.name == "tokenizer.json" for p in ckpt.tokenizer_files)),
        "tokenizer_files": [p.name for p in ckpt.tokenizer_files],
    }


def cmd_inspect(args) -> int:
    from .checkpoint import open_checkpoint

    s = inspect_summary(open_checkpoint(args.checkpoint))
    if args.json:
        print(json.dumps(s, indent=2))
        return EXIT_OK
    lt = ", ".join(f"{v} {k}" for k, v in s["layer_types"].items())
    print(f"checkpoint   {s['path']}")
    print(f"model        {s['model_type']}: {s['num_layers']} layers ({lt}), hidden {s['hidden_size']}, vocab {s['vocab_size']}")
    print(f"moe          {s['num_experts']} experts, top-{s['top_k']}")
    print(f"quantization {s['quant_algo']} group {s['group_size']}, kv cache {s['kv_cache_quant_algo']}, producer {s['producer']}")
    print("linears      " + ", ".join(f"{k}: {v}" for k, v in s["modules"].items()))
    print("bytes        " + ", ".join(f"{k}: {_fmt_bytes(v)}" for k, v in s["bytes_by_dtype"].items()))
    print(f"excluded     {len(s['excluded_modules'])} modules kept unquantized by the exporter")
    print("skipped      " + (", ".join(f"{k}.* ({v} tensors)" for k, v in s["skipped_tensors"].items()) or "none"))
    if s["unused_tensors"]:
        print(f"unused       {len(s['unused_tensors'])} tensors not used by the text model, e.g. {s['unused_tensors'][0]}")
    print(f"shards       {len(s['shards'])}")
    print("tokenizer    " + (", ".join(s["tokenizer_files"]) if s["tokenizer_files"] else "none"))
    return EXIT_OK


def cmd_build(args) -> int:
    import time

    from .checkpoint import open_checkpoint
    from .engine.writer import build_engine, peak_rss_bytes

    t0 = time.perf_counter()
    ckpt = open_checkpoint(args.checkpoint)
    t_open = time.perf_counter() - t0
    res = build_engine(ckpt, args.output, target=args.target, force=args.force, progress=not args.quiet)
    m = res.manifest
    counts = {}
    for info in m["quantization"]["modules"].values():
        key = info["compute"]
        counts[key] = counts.get(key, 0) + (info.get("num_experts", 1) * 3 if info["kind"] == "experts" else 1)
    print(f"engine       {res.output}")
    print(f"target       {args.target} (NVFP4 weights stored {m['layout']['scale_layout']}, layout {m['layout']['weights']})")
    print("linears      " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"written      {_fmt_bytes(res.bytes_written)} in {len(m['files'])} files")
    mib_s = res.bytes_written / max(res.seconds, 1e-9) / 2**20
    print(f"time         validate {t_open:.2f} s, convert {res.seconds:.2f} s ({mib_s:.0f} MiB/s)")
    print(f"peak RSS     {_fmt_bytes(peak_rss_bytes())}")
    return EXIT_OK


def cmd_publish(args) -> int:
    from .serving.publish import publish

    limits = _limits(args)
    res = publish(args.engine_dir, args.repo, args.model_name, limits, copy_engine=args.copy_engine, threads=args.threads,
                  infer_instances=args.infer_instances, executor=args.executor)
    print(f"model        {res.model} version {res.version} ({res.version_dir})")
    print(f"plain infer  {res.infer_model} (forwards to {res.model})")
    print(f"engine       {'copied into the version folder' if args.copy_engine else 'referenced: ' + str(Path(args.engine_dir).resolve())}")
    print(f"executor     {args.executor}")
    print("limits       " + ", ".join(f"{k} {v}" for k, v in limits.to_dict().items()))
    return EXIT_OK


def _limits(args):
    from .serving.params import Limits

    fields = {k: getattr(args, k) for k in ("max_running", "max_tokens_per_step", "max_prefill_chunk", "max_context", "max_new_tokens", "kv_block_size", "num_kv_blocks") if getattr(args, k, None) is not None}
    try:
        return Limits(**fields)
    except ValueError as e:
        raise UserInputError(str(e).replace("Limits.", "--").replace("_", "-")) from None


def cmd_plan(args) -> int:
    from .export.plan import PlanShapes, build_plan, trtexec_command

    limits = _limits(args)
    if args.print_trtexec:
        print(trtexec_command(args.engine_dir, args.target, PlanShapes.from_limits(limits)))
        return EXIT_OK
    rec = build_plan(args.engine_dir, args.target, PlanShapes.from_limits(limits), builder=args.builder,
                     check_memory=not args.skip_memory_check)
    print(f"plan         {Path(args.engine_dir) / rec['file']} ({_fmt_bytes(rec['size'])})")
    print(f"builder      {rec['builder']} {rec['builder_version']}, plugin library serialised into the plan: {rec['plugin_library']['serialized_into_plan']}")
    print("limits       " + ", ".join(f"{k} {v}" for k, v in rec["limits"].items()))
    print(f"time         parse {rec['seconds']['parse']:.2f} s, build {rec['seconds']['build']:.2f} s")
    print(f"peak RSS     {_fmt_bytes(rec['peak_rss_bytes'])}")
    return EXIT_OK


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-running", type=int, help="sequences running at once (state slots; default 8)")
    p.add_argument("--max-tokens-per-step", type=int, help="tokens per runtime step (default 256)")
    p.add_argument("--max-prefill-chunk", type=int, help="prompt tokens of one sequence per step (default 64)")
    p.add_argument("--max-context", type=int, help="prompt + generated tokens per sequence (default 1024)")
    p.add_argument("--max-new-tokens", type=int, help="largest max_tokens a request may ask for (default 512)")
    p.add_argument("--kv-block-size", type=int, help="tokens per paged KV block (default 16)")
    p.add_argument("--num-kv-blocks", type=int, help="KV blocks in the pool (default: enough for every slot at full context)")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build_engine.py",
        description="Convert ModelOpt NVFP4 Qwen3.5 hybrid MoE checkpoints into engine directories and publish them to Triton.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pi = sub.add_parser("inspect", help="summarise and validate a checkpoint's headers", description="Summarise a checkpoint: layers, experts, quantization per module, bytes by dtype, skipped parts.")
    pi.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (config.json, *.safetensors)")
    pi.add_argument("--json", action="store_true", help="print the summary as JSON")
    pi.set_defaults(func=cmd_inspect)
    pb = sub.add_parser("build", help="validate and repack a checkpoint into an engine directory", description="Validate a checkpoint and write an engine directory (manifest.json, weights.safetensors, tokenizer files), one layer at a time.")
    pb.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory")
    pb.add_argument("--output", "-o", required=True, metavar="DIR", help="engine directory to write, e.g. engines/NAME")
    pb.add_argument("--target", choices=tuple(TARGETS), default=DEFAULT_TARGET,
                    help="GPU architecture whose kernels the layout is for: " + "; ".join(f"{t.name} {t.description}" for t in TARGETS.values()) + f" (default: {DEFAULT_TARGET})")
    pb.add_argument("--force", action="store_true", help="replace DIR if it exists")
    pb.add_argument("--quiet", action="store_true", help="no progress bar")
    pb.set_defaults(func=cmd_build)
    pp = sub.add_parser("publish", help="write a Triton model repository serving an engine directory", description="Write (or add a version to) a Triton model repository: a decoupled python-backend model running the serving runtime, with the tensorrtllm_backend ensemble tensor contract, and a non-decoupled one for plain infer calls.")
    pp.add_argument("engine_dir", metavar="ENGINE_DIR", help="engine directory (from build)")
    pp.add_argument("--repo", default="triton_repo", metavar="DIR", help="model repository (default: triton_repo)")
    pp.add_argument("--model-name", default="qwen35", help="Triton model name (default: qwen35)")
    _add_limit_args(pp)
    pp.add_argument("--executor", choices=("auto", "trt", "cuda", "onnx", "cpu"), default="cpu",
                    help="what runs the model where it is served: cpu, the CPU reference model (default); onnx, the engine's step graph "
                         "model.onnx on the CPU; cuda, the CUDA kernels on the GPU; trt, the engine's TensorRT plan for that GPU; auto, "
                         "trt if possible, else cuda, else cpu. A named executor that cannot run there fails the model load, naming what is missing")
    pp.add_argument("--copy-engine", action="store_true", help="copy the engine into the version folder instead of referencing it")
    pp.add_argument("--threads", type=int, default=1, help="torch threads of the CPU executor (default 1; batch invariance is guaranteed with 1)")
    pp.add_argument("--infer-instances", type=int, help="instances of <model>_infer, each forwarding one plain infer request at a time (default: --max-running, at most 16)")
    pp.set_defaults(func=cmd_publish)
    pl = sub.add_parser("plan", help="build a TensorRT plan of an engine's step graph", description="Build plan/<target>.plan from the engine's model.onnx with the plugin library: TensorRT-RTX for sm_120 (any machine, GPU or not), standard TensorRT for sm_100 / sm_90 (on such a GPU). The optimisation profile comes from the serving limits; the plan is recorded in the manifest.")
    pl.add_argument("engine_dir", metavar="ENGINE_DIR", help="engine directory (from build)")
    pl.add_argument("--target", choices=tuple(TARGETS), required=True, help="GPU architecture of the plan (the engine must be built for it)")
    pl.add_argument("--builder", choices=("tensorrt-rtx", "tensorrt"),
                    help="default per target: " + "; ".join(f"{t.name} {t.plan_builders[0]}" for t in TARGETS.values()))
    pl.add_argument("--print-trtexec", action="store_true",
                    help="print the trtexec command that builds the same plan (for a machine with TensorRT's trtexec) and exit")
    pl.add_argument("--skip-memory-check", action="store_true",
                    help="build even when the memory estimate (about 3.2x the weights, which the plan embeds) exceeds what is available")
    _add_limit_args(pl)
    pl.set_defaults(func=cmd_plan)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception:
        traceback.print_exc()
        print("internal error (a bug in qwen35_trt): please report the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
