"""Keeps a tritonserver's python-backend models alive: reloads a model whose stub process died,
and cleans up after the server if the server itself dies.

Why it is needed: Triton 2.51's python backend does not restart a dead stub. After a stub is
killed (out-of-memory killer, a crash in native code) the model stays READY, the server's health
endpoints keep answering 200, and every request to that model fails after a second with "Stub
process ... is not healthy", forever. The watchdog polls the server's stub processes
(``processes.stubs``) every ``interval`` seconds; when an instance it has seen running has no live
stub any more while its model is still READY, it asks the server to reload that model (the server
runs with explicit model control), which starts a fresh stub and a fresh runtime. While a reload
runs, or if it fails, the model is not READY and, with ``--strict-readiness``, neither is the
server, so a readiness probe fails. The new runtime's ``qwen35_runtime_start_time_seconds`` gauge
tells that it restarted.

If the server process is gone, the watchdog ends the stubs it left behind, removes the server's
shared-memory regions and exits. It writes one line per event to its output (the launcher points
it at the server log, prefixed ``qwen35-watchdog:``).

    python -m qwen35_trt.serving.watchdog --pid SERVER_PID --http-port PORT [--shm-prefix PREFIX]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from . import processes

HOST = "127.0.0.1"


def say(msg: str) -> None:
    print(f"qwen35-watchdog: {time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", flush=True)


class Watchdog:
    def __init__(self, server_pid: int, http_port: int, shm_prefix: str = "", interval: float = 0.5, reload_timeout: float = 300.0):
        self.pid, self.base = server_pid, f"http://{HOST}:{http_port}"
        self.shm_prefix, self.interval, self.reload_timeout = shm_prefix, interval, reload_timeout
        self.seen: dict[str, str] = {}  # instance name -> model, for every instance seen with a live stub
        self.suspect: set[str] = set()  # instances found without a live stub at the last poll
        self.reloads = 0

    # ---- server API ----

    def _post(self, path: str, timeout: float) -> tuple[int, str]:
        req = urllib.request.Request(f"{self.base}{path}", data=b"{}", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def ready_models(self) -> set[str]:
        status, body = self._post("/v2/repository/index", timeout=10)
        if status != 200:
            raise OSError(f"repository index: HTTP {status}: {body}")
        return {m["name"] for m in json.loads(body) if m.get("state") == "READY"}

    def reload(self, model: str) -> bool:
        """Unload and load ``model`` (a plain load of an unchanged model may keep the dead instance)."""
        t0 = time.monotonic()
        status, body = self._post(f"/v2/repository/models/{model}/unload", timeout=self.reload_timeout)
        if status != 200:
            say(f"unloading {model} failed: HTTP {status}: {body}")
        status, body = self._post(f"/v2/repository/models/{model}/load", timeout=self.reload_timeout)
        if status != 200:
            say(f"reloading {model} failed: HTTP {status}: {body}; the model stays unavailable (server not ready)")
            return False
        self.reloads += 1
        say(f"{model} reloaded in {time.monotonic() - t0:.1f} s (reload {self.reloads})")
        return True

    # ---- one pass ----

    def poll(self) -> bool:
        """One check; False once the server is gone (after cleaning up)."""
        if not processes.alive(self.pid):
            self.clean_up()
            return False
        live = {s.instance: s.model for s in processes.stubs(self.pid) if s.proc.alive}
        self.seen.update(live)
        missing = {inst for inst in self.seen if inst not in live}
        # two polls in a row without a stub: a reload in progress replaces stubs faster than that
        dead = missing & self.suspect
        self.suspect = missing - dead
        if not dead:
            return True
        try:
            ready = self.ready_models()
        except OSError as e:
            say(f"server not answering ({e}); will retry")
            return True
        for model in sorted({self.seen[i] for i in dead}):
            gone = sorted(i for i in dead if self.seen[i] == model)
            for inst in gone:
                del self.seen[inst]
            if model not in ready:
                continue  # unloaded on purpose (or already failed): not ours to bring back
            say(f"stub process of {', '.join(gone)} died; model {model} is still marked READY but cannot answer: reloading it")
            self.reload(model)
        return True

    def clean_up(self) -> None:
        ended, removed = processes.end_leftovers(self.pid, self.shm_prefix)
        pids = [p.pid for p in ended]
        say(f"tritonserver pid {self.pid} is gone; ended {len(pids)} leftover process(es) {pids}, removed {len(removed)} shared-memory region(s)")

    def run(self) -> None:
        if not self.poll():
            return
        # the launcher waits for this line: from here on, a stub that dies is noticed
        say(f"watching tritonserver pid {self.pid} ({self.base}): {len(self.seen)} model instance(s) {sorted(self.seen)}")
        time.sleep(self.interval)
        while self.poll():
            time.sleep(self.interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qwen35_trt.serving.watchdog", description="Reload python-backend models whose stub died; clean up after a dead server.")
    p.add_argument("--pid", type=int, required=True, help="tritonserver's PID")
    p.add_argument("--http-port", type=int, required=True, help="its HTTP port on 127.0.0.1 (explicit model control)")
    p.add_argument("--shm-prefix", default="", help="its python backend's shm-region-prefix-name")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between checks")
    args = p.parse_args(argv)
    try:
        Watchdog(args.pid, args.http_port, args.shm_prefix, args.interval).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
