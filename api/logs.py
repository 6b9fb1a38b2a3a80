"""JSON log lines for gunicorn and the app, one object per line (the master's and the workers' formatter).

Every line has `time`, `level`, `logger`, `pid` and `message`; a trace goes in `traceback` (the error
log only: clients get `{"error": ...}`). The app's access line is written by api/http/access.py.
"""
import logging
from datetime import datetime, timezone

import orjson


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
