"""The processes and shared memory of a tritonserver on this machine, read from /proc and /dev/shm.

A python-backend model instance runs in its own stub process, which tritonserver starts as
``triton_python_backend_stub <model dir>/<version>/model.py <shm region> <size> <growth>
<server pid> <python lib> <ipc handle> <instance name> ...`` in the server's process group, and
which talks to the server through the shared-memory region ``/dev/shm/<shm region>``. When the
server dies abruptly (SIGKILL, a crash) a stub can outlive it, orphaned (its parent becomes PID 1)
and blocked on the dead server, holding its memory and its region: nothing else cleans those up.
This module finds them (``stubs``, ``orphans_of_repo``) and ends them (``end``, ``remove_shm``).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str  # /proc/<pid>/stat state letter: R, S, D, Z (zombie) ...
    argv: tuple[str, ...]

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


@dataclass(frozen=True)
class Stub:
    proc: Proc
    model_path: Path  # <repo>/<model>/<version>/model.py
    shm_region: str
    server_pid: int
    instance: str  # e.g. qwen35_0_0

    @property
    def model(self) -> str:
        return self.model_path.parent.parent.name

    @property
    def repo(self) -> Path:
        return self.model_path.parent.parent.parent


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return Proc(pid, int(fields[1]), int(fields[2]), fields[0], tuple(a.decode(errors="replace") for a in argv if a))


def all_procs() -> list[Proc]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            p = read_proc(int(entry))
            if p is not None:
                out.append(p)
    return out


def alive(pid: int) -> bool:
    p = read_proc(pid)
    return p is not None and p.alive


def as_stub(p: Proc) -> Stub | None:
    if not p.argv or Path(p.argv[0]).name != STUB_NAME or len(p.argv) < 9:
        return None
    try:
        return Stub(p, Path(p.argv[1]), p.argv[2], int(p.argv[5]), p.argv[8])
    except ValueError:
        return None


def stubs(server_pid: int | None = None) -> list[Stub]:
    """Python-backend stub processes (of the server ``server_pid`` when given), zombies included."""
    found = [s for s in map(as_stub, all_procs()) if s is not None]
    return [s for s in found if server_pid is None or s.server_pid == server_pid]


def group_members(pgid: int) -> list[Proc]:
    return [p for p in all_procs() if p.pgid == pgid and p.pid != os.getpid()]


def orphans_of_repo(repo: Path) -> list[Stub]:
    """Live stubs serving a model of ``repo`` whose server is gone."""
    repo = Path(repo).resolve()
    return [s for s in stubs() if s.proc.alive and s.repo == repo and not alive(s.server_pid)]


def end(pids: list[int], grace: float = 2.0) -> list[int]:
    """SIGKILL ``pids`` and wait (bounded) until they are gone or zombies; returns those still there."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if alive(pid)]
        if left:
            time.sleep(0.05)
    return left


def shm_regions(prefix: str) -> list[Path]:
    if not prefix or not SHM_DIR.is_dir():
        return []
    return sorted(p for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def remove_shm(names: list[str]) -> list[str]:
    """Unlink /dev/shm/<name> for each name; returns the names removed."""
    removed = []
    for name in names:
        if not name or "/" in name:
            continue
        try:
            (SHM_DIR / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def end_leftovers(server_pid: int, shm_prefix: str) -> tuple[list[Proc], list[str]]:
    """End what the (stopped or dead) tritonserver ``server_pid`` left running: members of its
    process group that are a tritonserver or a stub (never anything else that took the group's id)
    and its stubs wherever they are; then remove its shared-memory regions (``shm_prefix``'s and the
    stubs'). Returns (the processes ended, the region names removed)."""
    ours = ("tritonserver", STUB_NAME)
    left = {p.pid: p for p in group_members(server_pid) if p.alive and p.argv and Path(p.argv[0]).name in ours}
    server_stubs = stubs(server_pid)
    left.update({s.proc.pid: s.proc for s in server_stubs if s.proc.alive})
    end(list(left))
    names = {p.name for p in shm_regions(shm_prefix)} | {s.shm_region for s in server_stubs}
    return sorted(left.values(), key=lambda p: p.pid), remove_shm(sorted(names))
