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


def processes() -> dict[int, tuple[int, int]]:
    """Every running process: pid -> (parent pid, session id). Zombies (dead, not yet reaped) are not."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the name in parentheses may hold spaces: the fields start after the last ')'
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def tree(root: int) -> set[int]:
    """The pids of root's session and of every descendant of either, in sessions of their own included."""
    table = processes()
    keep = {root} | {pid for pid, (_, session) in table.items() if session == root}
    while more := {pid for pid, (parent, _) in table.items() if parent in keep} - keep:
        keep |= more
    return keep & table.keys()


def signal_each(pids, sig) -> set[int]:
    """Sends `sig` to each pid; the pids that were still there."""
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, sig)
            alive.add(pid)
        except ProcessLookupError:
            pass
    return alive


def listening(port: int) -> bool:
    """Whether a socket listens on TCP `port`, any address."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


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

    def ready_with(self, body: bytes):
        """A readiness check: a POST of `body` to the server's URL answers 200."""
        def ready() -> bool:
            return requests.post(self.url, data=body, headers={"Content-Type": "application/json"},
                                 timeout=30).status_code == 200
        return ready

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

    def worker_rss_mib(self) -> list[float]:
        return [rss_mib(w) for w in children(self.process.pid)]


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
        pid = self.process.pid
        started = tree(pid)  # before the driver exits: its orphans lose the parent that links them
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
        left = signal_each(started | tree(pid), signal.SIGTERM)
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
        return [rss_mib(p) for p in sorted(tree(self.process.pid)) if replica(p)]
