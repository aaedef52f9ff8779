"""Start and stop a real Triton Inference Server on this machine, from the PyPI wheel
``nvidia-pytriton==0.7.0`` (tritonserver 2.51 with the python backend; no GPU needed).

The wheel and the python-backend stub's environment are set up by ``stub_env.prepare``
(``launcher prepare``); see that module for why the stub needs an environment of its own.

The server listens on 127.0.0.1 only, on free ports unless given; ``start`` waits for readiness
(bounded), then starts the server's watchdog (``serving.watchdog``: reloads a model whose stub
process died, cleans up after a dead server). ``stop`` ends the server by PID (SIGTERM, then
SIGKILL of its process group after a grace period) and then whatever it left: stubs orphaned by
a crash and its /dev/shm regions (told apart by a shared-memory prefix of its own). ``start``
refuses to run over stubs a dead server of the same repository left running, unless ``--clean``.

    python -m qwen35_trt.serving.launcher prepare
    python -m qwen35_trt.serving.launcher start --repo triton_repo [--state build/triton/server.json] [--clean] [--no-watchdog]
    python -m qwen35_trt.serving.launcher stop [--state build/triton/server.json]
    python -m qwen35_trt.serving.launcher clean --repo triton_repo
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserInputError
from . import processes
from .stub_env import PytritonMissing, ServerError, libpython_dir, prepare, pytriton_root, site_packages  # noqa: F401  (re-exported)

HOST = "127.0.0.1"
DEFAULT_STATE = Path("build/triton/server.json")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class ServerInfo:
    pid: int
    repo: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log: str
    shm_prefix: str = ""  # this server's python-backend shared-memory regions: /dev/shm/<prefix>*
    watchdog_pid: int = 0

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"


def _ready(info: ServerInfo) -> bool:
    try:
        with urllib.request.urlopen(f"http://{info.http_url}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _tail(path: str, n: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class OrphansFound(UserInputError):
    """Stub processes of an earlier, dead server of the same repository are still running."""


def describe(stubs: list[processes.Stub]) -> str:
    return ", ".join(f"pid {s.proc.pid} ({s.instance})" for s in stubs)


def clean_orphans(repo: str | os.PathLike) -> tuple[list[processes.Stub], list[str]]:
    """End the orphaned stubs of ``repo`` (see ``processes``) and remove their shared memory."""
    orphans = processes.orphans_of_repo(Path(repo))
    processes.end([s.proc.pid for s in orphans])
    return orphans, processes.remove_shm([s.shm_region for s in orphans])


def start(repo: str | os.PathLike, log: str | os.PathLike, http_port: int = 0, grpc_port: int = 0, metrics_port: int = 0, timeout: float = 120.0,
          exit_timeout: int = 10, watchdog: bool = True, clean: bool = False) -> ServerInfo:
    """Start tritonserver on ``repo`` (127.0.0.1 only), wait until it is ready, then start its
    watchdog (``serving.watchdog``: reloads a model whose stub died, cleans up if the server dies).

    Refuses (``OrphansFound``) while stubs of an earlier server of the same repository that died
    without cleaning up are still running; ``clean=True`` ends them and removes their shared
    memory first."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise UserInputError(f"--repo {repo}: no such model repository (run build_engine.py publish first)")
    orphans = processes.orphans_of_repo(repo)
    if orphans and not clean:
        raise OrphansFound(
            f"{len(orphans)} python-backend stub(s) of a dead tritonserver still serve {repo}: {describe(orphans)}; "
            "stop that server with 'launcher stop --state <its state file>', or start with --clean to end them"
        )
    if orphans:
        clean_orphans(repo)
    from .publish import check_repository

    check_repository(repo)  # a stale or missing engine is the user's to fix: exit 2, before starting anything
    for flag, port in (("--http-port", http_port), ("--grpc-port", grpc_port), ("--metrics-port", metrics_port)):
        if port and not _port_free(port):
            raise UserInputError(f"{flag} {port}: the port is in use on {HOST} (another server?); choose another or leave it out for a free one")
    root = pytriton_root()
    env_dir = prepare(install=False)
    log = Path(log).resolve()
    log.parent.mkdir(parents=True, exist_ok=True)
    ports = [p or free_port() for p in (http_port, grpc_port, metrics_port)]
    env = dict(os.environ)
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(site_packages() / "nvidia_pytriton.libs"), str(libpython_dir()), env.get("LD_LIBRARY_PATH")]))
    env.pop("PYTHONPATH", None)
    # a prefix of our own for the stubs' shared-memory regions, so that this server's can be told apart
    shm_prefix = f"qwen35_trt_{secrets.token_hex(4)}_"
    cmd = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={env_dir / 'backends'}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        # explicit model control (every model loaded at start) lets the watchdog reload a model
        "--model-control-mode=explicit", "--load-model=*",
        f"--http-address={HOST}", f"--http-port={ports[0]}",
        f"--grpc-address={HOST}", f"--grpc-port={ports[1]}",
        f"--metrics-address={HOST}", f"--metrics-port={ports[2]}",
        "--allow-gpu-metrics=false",
        f"--exit-timeout-secs={exit_timeout}",
        "--strict-readiness=true",
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    info = ServerInfo(proc.pid, str(repo), *ports, str(log), shm_prefix)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(info)
            raise ServerError(f"tritonserver exited with code {proc.returncode} while starting; log {log}:\n{_tail(str(log))}")
        if _ready(info) and proc.poll() is None:  # ready, and it is ours that answered
            if watchdog:
                info.watchdog_pid = _start_watchdog(info)
            return info
        time.sleep(0.2)
    stop(info)
    raise ServerError(f"tritonserver not ready after {timeout:.0f} s; log {log}:\n{_tail(str(log))}")


def _start_watchdog(info: ServerInfo, timeout: float = 60.0) -> int:
    """Start the watchdog and wait until it watches (its first line in the log names the server)."""
    cmd = [sys.executable, "-m", "qwen35_trt.serving.watchdog", "--pid", str(info.pid), "--http-port", str(info.http_port), "--shm-prefix", info.shm_prefix]
    with open(info.log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    mark = "qwen35-watchdog: "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(info)
            raise ServerError(f"the watchdog exited with code {proc.returncode} at start; log {info.log}:\n{_tail(info.log)}")
        text = Path(info.log).read_text(errors="replace")
        if any(line.startswith(mark) and f"watching tritonserver pid {info.pid} " in line for line in text.splitlines()):
            return proc.pid
        time.sleep(0.1)
    proc.kill()
    stop(info)
    raise ServerError(f"the watchdog did not start watching within {timeout:.0f} s; log {info.log}")


@dataclass
class StopReport:
    """What ``stop`` found and did."""

    pid: int
    was_running: bool
    killed: bool = False  # needed SIGKILL after the grace period
    leftovers: list[processes.Proc] = field(default_factory=list)  # processes of the server that outlived it
    shm_removed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        head = f"tritonserver pid {self.pid} " + (("stopped" + (" (killed after the grace period)" if self.killed else "")) if self.was_running else "was not running (it exited or was killed)")
        parts = [head]
        if self.leftovers:
            what = ", ".join(f"pid {p.pid} ({Path(p.argv[0]).name if p.argv else '?'})" for p in self.leftovers)
            parts.append(f"ended {len(self.leftovers)} leftover process(es): {what}")
        if self.shm_removed:
            parts.append(f"removed {len(self.shm_removed)} shared-memory region(s) /dev/shm/{self.shm_removed[0]}" + (" ..." if len(self.shm_removed) > 1 else ""))
        return "; ".join(parts)


def stop(info: ServerInfo, grace: float = 20.0) -> StopReport:
    """Stop the server and everything it left: SIGTERM its PID and wait ``grace`` seconds, then
    SIGKILL its process group; then end any process left in that group or any stub of that server
    (a crashed server's orphans) and remove the server's shared-memory regions."""
    if info.watchdog_pid and _is_watchdog(info.watchdog_pid, info.pid):
        processes.end([info.watchdog_pid])  # first, so that it does not react to the shutdown
    pid = info.pid
    report = StopReport(pid, _is_server(pid, info.repo))
    if report.was_running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and processes.alive(pid):
            _reap(pid)
            time.sleep(0.1)
        if processes.alive(pid):
            report.killed = True
            try:
                os.killpg(pid, signal.SIGKILL)  # the server and its stub processes (its own session)
            except ProcessLookupError:
                pass
            processes.end([pid])
        _reap(pid)
    report.leftovers, report.shm_removed = processes.end_leftovers(pid, info.shm_prefix)
    return report


def _is_server(pid: int, repo: str) -> bool:
    """Whether ``pid`` is still the tritonserver serving ``repo`` (a dead server's PID may be reused)."""
    p = processes.read_proc(pid)
    return p is not None and p.alive and bool(p.argv) and Path(p.argv[0]).name == "tritonserver" and f"--model-repository={repo}" in p.argv


def _is_watchdog(pid: int, server_pid: int) -> bool:
    p = processes.read_proc(pid)
    return p is not None and "qwen35_trt.serving.watchdog" in p.argv and str(server_pid) in p.argv


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (started by another process)
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qwen35_trt.serving.launcher", description="Run tritonserver (from the nvidia-pytriton wheel) on 127.0.0.1.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="install the tritonserver wheel (no deps) and the python-backend stub env")
    ps = sub.add_parser("start", help="start the server in the background and wait until it is ready")
    ps.add_argument("--repo", default="triton_repo", help="model repository (default: triton_repo)")
    ps.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"where to record the PID and ports (default: {DEFAULT_STATE})")
    ps.add_argument("--http-port", type=int, default=0)
    ps.add_argument("--grpc-port", type=int, default=0)
    ps.add_argument("--metrics-port", type=int, default=0)
    ps.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    ps.add_argument("--no-watchdog", action="store_true", help="do not reload models whose stub process died")
    ps.add_argument("--clean", action="store_true", help="end stubs left running by a dead server of this repository first")
    pt = sub.add_parser("stop", help="stop the server recorded in --state and clean up what it left")
    pt.add_argument("--state", type=Path, default=DEFAULT_STATE)
    pc = sub.add_parser("clean", help="end stubs left running by dead servers of a repository and remove their shared memory")
    pc.add_argument("--repo", default="triton_repo")
    args = p.parse_args(argv)
    try:
        if args.command == "prepare":
            print(f"stub env ready: {prepare()}")
        elif args.command == "start":
            if args.state.is_file():
                old = ServerInfo(**json.loads(args.state.read_text()))
                if _is_server(old.pid, old.repo):
                    raise UserInputError(f"{args.state}: tritonserver pid {old.pid} from this state file is still running; stop it first")
            info = start(args.repo, args.state.with_suffix(".log"), args.http_port, args.grpc_port, args.metrics_port, args.timeout,
                         watchdog=not args.no_watchdog, clean=args.clean)
            args.state.parent.mkdir(parents=True, exist_ok=True)
            args.state.write_text(json.dumps(asdict(info), indent=2) + "\n")
            print(f"tritonserver pid {info.pid} ready: grpc {info.grpc_url}, http {info.http_url}, metrics {info.metrics_url} (log {info.log})")
        elif args.command == "clean":
            orphans, removed = clean_orphans(args.repo)
            print(f"ended {len(orphans)} orphaned stub(s){': ' + describe(orphans) if orphans else ''}; removed {len(removed)} shared-memory region(s)")
        else:
            if not args.state.is_file():
                print(f"no server recorded in {args.state}", file=sys.stderr)
                return 2
            info = ServerInfo(**json.loads(args.state.read_text()))
            print(stop(info).describe())
            args.state.unlink()
        return 0
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ServerError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
