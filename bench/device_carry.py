#!/usr/bin/env python3
"""The wheels carried to a lent GPU machine (folder .carry/, pins in bench/device_wheels.txt).

    python3 bench/device_carry.py check-file KIND WHEEL      is WHEEL acceptable for KIND (pure / cp312)?
    python3 bench/device_carry.py manifest DIR               write DIR/MANIFEST.tsv and DIR/SHA256SUMS
    python3 bench/device_carry.py verify DIR                 every pinned wheel present, matching the manifest
    python3 bench/device_carry.py install DIR TARGET         (device) install the missing ones into TARGET
    python3 bench/device_carry.py headers DIR DEST           (device) unpack kernel-lens; print the include dir

Standard library only; runs under the CPU machine's Python 3.11 and the device image's 3.12.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "bench" / "device_wheels.txt"
MANIFEST = "MANIFEST.tsv"
SUMS = "SHA256SUMS"
# What travels with one device call: the working tree plus carried paths, 64 MiB in all.
TRAVEL_LIMIT = 64 << 20
# The carried folder's own share: "well under" the limit, room left for the tree.
CARRY_LIMIT = 40 << 20
TRT_HEADER = "kernel_lens/include/tensorrt/NvInferRuntime.h"


@dataclass(frozen=True)
class Pin:
    group: str
    dist: str
    version: str
    module: str  # import name; "-" when never imported
    kind: str  # "pure" or "cp312"

    @property
    def stem(self) -> str:
        """Wheel file names start with this (PEP 427: '-' and '.' of the name become '_')."""
        return re.sub(r"[-_.]+", "_", self.dist).lower() + "-" + self.version + "-"


def read_pins(path: Path = PINS) -> list[Pin]:
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        f = line.split()
        if len(f) != 5 or f[4] not in ("pure", "cp312"):
            raise SystemExit(f"{path}: bad line {line!r} (group dist version import kind)")
        pins.append(Pin(*f))
    return pins


def kind_ok(kind: str, name: str) -> bool:
    if kind == "pure":
        return name.endswith("-py3-none-any.whl")
    return re.search(r"-cp312-cp312-manylinux[^/]*x86_64\.whl$", name) is not None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_wheel(folder: Path, pin: Pin) -> list[Path]:
    return sorted(w for w in folder.glob("*.whl") if w.name.lower().startswith(pin.stem))


def cmd_check_file(a) -> int:
    if not kind_ok(a.kind, Path(a.wheel).name):
        want = "a pure-Python py3-none-any wheel" if a.kind == "pure" else "a cp312 manylinux x86_64 wheel"
        print(f"refused: {Path(a.wheel).name} is not {want}", file=sys.stderr)
        return 1
    return 0


def cmd_manifest(a) -> int:
    folder = Path(a.dir)
    rows, sums = ["group\tdistribution\tversion\timport\tkind\tfile\tbytes\tsha256"], []
    for pin in read_pins():
        for w in find_wheel(folder, pin):
            digest = sha256(w)
            rows.append(f"{pin.group}\t{pin.dist}\t{pin.version}\t{pin.module}\t{pin.kind}\t{w.name}\t{w.stat().st_size}\t{digest}")
            sums.append(f"{digest}  {w.name}")
    (folder / MANIFEST).write_text("\n".join(rows) + "\n")
    (folder / SUMS).write_text("\n".join(sums) + "\n")
    return 0


def verify(folder: Path, check_hashes: bool = True) -> list[str]:
    """Problems with the carried folder (empty list: all good). Names what is missing or wrong."""
    if not folder.is_dir():
        return [f"carried folder {folder} is missing (run: bash bench/device_prepare.sh)"]
    problems = []
    manifest = folder / MANIFEST
    listed: dict[str, tuple[int, str]] = {}
    if not manifest.is_file():
        problems.append(f"{manifest} is missing (run: bash bench/device_prepare.sh)")
    else:
        for line in manifest.read_text().splitlines()[1:]:
            f = line.split("\t")
            if len(f) == 8:
                listed[f[5]] = (int(f[6]), f[7])
    if not (folder / SUMS).is_file():
        problems.append(f"{folder / SUMS} is missing (run: bash bench/device_prepare.sh)")
    pins = read_pins()
    for pin in pins:
        found = find_wheel(folder, pin)
        if not found:
            problems.append(f"missing wheel: {pin.dist}=={pin.version} ({pin.stem}*.whl in {folder})")
            continue
        if len(found) > 1:
            problems.append(f"{pin.dist}=={pin.version}: several wheels {[w.name for w in found]} (keep one)")
        w = found[0]
        if not kind_ok(pin.kind, w.name):
            problems.append(f"{w.name}: not a {'py3-none-any' if pin.kind == 'pure' else 'cp312 manylinux x86_64'} wheel")
        if w.name not in listed:
            problems.append(f"{w.name}: not in {MANIFEST}")
        elif listed[w.name][0] != w.stat().st_size or (check_hashes and listed[w.name][1] != sha256(w)):
            problems.append(f"{w.name}: size or sha256 differs from {MANIFEST}")
        if pin.dist == "kernel-lens":
            try:
                with zipfile.ZipFile(w) as z:
                    if TRT_HEADER not in z.namelist():
                        problems.append(f"{w.name}: has no {TRT_HEADER}")
            except zipfile.BadZipFile:
                problems.append(f"{w.name}: not a zip file")
    known = {w.name for p in pins for w in find_wheel(folder, p)}
    for w in sorted(folder.glob("*.whl")):
        if w.name not in known:
            problems.append(f"unpinned wheel {w.name} (not in bench/device_wheels.txt; remove it)")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if size > CARRY_LIMIT:
        problems.append(f"{folder}: {size / 2**20:.1f} MiB, over the {CARRY_LIMIT >> 20} MiB kept for carried files")
    return problems


def cmd_verify(a) -> int:
    folder = Path(a.dir)
    problems = verify(folder)
    for p in problems:
        print(f"carry: {p}", file=sys.stderr)
    if not problems:
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"carry: {folder}: {len(list(folder.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB, all match {MANIFEST}")
    return 1 if problems else 0


def cmd_install(a) -> int:
    """Install, into TARGET, the carried wheels whose import name the running python3 lacks
    (a whole group when its first package is missing). Prints one line per package."""
    folder, target = Path(a.dir), Path(a.target)
    pins = [p for p in read_pins() if p.module != "-"]
    have = {p.module: importlib.util.find_spec(p.module) is not None for p in pins}
    lead_missing = {}
    for p in pins:
        lead_missing.setdefault(p.group, not have[p.module])
    todo, carried, image, absent = [], [], [], []
    for p in pins:
        need = lead_missing[p.group] or not have[p.module]
        wheels = find_wheel(folder, p)
        if need and not wheels:
            print(f"  {p.dist:<12} missing in the image and not carried")
            absent.append(p.dist)
            continue
        print(f"  {p.dist:<12} {'install ' + p.version + ' (carried)' if need else 'from the image'}")
        if need:
            todo.append(str(wheels[0]))
            carried.append(f"{p.dist} {p.version}")
        else:
            image.append(p.dist)
    rc = 0
    if todo:
        rc = subprocess.call([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                              "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(target), *todo])
    print(f"carried: {', '.join(carried) or '-'}; image: {', '.join(image) or '-'}"
          + (f"; MISSING: {', '.join(absent)}" if absent else "") + ("" if rc == 0 else f"; pip failed (rc {rc})"))
    return rc


def cmd_headers(a) -> int:
    folder, dest = Path(a.dir), Path(a.dest)
    pin = next(p for p in read_pins() if p.dist == "kernel-lens")
    wheels = find_wheel(folder, pin)
    if not wheels:
        print(f"no {pin.stem}*.whl in {folder}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(wheels[0]) as z:
        members = [m for m in z.namelist() if m.startswith("kernel_lens/include/")]
        z.extractall(dest, members)
    print(dest / "kernel_lens" / "include" / "tensorrt")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("check-file")
    s.add_argument("kind", choices=["pure", "cp312"])
    s.add_argument("wheel")
    s.set_defaults(fn=cmd_check_file)
    s = sub.add_parser("manifest")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_manifest)
    s = sub.add_parser("verify")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_verify)
    s = sub.add_parser("install")
    s.add_argument("dir")
    s.add_argument("target")
    s.set_defaults(fn=cmd_install)
    s = sub.add_parser("headers")
    s.add_argument("dir")
    s.add_argument("dest")
    s.set_defaults(fn=cmd_headers)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
