"""JSON log lines for gunicorn and the app, one object per line, and the app's one access line per request.

Every line has `time`, `level`, `logger`, `pid` and `message`; a trace goes in `traceback` (the error
log only: clients get `{"error": ...}`). Access lines add the fields listed in docs/operations.md, among
them `request_id`, the id nginx wrote in its own access log (X-Request-ID), so the two lines join.
"""
import logging
import time
from datetime import datetime, timezone

import orjson
from flask import Flask, g, request

access_log = logging.getLogger("api.access")


class JsonFormatter(logging.Formatter):
    """gunicorn's logconfig_dict names it (`"()": "api.logs.JsonFormatter"`) for every handler."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "pid": record.process,
                "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def init_app(app: Flask) -> None:
    """Time every request, count it, and write its access line: the only per-request work added."""
    from .metrics import RequestMetrics  # not at the top: gunicorn's master loads the formatter early

    metrics = RequestMetrics()

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def account(response):
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"  # templates only: bounded label values
        metrics.observe(route, request.method, response.status_code, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("request", extra={"fields": _access_fields(route, response.status_code, seconds)})
        return response


def _access_fields(route: str, status: int, seconds: float) -> dict:
    call = g.get("call")
    return {"request_id": request.headers.get("X-Request-ID", ""), "method": request.method,
            "route": route, "path": request.path, "status": status, "duration_ms": round(seconds * 1e3, 3),
            "model": getattr(call, "model", None), "version": getattr(call, "version", None),
            "instances": getattr(call, "instances", None)}
