"""Real servers for tests: a gunicorn process tree on a free port, with its log kept for assertions.

Starting, waiting for and stopping the process group is bench/harness.py's, shared with the benchmarks."""
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from bench.harness import ROOT, ProcessGroup, children, free_port, http_ok, ready_pids, serve_env

__all__ = ["ROOT", "Gunicorn", "Stack", "free_port", "running"]


def _env(settings: dict, **variables: str) -> dict[str, str]:
    """This process's environment with `variables` and the SERVE_* of `settings` on top."""
    settings.setdefault("drain_seconds", 0)  # tests that stop a server under load set their own drain
    return {**os.environ, **variables, "PYTHONUNBUFFERED": "1", **serve_env(settings)}


class Gunicorn(ProcessGroup):
    """`gunicorn -c gunicorn.conf.py wsgi:app` with SERVE_* settings, as `make serve` runs it."""

    GRACE = 30

    def __init__(self, tmp: Path, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = tmp / f"run-{self.port}"
        env = _env(settings, SERVE_BIND=f"127.0.0.1:{self.port}", SERVE_RUN_DIR=str(self.run_dir))
        super().__init__([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                         tmp / f"gunicorn-{self.port}.log", env, name="gunicorn")

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.wait(lambda: http_ok(self.url + "/ready"), timeout)

    def wait_all_workers_ready(self, workers: int, timeout: float = 90.0) -> None:
        """Every worker has written its readiness marker (each loads its own model copy)."""
        self.wait(lambda: len(ready_pids(self.run_dir)) >= workers, timeout,
                  what="not every worker loaded its model")

    def worker_pids(self) -> set[int]:
        return set(children(self.pid))


class Stack(ProcessGroup):
    """`api/process/stack.py`: nginx on a public port in front of gunicorn's unix socket, as `make serve`.
    Stopped as an operator stops it: SIGTERM to the supervisor, which drains, then stops nginx and gunicorn."""

    GRACE = 60
    TERM = "leader"

    def __init__(self, tmp: Path, **settings):
        self.port, self.status_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status_url = f"http://127.0.0.1:{self.status_port}"
        self.run_dir = tmp / f"stack-{self.port}"
        self.access_log = tmp / f"nginx-{self.port}.log"
        env = _env(settings, SERVE_PORT=str(self.port), SERVE_STATUS_PORT=str(self.status_port),
                   SERVE_RUN_DIR=str(self.run_dir))
        env.pop("SERVE_BIND", None)
        super().__init__([sys.executable, "-m", "api.cli", "serve", "--access-log", str(self.access_log)],
                         tmp / f"stack-{self.port}.log", env, name="stack")

    def wait_ready(self, workers: int, timeout: float = 90.0) -> None:
        self.wait(lambda: len(self.ready_pids()) >= workers and http_ok(self.url + "/ready"), timeout)

    @property
    def gunicorn_pid(self) -> int:
        return int((self.run_dir / "gunicorn.pid").read_text())

    def worker_pids(self) -> set[int]:
        return set(children(self.gunicorn_pid))

    def ready_pids(self) -> set[int]:
        return ready_pids(self.run_dir)

    def access_lines(self) -> list[dict]:
        import json
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]


@contextmanager
def running(stack: "Stack", workers: int = 2):
    """A stack for a fixture: ready with every worker warm, stopped whatever the tests did to it."""
    try:
        stack.wait_ready(workers=workers)
        yield stack
    finally:
        stack.stop()
