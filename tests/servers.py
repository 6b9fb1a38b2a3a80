"""Real servers for tests: a gunicorn process tree on a free port, with its log kept for assertions."""
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py wsgi:app` with SERVE_* settings, as `make serve` runs it."""

    def __init__(self, tmp: Path, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        self.run_dir = tmp / f"run-{self.port}"
        env = {**os.environ, "SERVE_BIND": f"127.0.0.1:{self.port}", "SERVE_RUN_DIR": str(self.run_dir),
               "PYTHONUNBUFFERED": "1"}
        settings.setdefault("drain_seconds", 0)  # tests that stop a server under load set their own drain
        env.update({f"SERVE_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn not ready in {timeout}s:\n{self.log()}")

    def wait_all_workers_ready(self, workers: int, timeout: float = 90.0) -> None:
        """Every worker has written its readiness marker (each loads its own model copy)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(list((self.run_dir / "ready").glob("*"))) >= workers:
                return
            time.sleep(0.1)
        raise TimeoutError(f"not every worker loaded its model:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class Stack:
    """`scripts/run_stack.py`: nginx on a public port in front of gunicorn's unix socket, as `make serve`."""

    def __init__(self, tmp: Path, **settings):
        self.port, self.status_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status_url = f"http://127.0.0.1:{self.status_port}"
        self.run_dir = tmp / f"stack-{self.port}"
        self.access_log = tmp / f"nginx-{self.port}.log"
        self.log_path = tmp / f"stack-{self.port}.log"
        env = {**os.environ, "SERVE_PORT": str(self.port), "SERVE_STATUS_PORT": str(self.status_port),
               "SERVE_RUN_DIR": str(self.run_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("SERVE_BIND", None)
        settings.setdefault("drain_seconds", 0)  # tests that stop a server under load set their own drain
        env.update({f"SERVE_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "scripts/run_stack.py", "--access-log", str(self.access_log)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, workers: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"stack exited with {self.process.returncode}:\n{self.log()}")
            if len(list((self.run_dir / "ready").glob("*"))) >= workers:
                try:
                    if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"stack not ready in {timeout}s:\n{self.log()}")

    @property
    def gunicorn_pid(self) -> int:
        return int((self.run_dir / "gunicorn.pid").read_text())

    def worker_pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.gunicorn_pid)], capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    def ready_pids(self) -> set[int]:
        return {int(p.name) for p in (self.run_dir / "ready").glob("*")}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_lines(self) -> list[dict]:
        import json
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextmanager
def running(stack: "Stack", workers: int = 2):
    """A stack for a fixture: ready with every worker warm, stopped whatever the tests did to it."""
    try:
        stack.wait_ready(workers=workers)
        yield stack
    finally:
        stack.stop()
