"""The app's one access line per request, and its request metrics: the only per-request work the app adds.

Access lines carry the fields listed in docs/operations.md, among them `request_id`, the id nginx wrote
in its own access log (X-Request-ID), so the two lines join.
"""
import atexit
import logging
import os
import time
from datetime import datetime, timezone

import orjson

from api.batching import in_gevent_worker
from api.logs import JsonFormatter
from api.metrics import RequestMetrics

access_log = logging.getLogger("api.access")


class AccessLine:
    """Writes the one access line per request as JsonFormatter would, straight to the stream of the
    access logger's handler: a LogRecord, its formatting and the handler's lock cost more than the rest
    of the line (measured under load: 6.5% of a worker's CPU through `logging`, less than 2% here).
    Falls back to `logging` when the logger's handler is not a plain stream (tests, other configs).

    In a gevent worker the lines written in one turn of the event loop go out in one write, at the end
    of that turn (the loop's callback, run before it next waits): one write per batch of requests rather
    than one per request (a write and a flush per line were 3% of a worker's CPU at 32 connections,
    py-spy, docs/performance.md). A line waits no longer than its request's answer takes to be sent.
    """

    def __init__(self):
        handlers = access_log.handlers
        plain = len(handlers) == 1 and type(handlers[0]) is logging.StreamHandler and \
            isinstance(handlers[0].formatter, JsonFormatter) and not access_log.filters
        self.stream = handlers[0].stream if plain else None
        self.pid = os.getpid()
        self.loop = _event_loop()
        self.pending: list[str] = []
        if self.loop is not None:
            atexit.register(self.flush)  # a worker that exits between a line and its loop's turn

    def write(self, fields: dict) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        if self.stream is None:
            access_log.info("request", extra={"fields": fields})
            return
        now = time.time()
        line = {"time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
                "level": "INFO", "logger": access_log.name, "pid": self.pid, "message": "request", **fields}
        text = orjson.dumps(line, default=str).decode() + "\n"
        if self.loop is None:
            self._emit(text)
            return
        if not self.pending:
            self.loop.run_callback(self.flush)
        self.pending.append(text)

    def flush(self) -> None:
        """Write the lines held for this turn of the event loop (none: nothing)."""
        if self.pending:
            text, self.pending = "".join(self.pending), []
            self._emit(text)

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full stream must not fail the request, as in logging
            pass


def _event_loop():
    """gevent's loop where this process is a gevent worker, else None."""
    if not in_gevent_worker():
        return None
    import gevent
    return gevent.get_hub().loop


def init_app(app) -> None:
    """Time every request, count it, and write its access line: the only per-request work added."""
    from flask import g, request

    metrics = RequestMetrics()
    lines: list[AccessLine] = []  # made at the first request: in the worker, once logging is configured

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def account(response):
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"  # templates only: bounded label values
        metrics.observe(route, request.method, response.status_code, seconds)
        if not lines:
            lines.append(AccessLine())
        lines[0].write(access_fields(request.headers.get("X-Request-ID", ""), request.method, route,
                                     request.path, response.status_code, seconds, g.get("call")))
        return response


def access_fields(request_id: str, method: str, route: str, path: str, status: int, seconds: float,
                  call=None) -> dict:
    """One access line's fields (docs/operations.md); `call` the data plane's Call, for an inference."""
    return {"request_id": request_id, "method": method, "route": route, "path": path, "status": status,
            "duration_ms": round(seconds * 1e3, 3), "model": getattr(call, "model", None),
            "version": getattr(call, "version", None), "instances": getattr(call, "instances", None)}
