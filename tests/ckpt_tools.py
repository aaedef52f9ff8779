"""Helpers that rewrite a checkpoint's safetensors files (for the bad-input corpus and shard tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from qwen35_trt.safetensors_io import SafetensorsFile, SafetensorsWriter, TensorSpec, read_tensor


def load_raw(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """name -> (dtype string, shape, raw bytes) for every tensor of one file, in file order."""
    f = SafetensorsFile(path)
    return {n: (t.dtype, t.shape, read_tensor(t).tobytes()) for n, t in f.tensors.items()}


def write_raw(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    """Write raw tensors; the declared dtype/shape need not match the bytes' real meaning."""
    import numpy as np

    specs = [TensorSpec(n, d, tuple(s)) for n, (d, s, _) in tensors.items()]
    with SafetensorsWriter(path, specs, {"format": "pt"}) as w:
        for spec in specs:
            raw = tensors[spec.name][2]
            if len(raw) != spec.nbytes:
                raise ValueError(f"{spec.name}: {len(raw)} bytes for {spec.dtype}{list(spec.shape)}")
            w._expect(spec.name)  # raw bytes bypass dtype checks on purpose: these files are for tests
            w._emit(raw)
            w._next += 1


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_tensors(ckpt: Path, fn) -> None:
    """Apply ``fn(tensors)`` (mutating the dict) to the checkpoint's single safetensors file."""
    path = ckpt / "model.safetensors"
    tensors = load_raw(path)
    fn(tensors)
    write_raw(path, tensors)


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=2))


def reshard(ckpt: Path, n_shards: int) -> list[str]:
    """Split model.safetensors into ``n_shards`` files with a model.safetensors.index.json."""
    path = ckpt / "model.safetensors"
    tensors = load_raw(path)
    names = list(tensors)
    per = (len(names) + n_shards - 1) // n_shards
    files, wmap = [], {}
    for i in range(n_shards):
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i * per : (i + 1) * per]}
        write_raw(ckpt / fname, part)
        wmap.update({n: fname for n in part})
        files.append(fname)
    path.unlink()
    total = sum(len(t[2]) for t in tensors.values())
    (ckpt / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}, indent=2)
    )
    return files
