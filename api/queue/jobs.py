"""What a job is on the wire and at rest: the versioned message a producer writes to the broker, and the
record (state and answer) that `GET /v1/jobs/<id>` reads. Pure Python: no broker, no numpy.

The message (format 1), a JSON object; any producer (an ETL job) may write it to the broker directly:

    {"v": 1, "id": "<32 hex>", "model": "digits", "version": null | 3,
     "submitted": 1767225600.123, "expires": 1767229200.123,
     "body": "<the :predict request body, JSON text>"}

`submitted` and `expires` are seconds since the epoch (UTC); a job not started by `expires` is expired,
never run. `body` is exactly what `POST /v1/models/<model>[/versions/<version>]:predict` takes.
Readers refuse another `v`; fields they do not know are ignored, so adding one is not a new version.
"""
import re
import secrets
import time
from dataclasses import dataclass, replace

import orjson

FORMAT = 1
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
STATES = ("queued", "running", "succeeded", "failed", "expired")
TERMINAL = frozenset({"succeeded", "failed", "expired"})


class BadMessage(ValueError):
    """A message no worker can run (not JSON, another format version, a field missing or mistyped)."""


def new_job_id(now: float | None = None) -> str:
    """32 hex digits: the submit time in milliseconds (12 digits), then 80 random bits. The time in the id
    lets a fetch tell an id whose record has expired (410) from one never issued recently (404)."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{secrets.token_hex(10)}"


def issued_at(job_id: str) -> float:
    """When `job_id` was made (seconds since the epoch), read from the id itself."""
    return int(job_id[:12], 16) / 1000


@dataclass(frozen=True)
class Job:
    """One job as the broker carries it. `body`: the TF Serving request, bytes of JSON text; `version`:
    None for the newest version the worker serves; times in seconds since the epoch."""
    id: str
    model: str
    version: int | None
    body: bytes
    submitted: float
    expires: float

    @classmethod
    def create(cls, model: str, version: int | None, body: bytes, ttl: float, now: float | None = None) -> "Job":
        now = time.time() if now is None else now
        return cls(new_job_id(now), model, version, body, now, now + ttl)

    def encode(self) -> bytes:
        return orjson.dumps({"v": FORMAT, "id": self.id, "model": self.model, "version": self.version,
                             "submitted": self.submitted, "expires": self.expires,
                             "body": self.body.decode()})

    @classmethod
    def decode(cls, data: bytes | str) -> "Job":
        """The job in a message; BadMessage naming what is wrong."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadMessage(f"message is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != FORMAT:
            raise BadMessage(f"message format {doc.get('v') if isinstance(doc, dict) else None!r} is not "
                             f"{FORMAT}: upgrade the worker or write format {FORMAT}")
        try:
            job = cls(doc["id"], doc["model"], doc["version"], doc["body"].encode(),
                      float(doc["submitted"]), float(doc["expires"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadMessage(f"message field missing or mistyped: {exc}") from None
        if not JOB_ID.match(job.id) or not isinstance(job.model, str) or \
                not (job.version is None or (isinstance(job.version, int) and job.version >= 0)):
            raise BadMessage(f"message has a bad id, model or version: {job.id!r}, {job.model!r}, {job.version!r}")
        return job


@dataclass(frozen=True)
class Record:
    """What is known of a job: its state (STATES), times (seconds since the epoch; 0: not yet), how many
    times it was delivered, and when terminal, the HTTP status and JSON answer `:predict` gave or would
    give (`answer`: the predict response document, or `{"error": "..."}`, as bytes of JSON)."""
    id: str
    model: str
    version: int | None
    state: str
    submitted: float
    expires: float
    started: float = 0.0
    finished: float = 0.0
    attempts: int = 0
    status: int = 0
    answer: bytes = b""

    @classmethod
    def queued(cls, job: Job) -> "Record":
        return cls(job.id, job.model, job.version, "queued", job.submitted, job.expires)

    def finish(self, state: str, status: int, answer: bytes, now: float | None = None) -> "Record":
        return replace(self, state=state, status=status, answer=answer, finished=time.time() if now is None else now)

    def as_fields(self) -> dict[str, str | bytes]:
        """Flat string fields (a Redis hash, an S3 object's JSON)."""
        return {"id": self.id, "model": self.model, "version": "" if self.version is None else str(self.version),
                "state": self.state, "submitted": repr(self.submitted), "expires": repr(self.expires),
                "started": repr(self.started), "finished": repr(self.finished), "attempts": str(self.attempts),
                "status": str(self.status), "answer": self.answer}

    @classmethod
    def from_fields(cls, fields: dict) -> "Record":
        text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

        def s(name: str) -> str:
            value = text.get(name, "")
            return value.decode() if isinstance(value, bytes) else str(value)

        answer = text.get("answer", b"")
        return cls(s("id"), s("model"), int(s("version")) if s("version") else None, s("state"),
                   float(s("submitted") or 0), float(s("expires") or 0), float(s("started") or 0),
                   float(s("finished") or 0), int(s("attempts") or 0), int(s("status") or 0),
                   answer.encode() if isinstance(answer, str) else answer)

    def document(self, now: float | None = None) -> bytes:
        """`GET /v1/jobs/<id>`'s body. A queued job past its TTL reads `expired` even before a worker marks
        it (no worker may ever see it: the broker lost it, or nobody serves its model)."""
        now = time.time() if now is None else now
        state = self.state
        if state == "queued" and now > self.expires:
            state = "expired"
        head = {"job_id": self.id, "status": state, "model": self.model, "version": self.version,
                "submitted_at": _iso(self.submitted), "started_at": _iso(self.started),
                "finished_at": _iso(self.finished), "attempts": self.attempts}
        if state == "succeeded":
            return orjson.dumps(head)[:-1] + b',"result":' + self.answer + b"}"
        if state in ("failed", "expired"):
            answer = self.answer or orjson.dumps({"error": f"job expired: not started within its time to live "
                                                           f"(it expired at {_iso(self.expires)})"})
            head["status_code"] = self.status or 410
            return orjson.dumps(head)[:-1] + b',"error":' + orjson.dumps(orjson.loads(answer)["error"]) + b"}"
        return orjson.dumps(head)


def _iso(seconds: float) -> str | None:
    if not seconds:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"
