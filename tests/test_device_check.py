"""bench/device_check.sh --dry-run: the checks made on the CPU machine before a device call.

The dry run checks the phases' files, the carried wheels against bench/device_wheels.txt and the
manifest, Python 3.12 compatibility and the size of what travels. These tests run it against a
carried folder made here from stand-in wheels (right names, manifest by bench/device_carry.py), so
they need no network, and check that it fails, naming the cause, when the folder is missing or a
wheel is missing, altered or of the wrong kind. The real .carry/ (bash bench/device_prepare.sh) is
checked too when it is present.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_check.sh"
HELPER = ROOT / "bench" / "device_carry.py"

sys.path.insert(0, str(ROOT / "bench"))
import device_carry  # noqa: E402


def dry_run(carry: Path | str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CARRY_DIR=str(carry), PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def make_carry(folder: Path) -> Path:
    """A carried folder of stand-in wheels with the pinned names, and its manifest."""
    folder.mkdir(parents=True)
    for pin in device_carry.read_pins():
        tag = "py3-none-any" if pin.kind == "pure" else "cp312-cp312-manylinux_2_28_x86_64"
        with zipfile.ZipFile(folder / f"{pin.stem}{tag}.whl", "w") as z:
            z.writestr(f"{pin.stem}dist-info/METADATA", f"Name: {pin.dist}\nVersion: {pin.version}\n")
            if pin.dist == "kernel-lens":
                z.writestr(device_carry.TRT_HEADER, "// stand-in\n")
    subprocess.run([sys.executable, str(HELPER), "manifest", str(folder)], check=True)
    return folder


def test_pins_are_pinned_and_pure_except_numpy():
    pins = device_carry.read_pins()
    names = {p.dist for p in pins}
    assert {"pytest", "iniconfig", "pluggy", "packaging", "pygments", "einops", "fla-core", "kernel-lens", "numpy"} <= names
    for p in pins:
        assert p.version[0].isdigit(), p
        assert p.kind == ("cp312" if p.dist == "numpy" else "pure"), p
    assert next(p for p in pins if p.dist == "fla-core").version.startswith("0.6.")


def test_dry_run_passes_with_a_prepared_folder(tmp_path):
    r = dry_run(make_carry(tmp_path / "carry"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dry run: ok" in r.stdout
    for phase in ("build", "bench", "sanitize", "quick"):
        assert f"[{phase}] build:" in r.stdout  # every phase builds first when it must
    assert "test_attention_cuda" in r.stdout and "tests/test_attention_cuda.py" in r.stdout
    assert "files checked with Python" in r.stdout


def test_dry_run_fails_naming_a_missing_carried_folder(tmp_path):
    missing = tmp_path / "no-such-carry"
    r = dry_run(missing)
    assert r.returncode != 0
    assert f"carried folder {missing} is missing" in r.stdout
    assert "device_prepare.sh" in r.stdout


def test_dry_run_names_a_missing_wheel(tmp_path):
    carry = make_carry(tmp_path / "carry")
    next(carry.glob("einops-*.whl")).unlink()
    r = dry_run(carry)
    assert r.returncode != 0
    assert "missing wheel: einops==0.8.2" in r.stdout


def test_dry_run_names_an_altered_wheel(tmp_path):
    carry = make_carry(tmp_path / "carry")
    wheel = next(carry.glob("fla_core-*.whl"))
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("fla/extra.py", "x = 1\n")
    r = dry_run(carry)
    assert r.returncode != 0
    assert f"{wheel.name}: size or sha256 differs" in r.stdout


def test_dry_run_names_a_wheel_of_the_wrong_kind_and_an_unpinned_one(tmp_path):
    carry = make_carry(tmp_path / "carry")
    pure = next(carry.glob("pytest-*.whl"))
    pure.rename(carry / pure.name.replace("py3-none-any", "cp312-cp312-manylinux_2_28_x86_64"))
    (carry / "extra-1.0-py3-none-any.whl").write_bytes(b"PK")
    subprocess.run([sys.executable, str(HELPER), "manifest", str(carry)], check=True)
    r = dry_run(carry)
    assert r.returncode != 0
    assert "pytest-9.2.0-cp312-cp312-manylinux_2_28_x86_64.whl: not a py3-none-any wheel" in r.stdout
    assert "unpinned wheel extra-1.0-py3-none-any.whl" in r.stdout


def test_prepare_refuses_a_wheel_that_is_not_pure_python(tmp_path):
    w = tmp_path / "pytest-9.2.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    w.write_bytes(b"PK")
    r = subprocess.run([sys.executable, str(HELPER), "check-file", "pure", str(w)], capture_output=True, text=True)
    assert r.returncode == 1 and "refused" in r.stderr
    ok = tmp_path / "numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    ok.write_bytes(b"PK")
    assert subprocess.run([sys.executable, str(HELPER), "check-file", "cp312", str(ok)]).returncode == 0


def test_a_phase_refuses_to_start_without_a_gpu():
    r = subprocess.run(["bash", str(SCRIPT), "build"], cwd=ROOT, env=dict(os.environ, PYTHON=sys.executable),
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        pytest.skip("a CUDA device is visible here")
    assert r.returncode == 2 and "--dry-run" in r.stderr


def test_dry_run_with_the_real_carried_folder():
    carry = ROOT / ".carry"
    if not carry.is_dir():
        pytest.skip("no .carry/ in this checkout (bash bench/device_prepare.sh fetches it); "
                    "test_dry_run_fails_naming_a_missing_carried_folder covers its absence")
    r = dry_run(".carry")
    assert r.returncode == 0, r.stdout + r.stderr
