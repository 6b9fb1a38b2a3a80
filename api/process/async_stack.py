"""`keras-serving serve-async` (`make serve-async`): the stack of `serve`, plus a local redis-server and
SERVE_QUEUE_WORKERS job workers (`keras-serving worker`), as one unit.

    keras-serving serve-async [--access-log PATH]

SERVE_QUEUE_BACKEND defaults to `redis` here. With a local SERVE_QUEUE_REDIS_URL (127.0.0.1 or localhost)
redis-server runs under `<run_dir>/redis` (append-only file synced on every write, no eviction:
api/process/redis.py); with another URL, or SQS, only the workers run. The workers write their metrics
beside gunicorn's, so the stack's `/metrics` sums them too. A worker that dies is started again (at most
once per RESTART_EVERY_S per slot), as gunicorn does for its own.

Stopping (Ctrl-C, SIGTERM) drains the HTTP side as `serve` does, then the workers (SIGTERM: each finishes,
writes and acknowledges the jobs it holds), then Redis (SIGTERM: it syncs its file and exits). Killed
outright, the kernel signals each child (the parent-death signal): workers drain, Redis stops.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

from api.process import redis
from api.process import stack
from api.settings import Settings

RESTART_EVERY_S = 5.0
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class JobWorkers:
    """The companions of the stack (api/process/stack.serve's `companions`)."""

    def __init__(self):
        self.redis: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = []
        self.started: list[float] = []

    def start(self, settings: Settings) -> None:
        self.settings = settings
        # The workers' samples go where gunicorn's do: the stack's /metrics reads them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
        if settings.queue_backend == "redis" and urlparse(settings.queue_redis_url).hostname in LOCAL_HOSTS:
            self._start_redis()
        self.workers = [self._worker(slot) for slot in range(settings.queue_workers)]
        self.started = [time.monotonic()] * len(self.workers)
        print(f"asynchronous jobs: {settings.queue_workers} worker(s) on {settings.queue_backend}"
              f"{' (local redis-server, ' + settings.queue_redis_url + ')' if self.redis else ''}", flush=True)

    def poll(self) -> None:
        """Start again what died: Redis at once (workers back off meanwhile), a worker at most every
        RESTART_EVERY_S (a model that cannot load must not spin)."""
        if self.redis is not None and self.redis.poll() is not None:
            print(f"redis-server exited {self.redis.returncode}: starting it again", file=sys.stderr, flush=True)
            self._start_redis()
        for slot, worker in enumerate(self.workers):
            if worker.poll() is not None and time.monotonic() - self.started[slot] > RESTART_EVERY_S:
                print(f"worker {slot} exited {worker.returncode}: starting it again", file=sys.stderr, flush=True)
                self.workers[slot], self.started[slot] = self._worker(slot), time.monotonic()

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        drain = self.settings.queue_max_job_seconds + 10  # a worker finishes what it holds
        for worker in self.workers:
            stack.stop(worker, signal.SIGTERM, drain)
        if self.redis is not None:
            stack.stop(self.redis, signal.SIGTERM, 30)

    def _worker(self, slot: int) -> subprocess.Popen:
        return stack.start([sys.executable, "-m", "api.cli", "worker", "--consumer", f"{socket.gethostname()}-{slot}"],
                           signal.SIGTERM)

    def _start_redis(self) -> None:
        port = redis.port_of(self.settings.queue_redis_url)
        self.redis = stack.start(redis.command(self.settings.run_dir.resolve() / "redis", port), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _accepts(port) and self.redis.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main(argv=None) -> int:
    os.environ.setdefault("SERVE_QUEUE_BACKEND", "redis")  # before any Settings(): gunicorn inherits it too
    if Settings().queue_backend == "redis":
        redis.binary()  # a missing redis-server says how to install it, before anything starts
    return stack.main(argv, JobWorkers(), description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
