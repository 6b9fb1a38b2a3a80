"""Jobs on Amazon SQS with a dead-letter queue, records and results in S3 (boto3; moto's server in tests).

SQS gives at-least-once delivery: a received message is invisible to others for the visibility timeout
(the lease, SERVE_QUEUE_LEASE_SECONDS), which the worker renews (ChangeMessageVisibility) while it works;
a worker that dies lets it become visible again, and ApproximateReceiveCount counts each delivery. The
worker itself moves a job past SERVE_QUEUE_MAX_DELIVERIES to the dead-letter queue, marking it failed;
the queue's RedrivePolicy (deploy/cloudformation/workers.yaml: one more receive) is the backstop.

S3 objects under `<queue_s3_prefix><queue_name>/`:

    records/<id>.json            queued or running (overwritten as the job moves)
    results/<id>.json            the terminal record, written with If-None-Match: * (the first write wins)
    idempotency/<model>/<sha256 of the key>.json   {"job_id", "digest"}, also If-None-Match: *
    inputs/<id>.json             a request body too large for an SQS message (the message then says
                                 "body_location": "s3://<bucket>/<key>" instead of "body")

S3 keeps no TTL of its own shorter than a day: a result past SERVE_QUEUE_RESULT_TTL reads as gone (410)
from its `finished` time, and a bucket lifecycle rule (workers.yaml) deletes the objects later.
"""
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from api.queue.broker import (Broker, BrokerUnavailable, Delivery, IdempotencyConflict, JobQueue, QueueStats,
                              ResultStore)
from api.queue.jobs import BadMessage, Job, Record
from api.settings import Settings

# SQS takes messages up to 256 KiB (1 MiB on newer regions' settings); a little under it leaves room for
# the envelope. Larger request bodies go to S3 and the message carries their location.
INLINE_BODY_BYTES = 240 * 1024
_UNAVAILABLE_CODES = {"ServiceUnavailable", "InternalError", "SlowDown", "Throttling", "ThrottlingException",
                      "RequestThrottled", "RequestTimeout", "KMS.ThrottlingException"}


@contextmanager
def _reachable():
    """botocore's network errors, timeouts and AWS's 5xx/throttling as BrokerUnavailable."""
    try:
        yield
    except BotoCoreError as exc:
        raise BrokerUnavailable(f"AWS is unreachable: {exc}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or error.get("Code") in _UNAVAILABLE_CODES:
            raise BrokerUnavailable(f"AWS refused for now: {error.get('Code')}: {error.get('Message')}") from None
        raise


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store(ResultStore):
    def __init__(self, settings: Settings, model: str, s3):
        self.s3, self.bucket, self.model = s3, settings.queue_s3_bucket, model
        self.root = f"{settings.queue_s3_prefix}{settings.queue_name}/"

    def key(self, kind: str, name: str) -> str:
        return f"{self.root}{kind}/{name}.json"

    def create(self, record: Record, idempotency_key: str | None = None, digest: str = "") -> str:
        """Own record first, then the key: whoever reads the key's job id finds that job's record."""
        with _reachable():
            self._put("records", record)
            if not idempotency_key:
                return record.id
            name = f"{self.model}/{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
            claim = orjson.dumps({"job_id": record.id, "digest": digest})
            if self._put_new(self.key("idempotency", name), claim):
                return record.id
            self.s3.delete_object(Bucket=self.bucket, Key=self.key("records", record.id))
            first = orjson.loads(self._read(self.key("idempotency", name)) or b"{}")
        if not first:
            raise BrokerUnavailable("an idempotency key was being written concurrently; retry")
        if digest and first.get("digest") not in (digest, ""):
            raise IdempotencyConflict(first["job_id"])
        return first["job_id"]

    def release(self, record: Record, idempotency_key: str | None = None) -> None:
        """Best effort: a failure here leaves the job reading `queued` until its TTL, then `expired`."""
        try:
            with _reachable():
                if idempotency_key:
                    name = f"{self.model}/{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
                    self.s3.delete_object(Bucket=self.bucket, Key=self.key("idempotency", name))
                self.s3.delete_object(Bucket=self.bucket, Key=self.key("records", record.id))
        except (BrokerUnavailable, ClientError):
            pass

    def get(self, job_id: str) -> Record | None:
        with _reachable():
            data = self._read(self.key("results", job_id)) or self._read(self.key("records", job_id))
        return Record.from_fields(orjson.loads(data)) if data else None

    def mark_running(self, job: Job, attempts: int, now: float) -> Record:
        with _reachable():
            done = self._read(self.key("results", job.id))
            if done:
                return Record.from_fields(orjson.loads(done))
            record = Record(job.id, job.model, job.version, "running", job.submitted, job.expires, now, 0.0, attempts)
            self._put("records", record)
        return record

    def finish(self, record: Record) -> bool:
        with _reachable():
            return self._put_new(self.key("results", record.id), _dump(record))

    # -- S3 calls -----------------------------------------------------------------------------------
    def _put(self, kind: str, record: Record) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(kind, record.id), Body=_dump(record),
                           ContentType="application/json")

    def _put_new(self, key: str, body: bytes) -> bool:
        """Write `key` unless it exists (S3's conditional write): False when it already did."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                               ContentType="application/json")
            return True
        except ClientError as exc:
            # 412: it exists; 409: a concurrent conditional write to it is in progress and will win
            if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def _read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise


class SqsQueue(JobQueue):
    def __init__(self, settings: Settings, sqs, s3, bucket_root: str):
        self.sqs, self.s3, self.settings = sqs, s3, settings
        self.url, self.dead_url = settings.queue_sqs_url, settings.queue_sqs_dead_letter_url
        self.bucket, self.root = settings.queue_s3_bucket, bucket_root
        self.lease = max(1, round(settings.queue_lease_seconds))  # SQS counts whole seconds

    def send(self, job: Job) -> None:
        with _reachable():
            self.sqs.send_message(QueueUrl=self.url, MessageBody=self._envelope(job))

    def _envelope(self, job: Job) -> str:
        message = job.encode()
        if len(message) <= INLINE_BODY_BYTES:
            return message.decode()
        key = f"{self.root}inputs/{job.id}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=job.body, ContentType="application/json")
        doc = orjson.loads(message)
        del doc["body"]
        doc["body_location"] = f"s3://{self.bucket}/{key}"
        return orjson.dumps(doc).decode()

    def receive(self, consumer: str, count: int, wait: float) -> list[Delivery]:
        taken: list[Delivery] = []
        long_poll = min(20, int(wait))  # SQS waits whole seconds
        with _reachable():
            while len(taken) < count:
                reply = self.sqs.receive_message(
                    QueueUrl=self.url, MaxNumberOfMessages=min(10, count - len(taken)), VisibilityTimeout=self.lease,
                    WaitTimeSeconds=0 if taken else long_poll, MessageSystemAttributeNames=["ApproximateReceiveCount"])
                messages = reply.get("Messages", [])
                taken += [self._delivery(m) for m in messages]
                if len(messages) < 10:
                    break
        if not taken and wait - long_poll > 0:
            time.sleep(wait - long_poll)  # the part of `wait` SQS cannot: an idle worker must not spin
        return taken

    def _delivery(self, message: dict) -> Delivery:
        times = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        handle = message["ReceiptHandle"]
        try:
            return Delivery(Job.decode(self._body(message["Body"])), handle, times)
        except BadMessage as exc:
            return Delivery(None, handle, times, str(exc))

    def _body(self, text: str) -> bytes:
        """The message, with a body stored in S3 put back in."""
        if '"body_location"' not in text:
            return text.encode()
        try:
            doc = orjson.loads(text)
            bucket, _, key = doc.pop("body_location").removeprefix("s3://").partition("/")
            doc["body"] = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except (orjson.JSONDecodeError, AttributeError, KeyError, UnicodeDecodeError) as exc:
            raise BadMessage(f"message's body_location cannot be read: {exc}") from None
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "AccessDenied"):
                raise BadMessage(f"message's body_location cannot be read: {_code(exc)}") from None
            raise
        return orjson.dumps(doc)

    def extend(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        kept = []
        with _reachable():
            for part in _tens(deliveries):
                reply = self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": d.handle, "VisibilityTimeout": self.lease} for i, d in enumerate(part)])
                kept += [part[int(ok["Id"])] for ok in reply.get("Successful", [])]
        return kept

    def ack(self, deliveries: list[Delivery]) -> None:
        with _reachable():
            for part in _tens(deliveries):
                self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": d.handle} for i, d in enumerate(part)])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        body = delivery.job.encode().decode() if delivery.job else orjson.dumps({"unreadable": delivery.error}).decode()
        with _reachable():
            self.sqs.send_message(QueueUrl=self.dead_url, MessageBody=body, MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason or "unknown"},
                "deliveries": {"DataType": "Number", "StringValue": str(delivery.deliveries)}})
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=delivery.handle)

    def stats(self) -> QueueStats:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        with _reachable():
            jobs = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)["Attributes"]
            dead = self.sqs.get_queue_attributes(QueueUrl=self.dead_url, AttributeNames=names[:1])["Attributes"] \
                if self.dead_url else {}
        # The oldest message's age is CloudWatch's ApproximateAgeOfOldestMessage: the API cannot tell.
        return QueueStats(int(jobs[names[0]]), int(jobs[names[1]]), int(dead.get(names[0], 0)), None)

    def dead_letters(self, count: int = 10) -> list[dict]:
        """Up to `count` dead letters, left in the queue (read with a zero visibility timeout)."""
        with _reachable():
            reply = self.sqs.receive_message(QueueUrl=self.dead_url, MaxNumberOfMessages=min(10, count),
                                             VisibilityTimeout=0, MessageAttributeNames=["All"])
        return [{"message": m["Body"], **{k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}}
                for m in reply.get("Messages", [])]


class SqsBroker(Broker):
    """SQS and S3 in the Broker's order; a batch's S3 calls run on a few threads (one round trip each)."""

    def __init__(self, settings: Settings, model: str, sqs, s3):
        store = S3Store(settings, model, s3)
        super().__init__(SqsQueue(settings, sqs, s3, store.root), store, settings)
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="s3")

    def start(self, deliveries: list[Delivery], now: float | None = None) -> list[Record]:
        now = time.time() if now is None else now
        return list(self._pool.map(lambda d: self.store.mark_running(d.job, d.deliveries, now), deliveries))

    def complete(self, finished: list[tuple[Delivery, Record]]) -> list[bool]:
        kept = list(self._pool.map(lambda pair: self.store.finish(pair[1]), finished))
        self.queue.ack([delivery for delivery, _ in finished])
        return kept

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def sqs_broker(settings: Settings, model: str) -> SqsBroker:
    """Clients from the settings; credentials and region as boto3 finds them (instance role, env)."""
    if not (settings.queue_sqs_url and settings.queue_s3_bucket):
        raise ValueError("queue_backend 'sqs' needs SERVE_QUEUE_SQS_URL and SERVE_QUEUE_S3_BUCKET")
    config = Config(connect_timeout=2, read_timeout=settings.queue_poll_seconds + 10,
                    retries={"max_attempts": 3, "mode": "standard"})
    endpoint = settings.queue_aws_endpoint_url or None
    session = boto3.session.Session()
    return SqsBroker(settings, model, session.client("sqs", endpoint_url=endpoint, config=config),
                     session.client("s3", endpoint_url=endpoint, config=config))


def _tens(items: list) -> list[list]:
    return [items[i:i + 10] for i in range(0, len(items), 10)]


def _dump(record: Record) -> bytes:
    fields = record.as_fields()
    fields["answer"] = record.answer.decode()
    return orjson.dumps(fields)
