"""Lazy safetensors reading and streaming writing, with errors that name the file and tensor.

A safetensors file is ``u64 little-endian header length | JSON header | data``; the header maps
each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` relative to the data
section. Reading parses only the header; tensor bytes are read one tensor at a time with plain
file reads (no memory map), so the resident set stays bounded by the largest tensor in flight.
Writing declares every tensor up front, writes the header, then streams tensor bytes in the
declared order while hashing them, so nothing larger than one tensor is ever held.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from .errors import CheckpointError

# safetensors dtype string -> (numpy storage dtype, bytes per element). BF16 and FP8 have no
# numpy dtype: they are carried as raw uint16 / uint8 and decoded by the NVFP4 codec when needed.
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "BOOL": (np.dtype(np.bool_), 1),
    "U8": (np.dtype(np.uint8), 1),
    "I8": (np.dtype(np.int8), 1),
    "F8_E4M3": (np.dtype(np.uint8), 1),
    "F8_E5M2": (np.dtype(np.uint8), 1),
    "I16": (np.dtype("<i2"), 2),
    "U16": (np.dtype("<u2"), 2),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
    "I32": (np.dtype("<i4"), 4),
    "U32": (np.dtype("<u4"), 4),
    "F32": (np.dtype("<f4"), 4),
    "I64": (np.dtype("<i8"), 8),
    "U64": (np.dtype("<u8"), 8),
    "F64": (np.dtype("<f8"), 8),
}

# Buffers at least this large are hashed on a second thread while they are written.
_PARALLEL_HASH_BYTES = 1 << 20
# A header larger than this is not a real checkpoint header (the 35B model's is ~2 MB).
MAX_HEADER_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype string, shape and absolute byte range."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute offset in the file
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class SafetensorsFile:
    """The parsed header of one safetensors file; tensors are read on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise CheckpointError(
                        f"{self.path}: not a safetensors file (only {size} bytes, shorter than "
                        "the 8-byte header length)"
                    )
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > min(size - 8, MAX_HEADER_BYTES):
                    raise CheckpointError(
                        f"{self.path}: corrupt safetensors header: declared header length "
                        f"{header_len} bytes does not fit the {size}-byte file"
                    )
                self.header_bytes = f.read(header_len)
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read: {e.strerror}") from e
        self.file_size = size
        self.data_start = 8 + header_len
        try:
            header = json.loads(self.header_bytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt safetensors header: invalid JSON ({e})") from e
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header: not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        self.metadata: dict[str, str] = meta if isinstance(meta, dict) else {}
        self.tensors: dict[str, TensorInfo] = {}
        data_size = size - self.data_start
        for name, entry in header.items():
            self.tensors[name] = self._parse_entry(name, entry, data_size)

    def _parse_entry(self, name: str, entry: object, data_size: int) -> TensorInfo:
        where = f"{self.path}: tensor '{name}'"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: header entry is not an object")
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if dtype not in DTYPES:
            raise CheckpointError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise CheckpointError(f"{where}: bad data_offsets {offsets!r}")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * DTYPES[dtype][1]
        if offsets[1] - offsets[0] != nbytes:
            raise CheckpointError(
                f"{where}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes but "
                f"{dtype}{shape} needs {nbytes}"
            )
        if offsets[1] > data_size:
            raise CheckpointError(
                f"{where}: data ends at byte {self.data_start + offsets[1]} but the file has "
                f"{self.file_size} bytes (truncated file?)"
            )
        return TensorInfo(name, self.path, dtype, tuple(shape), self.data_start + offsets[0], nbytes)


def read_tensor(info: TensorInfo, fh: BinaryIO | None = None) -> np.ndarray:
    """Read one tensor into a new numpy array of its storage dtype (BF16 -> uint16, FP8 -> uint8)."""
    np_dtype = DTYPES[info.dtype][0]
    out = np.empty(info.shape, dtype=np_dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    close = fh is None
    if fh is None:
        fh = open(info.path, "rb")
    try:
        fh.seek(info.offset)
        got = fh.readinto(view)
    finally:
        if close:
            fh.close()
    if got != info.nbytes:
        raise CheckpointError(
            f"{info.path}: tensor '{info.name}': read {got} of {info.nbytes} bytes (truncated file?)"
        )
    return out


@dataclass(frozen=True)
class TensorSpec:
    """A tensor the writer will receive: name, safetensors dtype string, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype][1]
        for d in self.shape:
            n *= d
        return n


class SafetensorsWriter:
    """Streams tensors into one safetensors file in a declared order.

    ``write`` must be called once per declared tensor, in declaration order; ``close`` checks
    that all were written. ``sha256`` (after close) is the digest of the whole file.
    """

    def __init__(self, path: str | os.PathLike, specs: Iterable[TensorSpec], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.specs = list(specs)
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for s in self.specs:
            if s.dtype not in DTYPES:
                raise ValueError(f"tensor '{s.name}': unknown dtype {s.dtype!r}")
            if s.name in header:
                raise ValueError(f"tensor '{s.name}' declared twice")
            header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
            offset += s.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # the format aligns the data section to 8 bytes
        self._hash = hashlib.sha256()
        self._pool = None
        self._fh = open(self.path, "wb")
        self._emit(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self.sha256: str | None = None
        self.size = 8 + len(raw) + offset

    def _emit(self, data: bytes | memoryview) -> None:
        # Hash and write the same bytes at once: both release the GIL on large buffers, so the
        # sha256 costs no wall time next to the write on a machine with a second core.
        if len(data) < _PARALLEL_HASH_BYTES:
            self._hash.update(data)
            self._fh.write(data)
            return
        hashing = self._hasher().submit(self._hash.update, data)
        try:
            self._fh.write(data)
        finally:
            hashing.result()

    def _hasher(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        return self._pool

    def _expect(self, name: str) -> TensorSpec:
        if self._next >= len(self.specs):
            raise ValueError(f"tensor '{name}' was not declared (all declared tensors are written)")
        spec = self.specs[self._next]
        if name != spec.name:
            raise ValueError(f"expected tensor '{spec.name}' next, got '{name}'")
        return spec

    def write(self, name: str, array: np.ndarray) -> None:
        spec = self._expect(name)
        if tuple(array.shape) != tuple(spec.shape) or array.dtype.itemsize != DTYPES[spec.dtype][1]:
            raise ValueError(
                f"tensor '{name}': got {array.dtype}{list(array.shape)}, declared {spec.dtype}{list(spec.shape)}"
            )
        self._emit(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
        self._next += 1

    def copy_from(self, name: str, src: TensorInfo, chunk: int = 1 << 24) -> None:
        """Write a tensor by copying its bytes from a source file in chunks (no full copy in memory)."""
        spec = self._expect(name)
        if src.shape != tuple(spec.shape) or DTYPES[src.dtype][1] != DTYPES[spec.dtype][1]:
            raise ValueError(f"tensor '{name}': source {src.dtype}{list(src.shape)}, declared {spec.dtype}{list(spec.shape)}")
        buf = bytearray(min(chunk, max(src.nbytes, 1)))
        view = memoryview(buf)
        with open(src.path, "rb") as f:
            f.seek(src.offset)
            left = src.nbytes
            while left:
                n = f.readinto(view[: min(left, len(buf))])
                if not n:
                    raise CheckpointError(f"{src.path}: tensor '{src.name}': file ends early (truncated file?)")
                self._emit(view[:n])
                left -= n
        self._next += 1

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        self._shutdown()
        if self._next != len(self.specs):
            raise RuntimeError(
                f"{self.path}: {len(self.specs) - self._next} declared tensors were never written "
                f"(next: '{self.specs[self._next].name}')"
            )
        self.sha256 = self._hash.hexdigest()

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
