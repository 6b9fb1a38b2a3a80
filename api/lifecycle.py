"""gunicorn worker life cycle, run in the master: who may take traffic, and reloads that never stall.

Nothing here imports TensorFlow. Workers leave a readiness marker (`<run_dir>/ready/<pid>`) once
their model is warm; the master reads them to decide two things:
- whether a new worker may accept connections before it is warm (only at a cold start, when no
  sibling can serve), see `accepts_before_ready`;
- when an old worker may stop during a reload, see `rolling_restart`.
"""
import os
import signal
import time
from pathlib import Path


def ready_marker(run_dir: Path, pid: int) -> Path:
    return run_dir / "ready" / str(pid)


def clear_markers(run_dir: Path) -> None:
    folder = ready_marker(run_dir, 0).parent
    folder.mkdir(parents=True, exist_ok=True)
    for marker in folder.iterdir():
        marker.unlink(missing_ok=True)


def is_ready(run_dir: Path, pid: int) -> bool:
    return ready_marker(run_dir, pid).exists()


def accepts_before_ready(server, run_dir: Path) -> bool:
    """At a cold start workers accept at once (and answer 503 while loading); a replacement for a
    worker that died or is being reloaded has warm siblings, so it loads first and accepts after."""
    return not any(is_ready(run_dir, pid) for pid in server.WORKERS)


def rolling_restart(server, run_dir: Path, timeout: float) -> None:
    """SIGHUP: replace the workers one at a time; each old one stops only when its replacement is warm.

    gunicorn's own HUP starts every new worker and stops every old one at once, leaving no warm worker
    for the length of a model load. If a replacement fails to become ready (a bad model version, a
    crash), the restart stops there and the old workers keep serving.
    """
    old = sorted(server.WORKERS, key=lambda pid: server.WORKERS[pid].age)
    server.log.info("rolling restart of %d workers: each stops once its replacement is warm", len(old))
    for pid in old:
        if pid not in server.WORKERS:
            continue
        new = server.spawn_worker()
        if not _wait_ready(server, run_dir, new, timeout):
            server.log.error("worker %s was not ready within %ss: rolling restart stopped, "
                             "the remaining old workers keep serving", new, timeout)
            server.kill_worker(new, signal.SIGKILL)
            return
        server.log.info("worker %s is warm: stopping worker %s", new, pid)
        server.kill_worker(pid, signal.SIGTERM)
    server.log.info("rolling restart done")


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
