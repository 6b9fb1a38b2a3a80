"""gunicorn worker life cycle, run in the master: who may take traffic, reloads and recycling that never
stall, and a stop that drains.

Nothing here imports TensorFlow. Workers leave a readiness marker (`<run_dir>/ready/<pid>`) once
their model is warm; the master reads them to decide three things:
- whether a new worker may accept connections before it is warm (only at a cold start, when no
  sibling can serve), see `accepts_before_ready`;
- when an old worker may stop during a reload, see `rolling_restart`;
- when a worker past its request limit may stop, see `Recycler` and `recycle_requested`.
A stop first turns readiness off for the whole server (`<run_dir>/draining`), see `drain_then_stop`.
"""
import itertools
import os
import queue
import random
import signal
import time
from pathlib import Path


def ready_marker(run_dir: Path, pid: int) -> Path:
    return run_dir / "ready" / str(pid)


def clear_markers(run_dir: Path) -> None:
    """Forget readiness, recycle requests and draining left by an earlier run: those pids are gone."""
    for folder in (ready_marker(run_dir, 0).parent, recycle_marker(run_dir, 0).parent):
        folder.mkdir(parents=True, exist_ok=True)
        for marker in folder.iterdir():
            marker.unlink(missing_ok=True)
    stop_draining(run_dir)


def is_ready(run_dir: Path, pid: int) -> bool:
    return ready_marker(run_dir, pid).exists()


def accepts_before_ready(server, run_dir: Path) -> bool:
    """At a cold start workers accept at once (and answer 503 while loading); a replacement for a
    worker that died or is being reloaded has warm siblings, so it loads first and accepts after."""
    return not any(is_ready(run_dir, pid) for pid in server.WORKERS)


def draining_marker(run_dir: Path) -> Path:
    return run_dir / "draining"


def start_draining(run_dir: Path) -> None:
    """From now on every worker's /ready answers 503: the server is stopping."""
    draining_marker(run_dir).write_text(f"{time.time():.3f}\n")


def is_draining(run_dir: Path) -> bool:
    return draining_marker(run_dir).exists()


def stop_draining(run_dir: Path) -> None:
    draining_marker(run_dir).unlink(missing_ok=True)


def drain_then_stop(server, run_dir: Path, seconds: float) -> None:
    """SIGTERM: /ready turns 503 at once, the workers go on serving for `seconds` so that load balancers
    and health checks see it and stop sending, then gunicorn's graceful stop (in-flight requests finish).

    gunicorn's own TERM closes the listening socket at once, resetting every connection still in its
    backlog. When the stack's runner (scripts/run_stack.py) has already drained, there is no second wait.
    """
    if not is_draining(run_dir):
        start_draining(run_dir)
        server.log.info("draining: /ready answers 503, serving on for %g s before stopping", seconds)
        _serve_for(server, seconds)
    raise StopIteration  # gunicorn's main loop halts: a graceful stop of every worker


def _serve_for(server, seconds: float) -> None:
    """Keep the master's duties (reap, replace, time out workers) for `seconds`; another stop signal
    (a second TERM, INT or QUIT) ends the wait and is handled by gunicorn as usual."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sig = server.SIG_QUEUE.get(timeout=0.1)
        except queue.Empty:
            sig = None
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            server.SIG_QUEUE.put_nowait(sig)
            return
        server.reap_workers()
        server.murder_workers()
        server.manage_workers()


def rolling_restart(server, run_dir: Path, timeout: float) -> None:
    """SIGHUP: replace the workers one at a time; each old one stops only when its replacement is warm.

    gunicorn's own HUP starts every new worker and stops every old one at once, leaving no warm worker
    for the length of a model load. If a replacement fails to become ready (a bad model version, a
    crash), the restart stops there and the old workers keep serving.
    """
    old = sorted(server.WORKERS, key=lambda pid: server.WORKERS[pid].age)
    server.log.info("rolling restart of %d workers: each stops once its replacement is warm", len(old))
    for pid in old:
        if pid in server.WORKERS and not _replace(server, run_dir, pid, timeout):
            server.log.error("rolling restart stopped: the remaining old workers keep serving")
            return
    server.log.info("rolling restart done")


def _replace(server, run_dir: Path, pid: int, timeout: float) -> bool:
    """Start a successor to worker `pid` (in its slot: its GPU, its socket) and stop `pid` only once the
    successor is warm."""
    server.replacing = pid  # read by gunicorn.conf.py's pre_fork
    try:
        new = server.spawn_worker()
    finally:
        server.replacing = None
    if not _wait_ready(server, run_dir, new, timeout):
        server.log.error("worker %s was not ready within %ss: worker %s keeps serving", new, timeout, pid)
        server.kill_worker(new, signal.SIGKILL)
        return False
    server.log.info("worker %s is warm: stopping worker %s", new, pid)
    # gunicorn trims surplus workers oldest first; make the leaving one the oldest, so that the trim
    # (until it has exited) can only pick it and never a sibling that has no successor.
    server.WORKERS[pid].age = min(worker.age for worker in server.WORKERS.values()) - 1
    server.kill_worker(pid, signal.SIGTERM)
    return True


def recycle_marker(run_dir: Path, pid: int) -> Path:
    return run_dir / "recycle" / str(pid)


class Recycler:
    """In a worker: counts its requests and, past its limit (plus jitter, so that siblings started
    together do not recycle together), asks the master for a warm successor, once.

    gunicorn's own max_requests makes the worker exit at once, and its replacement then loads a model
    for seconds; with jitter too small or unlucky, every worker is loading at the same time.
    """

    def __init__(self, run_dir: Path, limit: int, jitter: int):
        self.run_dir = run_dir
        self.limit = limit + random.randint(0, jitter) if limit else 0
        self._served = itertools.count(1)  # next() is atomic under the GIL: request threads share it
        self.asked = False

    def served_one(self) -> None:
        if self.limit and next(self._served) >= self.limit and not self.asked:
            self.asked = True
            marker = recycle_marker(self.run_dir, os.getpid())
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{self.limit}\n")
            os.kill(os.getppid(), signal.SIGTTIN)


def recycle_requested(server, run_dir: Path, timeout: float) -> None:
    """SIGTTIN, sent by a worker past its request limit: replace every worker that asked, each stopping
    once its successor is warm. (gunicorn's TTIN would add a worker; the count is a setting here.)"""
    folder = recycle_marker(run_dir, 0).parent
    asked = sorted(int(marker.name) for marker in folder.glob("*")) if folder.exists() else []
    for pid in asked:
        recycle_marker(run_dir, pid).unlink(missing_ok=True)
        if pid in server.WORKERS:
            server.log.info("worker %s reached its request limit: replacing it", pid)
            _replace(server, run_dir, pid, timeout)


def _wait_ready(server, run_dir: Path, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_ready(run_dir, pid):
            return True
        server.reap_workers()  # the master loop is here: keep reaping, and notice a crashed newcomer
        if pid not in server.WORKERS:
            return False
        time.sleep(0.05)
    return False


def mark_ready(run_dir: Path) -> None:
    marker = ready_marker(run_dir, os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{time.time():.3f}\n")


def unmark(run_dir: Path, pid: int | None = None) -> None:
    ready_marker(run_dir, pid or os.getpid()).unlink(missing_ok=True)


def forget(run_dir: Path, pid: int) -> None:
    """A worker exited: it is neither ready nor waiting to be recycled."""
    unmark(run_dir, pid)
    recycle_marker(run_dir, pid).unlink(missing_ok=True)


class _Capture:
    """A stand-in socket that keeps what gunicorn writes to it."""

    def __init__(self):
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


def one_write_responses() -> None:
    """Make gunicorn send a response's headers and body in one write, in this worker.

    gunicorn writes the headers, then the body. A worker killed between the two leaves nginx holding
    headers it has already passed on, so it cannot retry the request elsewhere and the client gets a
    truncated answer (seen under SIGKILL tests). One write of a response that fits the socket buffer is
    all or nothing: nginx either gets the whole answer or none, and then retries.
    """
    from gunicorn import util
    from gunicorn.http import wsgi

    class OneWriteResponse(wsgi.Response):
        _pending = b""

        def send_headers(self):
            if self.headers_sent:
                return
            real, self.sock = self.sock, _Capture()
            try:
                super().send_headers()
            finally:
                self._pending, self.sock = self.sock.data, real

        def _emit_body(self, data):
            pending, self._pending = self._pending, b""
            if pending and not self.chunked:
                util.write(self.sock, pending + data)
                return
            self._flush(pending)
            super()._emit_body(data)

        def close(self):
            self.send_headers()  # a response with no body item still has headers to send
            self._flush(self._pending)
            self._pending = b""
            super().close()

        def _flush(self, pending: bytes) -> None:
            if pending:
                util.write(self.sock, pending)

    wsgi.Response = OneWriteResponse
