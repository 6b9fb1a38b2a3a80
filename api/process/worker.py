"""Code a gunicorn worker runs for its own life cycle: counting requests towards its recycling, sending
each response in one write, and keeping TensorFlow's native start-up output off the console. Imports
neither Flask nor TensorFlow (gunicorn.conf.py's hooks)."""
import itertools
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

from api.process.markers import recycle_marker


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



def settle_config(cfg) -> None:
    """Make every gunicorn setting a plain attribute of this worker's `cfg`, read once.

    gunicorn's Config answers `cfg.<setting>` through `__getattr__` and the setting's `get()`, and its
    parser, request and response read a dozen settings a request (2% of a gevent worker's CPU at 32
    connections, py-spy, docs/performance.md). A worker never changes its settings: a reload forks new
    workers with the master's new ones. Values land in the instance's `__dict__`, which plain attribute
    lookup reads before `__getattr__` (Config's `__setattr__` refuses setting names)."""
    for name, setting in cfg.settings.items():
        if not hasattr(type(cfg), name):  # Config's own properties (worker_class, sendfile, ...) stay
            cfg.__dict__[name] = setting.get()


def cached_date_header() -> None:
    """gunicorn formats the `Date` header of every response with email.utils (1.4% of a worker's CPU at
    32 connections); its value changes once a second (RFC 9110 section 6.6.1: second resolution), so
    this worker formats it once a second."""
    from gunicorn import util

    original, last = util.http_date, [-1, ""]

    def http_date(timestamp=None):
        if timestamp is not None:
            return original(timestamp)
        now = int(time.time())
        if now != last[0]:
            last[:] = [now, original(now)]
        return last[1]

    util.http_date = http_date


def native_stderr_to(path: Path) -> None:
    """Send what native libraries write to file descriptor 2 (TensorFlow's and absl's C++ start-up lines,
    `failed call to cuInit` among them on a CPU machine) to `path`, appended; Python's sys.stderr, and so
    every log handler that wrote to it, keeps the original stream.

    TF_CPP_MIN_LOG_LEVEL does not reach absl's lines written before absl::InitializeLog() (TensorFlow
    2.21), so the file descriptor itself is what can be moved. The file keeps them, and what a native
    crash prints, for whoever looks (SERVE_TF_LOG_LEVEL below 3 leaves them on the console).
    """
    original = sys.stderr
    console = os.fdopen(os.dup(2), "w", buffering=1, encoding=getattr(original, "encoding", None) or "utf-8",
                        errors="backslashreplace")
    path.parent.mkdir(parents=True, exist_ok=True)
    native = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    original.flush()
    os.dup2(native, 2)
    os.close(native)
    sys.stderr = console
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for handler in {handler for logger in loggers for handler in logger.handlers}:
        if isinstance(handler, logging.StreamHandler) and handler.stream is original:
            handler.setStream(console)
