"""Submit and fetch, as the HTTP routes need them: the checks `:predict` makes, then the broker.

`POST /v1/models/<name>[/versions/<v>]:submit` runs every check `:predict` runs on the body (the same
functions: api/protocols), so a bad body is a 4xx now, never a failed job later; then it writes the job
(api/queue/jobs.py) and answers its id. `GET /v1/jobs/<id>` reads the job's record. Framework-free:
api/http/jobs.py is the transport.
"""
import hashlib
import re
import time

from api.errors import ApiError, InvalidInput, NotFound, Unavailable
from api.queue.broker import Broker, BrokerUnavailable, IdempotencyConflict, open_broker
from api.queue.jobs import JOB_ID, TERMINAL, Job, issued_at
from api.serving.dataplane import DataPlane
from api.settings import Settings

# RFC 9110 token characters and the printable rest, as the IETF idempotency-key draft allows a string
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
BROKER_RETRY_AFTER = 5  # seconds: a broker restart (Redis loading its AOF) takes about this long


class Gone(ApiError):
    """410: the job existed, but its record has expired (SERVE_QUEUE_RESULT_TTL after it finished)."""
    status = 410


class KeyReused(ApiError):
    """422: an Idempotency-Key sent again with a different body (the IETF draft's answer)."""
    status = 422


class JobFront:
    def __init__(self, plane: DataPlane, settings: Settings, opener=open_broker):
        self.plane, self.settings, self._open = plane, settings, opener
        self._brokers: dict[str, Broker] = {}

    def submit(self, name: str, version: int | None, body: bytes, content_type: str | None,
               idempotency_key: str | None) -> tuple[dict, dict[str, str]]:
        """Check and enqueue: `({"job_id", "status_url"}, headers)` for a 202. Raises the ApiError of the
        request: as `:predict` for the body (400, 404, 413, 415, 503 while loading), 400 for a bad
        Idempotency-Key, 422 for a key reused with another body, 503 + Retry-After when the broker is down."""
        self._enabled()
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise InvalidInput("Idempotency-Key must be 1 to 255 printable ASCII characters, no spaces")
        self.plane.tfserving_request(name, version, body, content_type)  # :predict's checks, now
        job = Job.create(name, version, body, self.settings.queue_job_ttl)
        try:
            job_id, _ = self._broker(name).submit(job, idempotency_key, hashlib.sha256(body).hexdigest())
        except IdempotencyConflict as exc:
            raise KeyReused(str(exc)) from None
        except BrokerUnavailable as exc:
            raise Unavailable(f"the job queue is unavailable, retry shortly: {exc}", BROKER_RETRY_AFTER) from None
        url = f"/v1/jobs/{job_id}"
        return {"job_id": job_id, "status_url": url}, {"Location": url}

    def status(self, job_id: str) -> tuple[bytes, dict[str, str]]:
        """The job's document (api/queue/jobs.Record.document) and headers for a 200; NotFound (404) for an
        id never issued, Gone (410) once its record expired, 503 when the broker is down."""
        self._enabled()
        if not JOB_ID.match(job_id):
            raise NotFound(f"no job '{job_id[:64]}': job ids are 32 hexadecimal digits")
        now, ttl = time.time(), self.settings.queue_result_ttl
        try:
            record = self._broker(self.settings.model_name).record(job_id)
        except BrokerUnavailable as exc:
            raise Unavailable(f"the job queue is unavailable, retry shortly: {exc}", BROKER_RETRY_AFTER) from None
        if record is None:
            # Its record is gone: expired if the id is older than any record lives, else never issued.
            if issued_at(job_id) + ttl < now:
                raise Gone(f"job {job_id} has expired: answers are kept {ttl:g} s (SERVE_QUEUE_RESULT_TTL)")
            raise NotFound(f"no job {job_id}")
        if record.state in TERMINAL and record.finished and record.finished + ttl < now:
            raise Gone(f"job {job_id} has expired: answers are kept {ttl:g} s after they are written")
        headers = {"Content-Type": "application/json"}
        if record.state not in TERMINAL and now <= record.expires:
            headers["Retry-After"] = "1"  # for pollers: not done yet
        return record.document(now), headers

    def _enabled(self) -> None:
        if self.settings.queue_backend == "none":
            raise NotFound("asynchronous jobs are off on this server (SERVE_QUEUE_BACKEND=none)")

    def _broker(self, model: str) -> Broker:
        broker = self._brokers.get(model)
        if broker is None:
            broker = self._brokers[model] = self._open(self.settings, model)
        return broker
