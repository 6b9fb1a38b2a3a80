"""Servers under test, one at a time: our stack as `make serve` runs it, and the peers' processes."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """A process group started in its own session, stopped with SIGTERM then SIGKILL."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, url: str, log: Path):
        self.url = url
        self.log = log
        self.started = time.monotonic()
        self._log = open(log, "wb")
        self.process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.cold_start_s: float | None = None

    def wait(self, ready, timeout: float = 300) -> float:
        """Seconds from process start until `ready()` holds: the cold start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url}: server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if ready():
                    self.cold_start_s = time.monotonic() - self.started
                    return self.cold_start_s
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.url}: not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class OurStack(Server):
    """nginx + gunicorn + the batcher: scripts/run_stack.py, the same as `make serve`."""

    def __init__(self, store: Path, model: str, logs: Path, **settings):
        port = free_port()
        self.run_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
        env = {"SERVE_MODEL_STORE": str(store), "SERVE_MODEL_NAME": model, "SERVE_PORT": str(port),
               "SERVE_STATUS_PORT": str(free_port()), "SERVE_RUN_DIR": str(self.run_dir),
               "SERVE_LOG_LEVEL": "warning", "SERVE_MODEL_VERSIONS": "latest",
               # one load generator is one client address: nginx's per-client limits would measure
               # themselves, not the server
               "SERVE_CLIENT_RATE": "1000000", "SERVE_CLIENT_BURST": "1000000",
               "SERVE_CLIENT_CONNECTIONS": "65535",
               **{f"SERVE_{k.upper()}": str(v) for k, v in settings.items()}}
        self.settings = settings
        super().__init__([sys.executable, "scripts/run_stack.py"], env, ROOT,
                         f"http://127.0.0.1:{port}/predict", logs / f"ours-{model}-{port}.log")
        self.workers = int(settings.get("workers", 2))

    def ready(self) -> bool:
        markers = list((self.run_dir / "ready").glob("*")) if (self.run_dir / "ready").exists() else []
        return len(markers) >= self.workers and requests.get(
            self.url.replace("/predict", "/ready"), timeout=2).status_code == 200

    def worker_rss_mib(self) -> list[float]:
        masters = [p for p in children(self.process.pid) if "gunicorn" in Path(f"/proc/{p}/cmdline").read_text()]
        return [rss_mib(w) for m in masters for w in children(m)]


class Peer(Server):
    """A peer from ../shared/peers under gunicorn, as anchors.md runs it."""

    def __init__(self, peers: Path, app: str, logs: Path, args: list[str], env: dict[str, str] | None = None):
        port = free_port()
        self.app = app
        super().__init__([sys.executable, "-m", "gunicorn", *args, "-b", f"127.0.0.1:{port}", app],
                         {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(peers), **(env or {})}, peers,
                         f"http://127.0.0.1:{port}/predict", logs / f"peer-{app.split(':')[0]}-{port}.log")

    def ready_with(self, body: bytes):
        def ready() -> bool:
            return requests.post(self.url, data=body, headers={"Content-Type": "application/json"},
                                 timeout=30).status_code == 200
        return ready

    def worker_rss_mib(self) -> list[float]:
        return [rss_mib(w) for w in children(self.process.pid)]
