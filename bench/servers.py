"""Servers under test, one at a time: our stack as `make serve` runs it, and the peers' processes."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.harness import (ROOT, ProcessGroup, children, free_port, http_ok, listening, processes, ready_pids,
                           rss_mib, serve_env, session_tree, signal_each)


def _rss(pids) -> list[float]:
    """Resident memory of each process still running (MiB)."""
    return [mib for mib in map(rss_mib, pids) if mib is not None]


class Server(ProcessGroup):
    """A server's process group, its URL the one the load is sent to; stopped with SIGTERM to the group,
    then SIGKILL after 40 s. An error quotes the end of its log."""

    GRACE = 40
    LOG_TAIL = 3000

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, url: str, log: Path):
        self.url = url
        super().__init__(command, log, {**os.environ, **env}, cwd, name=url)

    def wait(self, ready, timeout: float = 300, what: str | None = None) -> float:
        """Seconds from process start until `ready()` holds: the cold start."""
        return super().wait(ready, timeout, what)

    def ready_with(self, body: bytes):
        """A readiness check: a POST of `body` to the server's URL answers 200."""
        def ready() -> bool:
            return requests.post(self.url, data=body, headers={"Content-Type": "application/json"},
                                 timeout=30).status_code == 200
        return ready


class OurStack(Server):
    """nginx + gunicorn + the batcher: api/process/stack.py, the same as `make serve`."""

    def __init__(self, store: Path, model: str, logs: Path, **settings):
        port = free_port()
        self.run_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
        env = {"SERVE_MODEL_STORE": str(store), "SERVE_MODEL_NAME": model, "SERVE_PORT": str(port),
               "SERVE_STATUS_PORT": str(free_port()), "SERVE_RUN_DIR": str(self.run_dir),
               "SERVE_LOG_LEVEL": "warning", "SERVE_MODEL_VERSIONS": "latest",
               # one load generator is one client address: nginx's per-client limits would measure
               # themselves, not the server
               "SERVE_CLIENT_RATE": "1000000", "SERVE_CLIENT_BURST": "1000000",
               "SERVE_CLIENT_CONNECTIONS": "65535", **serve_env(settings)}
        self.settings = settings
        super().__init__([sys.executable, "-m", "api.cli", "serve"], env, ROOT,
                         f"http://127.0.0.1:{port}/predict", logs / f"ours-{model}-{port}.log")
        self.workers = int(settings.get("workers", 2))

    def ready(self) -> bool:
        return (len(ready_pids(self.run_dir)) >= self.workers
                and http_ok(self.url.replace("/predict", "/ready")))

    def worker_rss_mib(self) -> list[float]:
        masters = [p for p in children(self.pid) if "gunicorn" in Path(f"/proc/{p}/cmdline").read_text()]
        return _rss(w for m in masters for w in children(m))


class Peer(Server):
    """A peer from ../shared/peers under gunicorn, as anchors.md runs it."""

    def __init__(self, peers: Path, app: str, logs: Path, args: list[str], env: dict[str, str] | None = None):
        port = free_port()
        self.app = app
        # As ../shared/peers/run_real_peers.sh runs them, from a plain virtualenv: gunicorn's pure-Python
        # HTTP parser. This venv also holds gunicorn_h1c (requirements-fast.txt), which gunicorn would
        # otherwise pick for the peers too; docs/performance.md gives the ceiling with it as well.
        super().__init__([sys.executable, "-m", "gunicorn", "--http-parser", "python", *args,
                          "-b", f"127.0.0.1:{port}", app],
                         {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(peers), **(env or {})}, peers,
                         f"http://127.0.0.1:{port}/predict", logs / f"peer-{app.split(':')[0]}-{port}.log")

    def worker_rss_mib(self) -> list[float]:
        return _rss(children(self.pid))


class RayServe(Server):
    """../shared/peers/ray_serve_app.py in Ray Serve, from Ray's own venv, as run_real_peers.sh runs it:
    HAProxy ingress straight to the replicas (Ray's high-throughput mode); `settings`: the model's plan."""

    FAST = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}

    def __init__(self, python: Path, peers: Path, model_file: Path, logs: Path, settings: dict[str, str]):
        self.port = free_port()
        super().__init__([str(python), "ray_serve_app.py"],
                         {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(peers), **self.FAST, **settings,
                          "MODEL": str(model_file), "PORT": str(self.port)}, peers,
                         f"http://127.0.0.1:{self.port}/predict", logs / f"peer-ray_serve-{self.port}.log")

    def stop(self) -> None:
        """Stops every process Ray started, and returns once they are gone and the port is free.

        Ray's raylet, GCS, workers and haproxy run in sessions of their own and outlive their parent, so
        as run_real_peers.sh's stop_server: SIGTERM to the driver (it shuts Ray down), then to its group,
        then to whatever is left of its session and descendants, by pid; SIGKILL what survives that."""
        pid = self.pid
        started = session_tree(pid)  # before the driver exits: its orphans lose the parent that links them
        signal_each([pid], signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        time.sleep(1)
        left = signal_each(started | session_tree(pid), signal.SIGTERM)
        if left:
            time.sleep(2)
            signal_each(left & processes().keys(), signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 30  # SIGKILL is not instant: a replica frees its GiB first
        while (left & processes().keys() or listening(self.port)) and time.monotonic() < deadline:
            time.sleep(0.5)
        self._log.close()

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each replica (MiB)."""
        def replica(pid: int) -> bool:  # Ray names its workers' processes: ray::ServeReplica:app:Class
            try:
                return b"ServeReplica" in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return False
        return _rss(p for p in sorted(session_tree(self.pid)) if replica(p))
