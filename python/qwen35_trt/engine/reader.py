"""Read an engine directory (docs/engine_dir.md) without the builder: what the model, generate,
publish, the serving runtime and the exporter use to open one.

``EngineDir(path)`` checks that the path is an engine directory of a format this package reads
and gives its manifest, model config, target, file paths and (``load_weights``) its tensors.
Every problem is a ``UserInputError`` naming the path and what to do.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import numpy as np

from ..config import TextConfig
from ..errors import UserInputError
from .format import FORMAT_VERSION, MANIFEST_FILE, ONNX_FILE, PLAN_DIR, TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_LAYOUT
from .targets import ROW_MAJOR, TARGETS, TargetSpec, unpack_nvfp4


class EngineDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise UserInputError(f"{self.path}: no such engine directory")
        if not self.path.is_dir():
            raise UserInputError(f"{self.path}: not a directory (expected an engine directory written by build_engine.py build)")
        manifest_path = self.path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise UserInputError(f"{self.path}: not an engine directory (no {MANIFEST_FILE}); run build_engine.py build first")
        self.manifest_bytes = manifest_path.read_bytes()
        try:
            self.manifest: dict = json.loads(self.manifest_bytes)
        except json.JSONDecodeError as e:
            raise UserInputError(f"{manifest_path}: invalid JSON: {e}") from None
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise UserInputError(f"{manifest_path}: format_version {version!r} is not supported (expected {FORMAT_VERSION}); rebuild the engine")
        layout = self.manifest.get("layout", {}).get("weights")
        if layout != WEIGHTS_LAYOUT:
            raise UserInputError(f"{self.path}: engine weights layout {layout!r} is not supported (expected {WEIGHTS_LAYOUT!r}); rebuild it with build_engine.py build")
        targets = self.manifest.get("targets") or []
        if not targets or targets[0] not in TARGETS:
            raise UserInputError(f"{manifest_path}: unknown target {targets!r} (expected one of {', '.join(TARGETS)})")

    # ---- what the manifest says ----

    @cached_property
    def config(self) -> TextConfig:
        d = dict(self.manifest["model"])
        d["layer_types"] = tuple(d["layer_types"])
        return TextConfig(**d)

    @property
    def target(self) -> TargetSpec:
        return TARGETS[self.manifest["targets"][0]]

    @property
    def scale_layout(self) -> str:
        return self.manifest["layout"]["scale_layout"]

    @property
    def max_context(self) -> int:
        """The longest sequence (prompt + generated tokens) the model supports."""
        return self.config.max_position_embeddings

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    # ---- files ----

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    def plan_path(self, target: str) -> Path:
        return self.path / PLAN_DIR / f"{target}.plan"

    def require_tokenizer(self, hint: str = "") -> Path:
        if not self.tokenizer_path.is_file():
            raise UserInputError(f"{self.path}: no {TOKENIZER_FILE} (the checkpoint's tokenizer is needed to handle text){hint}")
        return self.tokenizer_path

    def require_weights(self) -> Path:
        if not self.weights_path.is_file():
            raise UserInputError(f"{self.path}: no {WEIGHTS_FILE}; rebuild the engine")
        return self.weights_path

    # ---- tensors ----

    def matrix_shape(self, tensor: str) -> tuple[int, int]:
        """[N, K] of the NVFP4 matrix a ``...weight_scale`` tensor belongs to (per expert for experts)."""
        module = tensor.rsplit(".", 1)[0]
        mods = self.manifest["quantization"]["modules"]
        if module in mods:
            n, k = mods[module]["shape"]
            return n, k
        experts, proj = module.rsplit(".", 1)  # layers.L.mlp.experts.<gate_up_proj|down_proj>
        info = mods[experts]
        if proj == "down_proj":
            return info["hidden_size"], info["intermediate_size"]
        return 2 * info["intermediate_size"], info["hidden_size"]

    def load_weights(self, scale_layout: str = ROW_MAJOR) -> dict:
        """Every tensor of weights.safetensors as torch tensors (FP8 block scales as uint8).

        NVFP4 weights come back as stored (``scale_layout`` = the engine's layout) or, by default,
        in ModelOpt's form (``ROW_MAJOR``: codes in ModelOpt's order, E4M3 row-major scales), as
        the CPU ops and the eager CUDA path read them; a "w4a16_fragments" engine's codes are
        un-permuted and its UE5M3 scales turned back into E4M3 (exact)."""
        import torch
        from safetensors import safe_open

        stored = self.scale_layout
        if scale_layout not in (stored, ROW_MAJOR):
            raise ValueError(f"scale_layout: NVFP4 weights can be read as stored ({stored}) or {ROW_MAJOR}, not {scale_layout}")
        convert = stored != scale_layout
        out = {}
        with safe_open(str(self.require_weights()), framework="pt") as f:
            names = list(f.keys())
            scale_names = {n for n in names if n.endswith(".weight_scale")}
            for name in names:
                if convert and name.endswith(".weight") and f"{name}_scale" in scale_names:
                    continue  # read with its scales below
                t = f.get_tensor(name)
                if t.dtype == torch.float8_e4m3fn:
                    t = t.view(torch.uint8)
                    if convert:
                        weight = name[: -len("_scale")]
                        codes, t = unpack_nvfp4(stored, f.get_tensor(weight).numpy(), t.numpy(), *self.matrix_shape(name), weight)
                        out[weight] = torch.from_numpy(np.ascontiguousarray(codes))
                        t = torch.from_numpy(np.ascontiguousarray(t))
                out[name] = t
        return {n: out[n] for n in names}
