"""Faults of a real tritonserver deployment: a killed model stub, a killed server, leftovers.

Each test starts its own server on a freshly published tiny engine, kills something with SIGKILL
(as the out-of-memory killer or a native crash would) and checks what the launcher and the
watchdog make of it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest

from serving_fixtures import make_limits, reference, tiny_engine  # noqa: F401

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the serving extra) is not installed")
import tritonclient.grpc as grpcclient  # noqa: E402

from qwen35_trt.serving import launcher, processes  # noqa: E402
from qwen35_trt.serving.client import stream_generate  # noqa: E402


@pytest.fixture()
def repo(tiny_engine, tmp_path) -> Path:
    from qwen35_trt.serving.publish import publish

    try:
        launcher.pytriton_root()
    except launcher.PytritonMissing as e:
        pytest.skip(f"nvidia-pytriton wheel not installed: {e}")
    launcher.prepare(install=True, quiet=True)
    publish(tiny_engine, tmp_path / "repo", "qwen35", make_limits())
    return tmp_path / "repo"


@pytest.fixture()
def servers():
    """Servers a test starts; whatever is left of them is stopped at the end."""
    started: list = []
    yield started
    for info in started:
        launcher.stop(info, grace=5)


def start(repo: Path, servers: list, **kw):
    info = launcher.start(repo, repo.parent / f"server-{len(servers)}.log", timeout=120, **kw)
    servers.append(info)
    return info


def gauge(info, name: str) -> float | None:
    with urllib.request.urlopen(info.metrics_url, timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f'qwen35_runtime_{name}{{model="qwen35"}} '):
            return float(line.split()[-1])
    return None


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def wait_for(what: str, cond, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


def streams_in_flight(info, n: int = 4) -> list[threading.Thread]:
    """``n`` long streaming requests running in background threads (they end when the server does)."""
    def client(i):
        try:
            stream_generate(grpcclient.InferenceServerClient(info.grpc_url), "qwen35", f"Stream number {i} of the engine directory", 40, timeout=30)
        except Exception:
            pass

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    wait_for("streams running", lambda: (gauge(info, "running") or 0) >= 1, 30)
    return threads


def qwen35_stub(info) -> processes.Stub:
    stubs = [s for s in processes.stubs(info.pid) if s.proc.alive and s.model == "qwen35"]
    assert len(stubs) == 1, stubs
    return stubs[0]


def test_a_killed_model_stub_is_noticed_and_the_model_reloaded(repo, servers, reference):
    info = start(repo, servers)
    stub = qwen35_stub(info)
    started = wait_for("runtime gauges", lambda: gauge(info, "start_time_seconds"), 10)
    ready_url = f"http://{info.http_url}/v2/health/ready"
    assert http_status(ready_url) == 200

    os.kill(stub.proc.pid, signal.SIGKILL)
    t_kill = time.monotonic()
    # the server says it is not ready while the model is reloaded (a readiness probe fails) ...
    wait_for("server reported not ready", lambda: http_status(ready_url) != 200, 10, every=0.02)
    noticed = time.monotonic() - t_kill
    # ... then serves again from a new stub and a new runtime, which its gauges show
    wait_for("server ready again", lambda: http_status(ready_url) == 200, 120, every=0.1)
    new = qwen35_stub(info)
    assert new.proc.pid != stub.proc.pid
    wait_for("new runtime's gauges", lambda: (gauge(info, "start_time_seconds") or 0) > started, 10)
    log = Path(info.log).read_text(errors="replace")
    assert "stub process of qwen35_0_0 died" in log and "qwen35 reloaded" in log, log[-3000:]
    assert noticed < 5.0, f"the dead stub was noticed only after {noticed:.1f} s"

    prompt = "The engine directory holds"
    res = stream_generate(grpcclient.InferenceServerClient(info.grpc_url), "qwen35", prompt, 8, timeout=60)
    assert res.error is None and res.ids == reference.generate(prompt, 8)[0]
    assert not processes.alive(stub.proc.pid)
    assert processes.alive(info.pid) and "Signal (" not in log


def test_stop_after_the_server_was_killed_ends_its_stubs_and_removes_its_shared_memory(repo, servers, tmp_path, capsys):
    info = start(repo, servers, watchdog=False)
    assert processes.shm_regions(info.shm_prefix), "the server's shared-memory regions carry its prefix"
    streams_in_flight(info)
    os.kill(info.pid, signal.SIGKILL)
    wait_for("server gone", lambda: not processes.alive(info.pid), 10)
    leftovers = [s.proc.pid for s in processes.stubs(info.pid) if s.proc.alive]
    assert processes.shm_regions(info.shm_prefix), "a killed server leaves its regions behind"

    state = tmp_path / "server.json"
    state.write_text(json.dumps(asdict(info)))
    assert launcher.main(["stop", "--state", str(state)]) == 0
    said = capsys.readouterr().out
    assert f"tritonserver pid {info.pid} was not running" in said
    assert "shared-memory region" in said
    for pid in leftovers:
        assert str(pid) in said, f"stop does not say it ended stub {pid}: {said}"
    assert not [s for s in processes.stubs(info.pid) if s.proc.alive]
    assert not [p for p in processes.group_members(info.pid) if p.alive]
    assert not processes.shm_regions(info.shm_prefix)


def test_start_refuses_over_orphans_of_the_same_repository_and_cleans_them_on_request(repo, servers):
    dead = start(repo, servers, watchdog=False)
    stubs = [s for s in processes.stubs(dead.pid) if s.proc.alive]
    # an orphan as a crash leaves one: the server killed, its stub still running
    os.killpg(dead.pid, signal.SIGSTOP)  # freeze them all so that no stub can notice and exit
    os.kill(dead.pid, signal.SIGKILL)
    wait_for("server gone", lambda: not processes.alive(dead.pid), 10)
    orphans = processes.orphans_of_repo(repo)
    assert {s.proc.pid for s in orphans} == {s.proc.pid for s in stubs}

    with pytest.raises(launcher.OrphansFound) as e:
        start(repo, servers)
    assert all(str(s.proc.pid) in str(e.value) for s in orphans) and "--clean" in str(e.value)

    info = start(repo, servers, clean=True)
    assert not processes.orphans_of_repo(repo)
    assert all(not processes.alive(s.proc.pid) for s in orphans)
    assert all(not Path("/dev/shm", s.shm_region).exists() for s in orphans)
    res = stream_generate(grpcclient.InferenceServerClient(info.grpc_url), "qwen35", "hello", 3, timeout=60)
    assert res.error is None and res.ids


def test_the_watchdog_cleans_up_after_a_killed_server(repo, servers):
    info = start(repo, servers)
    assert info.watchdog_pid and processes.alive(info.watchdog_pid)
    streams_in_flight(info)
    os.kill(info.pid, signal.SIGKILL)
    wait_for("stubs ended", lambda: not [s for s in processes.stubs(info.pid) if s.proc.alive], 10)
    wait_for("shared memory removed", lambda: not processes.shm_regions(info.shm_prefix), 10)
    wait_for("watchdog exited", lambda: not processes.alive(info.watchdog_pid), 10)
    assert f"tritonserver pid {info.pid} is gone" in Path(info.log).read_text(errors="replace")


def test_launcher_cli_guards_its_state_file_ports_and_pids(repo, servers, tmp_path, capsys):
    import subprocess
    import sys

    state = tmp_path / "state.json"
    assert launcher.main(["start", "--repo", str(repo), "--state", str(state)]) == 0
    info = launcher.ServerInfo(**json.loads(state.read_text()))
    servers.append(info)
    # the same state file again: the recorded server is alive, so no second server
    assert launcher.main(["start", "--repo", str(repo), "--state", str(tmp_path / "state.json")]) == 2
    assert "still running" in capsys.readouterr().err
    # a port that is taken: refused up front, instead of "ready" answered by the other server
    other = tmp_path / "other.json"
    assert launcher.main(["start", "--repo", str(repo), "--state", str(other), "--http-port", str(info.http_port)]) == 2
    assert f"--http-port {info.http_port}: the port is in use" in capsys.readouterr().err
    assert not other.exists()
    assert launcher.main(["stop", "--state", str(state)]) == 0
    assert f"tritonserver pid {info.pid} stopped" in capsys.readouterr().out
    # a state file whose PID now belongs to another process: that process is never signalled
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state.write_text(json.dumps(asdict(launcher.ServerInfo(bystander.pid, str(repo), 1, 2, 3, str(tmp_path / "x.log")))))
        assert launcher.main(["stop", "--state", str(state)]) == 0
        assert f"tritonserver pid {bystander.pid} was not running" in capsys.readouterr().out
        time.sleep(0.2)
        assert bystander.poll() is None, "stop signalled a process that is not its server"
    finally:
        bystander.kill()
        bystander.wait()
