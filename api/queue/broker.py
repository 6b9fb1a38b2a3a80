"""The broker behind asynchronous jobs, as two small interfaces and the order of effects between them.

`JobQueue` carries messages with at-least-once delivery: a message taken (`receive`) stays the taker's
for a lease, which it renews (`extend`) while it works; a taker that dies loses the lease and the message
is delivered again, its delivery count one higher. `ResultStore` keeps each job's record, where the
first terminal write wins (`finish`): a job run twice (a worker died after writing, before acknowledging)
keeps its first answer, so no client ever sees two different answers.

`Broker` orders the effects: a record before its message (a message never names a job nobody can
fetch), the result before the acknowledgement (a crash between the two redelivers a job whose record is
already terminal: it is acknowledged, not run again). Backends that can do both in one atomic step
(Redis, with a script) override `submit` and `complete`.

Backends: api/queue/redis_streams.py (Redis Streams) and api/queue/sqs.py (SQS + S3); `open_broker`
picks one from the settings.
"""
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from api.queue.jobs import Job, Record
from api.settings import Settings


class BrokerUnavailable(Exception):
    """The broker could not be reached or did not answer in time (the HTTP side answers 503)."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key came again with a different request body (the HTTP side answers 422)."""

    def __init__(self, job_id: str):
        super().__init__(f"Idempotency-Key was first used for job {job_id} with a different request body; "
                         f"use a new key for a new request")
        self.job_id = job_id


@dataclass(frozen=True)
class Delivery:
    """One message as a worker received it: the job (None when the message could not be read: `error`
    says why), the handle that acknowledges it (Redis entry id, SQS receipt handle), and how many times
    it has been delivered, this time included (1 on the first)."""
    job: Job | None
    handle: str
    deliveries: int
    error: str = ""


@dataclass(frozen=True)
class QueueStats:
    """The queue as a scaler and a dashboard see it: jobs waiting for a worker, taken and not yet
    acknowledged, in the dead-letter queue, and the age of the oldest waiting or taken one (seconds;
    None when the backend cannot tell, or nothing waits)."""
    waiting: int
    in_flight: int
    dead: int
    oldest_age: float | None


class JobQueue(ABC):
    @abstractmethod
    def send(self, job: Job) -> None:
        """Enqueue; BrokerUnavailable when it cannot be."""

    @abstractmethod
    def receive(self, consumer: str, count: int, wait: float) -> list[Delivery]:
        """Up to `count` messages for `consumer` (a name unique per worker process), first those whose
        lease ran out (their taker died), then new ones; waits up to `wait` seconds when there are none."""

    @abstractmethod
    def extend(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        """Renew the lease on messages `consumer` holds; returns those still its own (a lease that had run
        out may have gone to another worker: that one now runs the job too)."""

    @abstractmethod
    def ack(self, deliveries: list[Delivery]) -> None:
        """Done with these: never delivered again."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move to the dead-letter queue with `reason`, then acknowledge."""

    @abstractmethod
    def stats(self) -> QueueStats: ...

    def close(self) -> None:
        """Release connections."""


class ResultStore(ABC):
    @abstractmethod
    def create(self, record: Record, idempotency_key: str | None = None, digest: str = "") -> str:
        """Write a new job's record and return its id; with `idempotency_key`, the id of the job first
        submitted under that key instead, if any (IdempotencyConflict when `digest`, a hash of the body,
        differs from that job's)."""

    @abstractmethod
    def get(self, job_id: str) -> Record | None:
        """The job's record, or None when there is none (never created, or expired and removed)."""

    @abstractmethod
    def mark_running(self, job: Job, attempts: int, now: float) -> Record:
        """Mark the job running (attempt `attempts`) unless its record is terminal; returns the record as
        it now is, terminal ones untouched (a redelivered job that already has its answer)."""

    @abstractmethod
    def finish(self, record: Record) -> bool:
        """Write a terminal record unless one is there already; True when this write is the one kept."""

    def release(self, record: Record, idempotency_key: str | None = None) -> None:
        """Forget a job whose message could not be sent: its record and its idempotency key, so that the
        client's retry with the same key makes the job afresh instead of finding one that never runs."""


class Broker:
    """A JobQueue and a ResultStore, used in the order that makes redelivery harmless."""

    def __init__(self, queue: JobQueue, store: ResultStore, settings: Settings):
        self.queue, self.store, self.settings = queue, store, settings

    def submit(self, job: Job, idempotency_key: str | None = None, digest: str = "") -> tuple[str, bool]:
        """Record, then enqueue; returns (job id, whether this call created it)."""
        job_id = self.store.create(Record.queued(job), idempotency_key, digest)
        if job_id != job.id:
            return job_id, False
        try:
            self.queue.send(job)
        except BrokerUnavailable:
            self.store.release(Record.queued(job), idempotency_key)
            raise
        return job_id, True

    def receive(self, consumer: str, count: int, wait: float) -> list[Delivery]:
        return self.queue.receive(consumer, count, wait)

    def start(self, deliveries: list[Delivery], now: float | None = None) -> list[Record]:
        """Mark each (readable) job running: its record as it now is; a terminal one means the job already
        has its answer (a redelivery after a crash between result and acknowledgement)."""
        now = time.time() if now is None else now
        return [self.store.mark_running(d.job, d.deliveries, now) for d in deliveries]

    def extend(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        return self.queue.extend(consumer, deliveries)

    def complete(self, finished: list[tuple[Delivery, Record]]) -> list[bool]:
        """Write each terminal record (first write wins), then acknowledge: True where this write was kept."""
        kept = [self.store.finish(record) for _, record in finished]
        self.queue.ack([delivery for delivery, _ in finished])
        return kept

    def dead_letter(self, delivery: Delivery, record: Record | None, reason: str) -> None:
        """Write `record` (the job failed, when the message could be read), then move the message to the dead
        letters: a client polling the job sees `failed` with the reason, never `running` forever."""
        if record is not None:
            self.store.finish(record)
        self.queue.dead_letter(delivery, reason)

    def record(self, job_id: str) -> Record | None:
        return self.store.get(job_id)

    def stats(self) -> QueueStats:
        return self.queue.stats()

    def close(self) -> None:
        self.queue.close()


def open_broker(settings: Settings, model: str | None = None) -> Broker:
    """The broker the settings name, for `model`'s jobs (default: SERVE_MODEL_NAME); ValueError for
    queue_backend `none`. The backend's client library is imported here, only when used."""
    model = model or settings.model_name
    if settings.queue_backend == "redis":
        from api.queue.redis_streams import RedisBroker
        return RedisBroker(settings, model)
    if settings.queue_backend == "sqs":
        from api.queue.sqs import sqs_broker
        return sqs_broker(settings, model)
    raise ValueError("asynchronous jobs are off: SERVE_QUEUE_BACKEND is 'none' (set 'redis' or 'sqs')")
