"""Jobs on Redis Streams with a consumer group (Redis 7; Debian's redis-server, ElastiCache, Valkey).

Keys, for a queue name N (SERVE_QUEUE_NAME) and model M:

    N:M:jobs        the stream; field `message` holds the job (api/queue/jobs.py, format 1)
    N:M:dead        dead letters: `message`, `reason`, `deliveries`
    N:M:idem:<sha>  an Idempotency-Key (sha256 of it): "<job id> <body digest>"
    N:job:<id>      the job's record, a hash (api/queue/jobs.Record's fields)

The consumer group `workers` gives at-least-once delivery: an entry read (XREADGROUP) waits in the
group's pending-entry list (PEL) until acknowledged. A worker renews its lease by resetting the idle time
of the entries it holds (XCLAIM ... JUSTID, which leaves the delivery count alone); an entry idle past
the lease belongs to a dead worker, and the next receive takes it over (XAUTOCLAIM), counting a delivery.

Submit (idempotency key, record, XADD) and complete (record unless terminal, XACK, XDEL) are Lua scripts:
Redis runs each atomically, so no crash leaves a key without its job or a result without its ack.
Acknowledged entries are deleted, so the stream's length is what is waiting or running.

Run Redis with `maxmemory-policy noeviction` (an evicted job is lost silently) and, for jobs to survive
its restart, `appendonly yes` (`appendfsync always` for a crash; `make serve-async` does both).
"""
import hashlib
import time
from contextlib import contextmanager

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from api.queue.broker import (Broker, BrokerUnavailable, Delivery, IdempotencyConflict, JobQueue, QueueStats,
                              ResultStore)
from api.queue.jobs import BadMessage, Job, Record
from api.settings import Settings

GROUP = "workers"

_SUBMIT = """
if ARGV[1] ~= '' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return existing end
  redis.call('SET', KEYS[1], ARGV[2] .. ' ' .. ARGV[3], 'EX', ARGV[4])
end
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[5] ~= '' then redis.call('XADD', KEYS[3], '*', 'message', ARGV[5]) end
return ''
"""
# One call per batch, not per job: with thousands of small jobs a second, the client's packing of
# arguments and one reply per command cost more than the work (measured: 1,300 jobs/s per worker on
# digits with a script call per job and per field). Each job's fields travel as one JSON argument.
#
# Marks each job running unless it is terminal; creates the record of a job a producer wrote straight
# to the stream (no record yet), with the TTL a submit would have given it. Returns each job's state.
_START = """
local states = {}
for i = 1, #KEYS do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state == 'succeeded' or state == 'failed' or state == 'expired' then
    states[i] = state
  else
    local f = cjson.decode(ARGV[i + 1])
    redis.call('HSET', KEYS[i], 'state', 'running', 'started', f.started, 'attempts', f.attempts, 'id', f.id,
               'model', f.model, 'version', f.version, 'submitted', f.submitted, 'expires', f.expires)
    redis.call('EXPIRE', KEYS[i], ARGV[1], 'NX')
    states[i] = 'running'
  end
end
return states
"""
# Each job: its record unless already terminal (the first answer stays), then XACK and XDEL of its
# entry (none: a record alone). KEYS: the stream, then one record per job; ARGV: group, TTL, then per
# job its fields (JSON, with the entry id as `handle`) and its answer. Returns 1 where the write was kept.
_COMPLETE = """
local kept = {}
for i = 2, #KEYS do
  local f = cjson.decode(ARGV[2 * i - 1])
  local state = redis.call('HGET', KEYS[i], 'state')
  kept[i - 1] = 0
  if state ~= 'succeeded' and state ~= 'failed' and state ~= 'expired' then
    redis.call('HSET', KEYS[i], 'state', f.state, 'status', f.status, 'answer', ARGV[2 * i], 'finished', f.finished,
               'id', f.id, 'model', f.model, 'version', f.version, 'submitted', f.submitted, 'expires', f.expires,
               'started', f.started, 'attempts', f.attempts)
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    kept[i - 1] = 1
  end
  if f.handle ~= '' then
    redis.call('XACK', KEYS[1], ARGV[1], f.handle)
    redis.call('XDEL', KEYS[1], f.handle)
  end
end
return kept
"""
# Renews only entries this consumer still owns: XCLAIM alone would take back one another worker
# took over after our lease ran out.
_EXTEND = """
local mine = {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    table.insert(mine, ARGV[i])
  end
end
return mine
"""
_DEAD = """
redis.call('XADD', KEYS[2], '*', 'message', ARGV[3], 'reason', ARGV[4], 'deliveries', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


@contextmanager
def _reachable():
    """Redis's connection errors and timeouts as BrokerUnavailable; its other errors are bugs."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"Redis is unreachable: {exc}") from None
    except redis.ResponseError as exc:
        if str(exc).startswith(("LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "NOGROUP")):
            raise BrokerUnavailable(f"Redis cannot serve the queue now: {exc}") from None
        raise


class _Keys:
    """One model's keys on one Redis, its client and scripts: what the queue and the store share."""

    def __init__(self, settings: Settings, model: str, client: "redis.Redis | None"):
        prefix = settings.queue_name
        self.stream, self.dead = f"{prefix}:{model}:jobs", f"{prefix}:{model}:dead"
        self.idem, self.record = f"{prefix}:{model}:idem:", f"{prefix}:job:"
        # A blocking read waits up to queue_poll_seconds: the socket must outwait it.
        self.redis = client or redis.Redis.from_url(
            settings.queue_redis_url, socket_connect_timeout=2, socket_timeout=settings.queue_poll_seconds + 5,
            health_check_interval=30, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
        self.scripts = {name: self.redis.register_script(source) for name, source in
                        (("submit", _SUBMIT), ("start", _START), ("complete", _COMPLETE), ("extend", _EXTEND),
                         ("dead", _DEAD))}
        self.keep = int(settings.queue_job_ttl + settings.queue_result_ttl)  # a record's life, unfinished
        self.result_ttl = max(1, int(settings.queue_result_ttl))
        self.group_ready = False

    def ensure_group(self) -> None:
        """The consumer group, made once per process, and again after a Redis that lost its data
        (NOGROUP: the caller sees BrokerUnavailable and retries)."""
        if self.group_ready:
            return
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.group_ready = True

    @contextmanager
    def reachable(self):
        try:
            with _reachable():
                yield
        except BrokerUnavailable:
            self.group_ready = False
            raise

    def complete_args(self, finished: list[tuple["Delivery | None", Record]]) -> dict:
        args = [GROUP, self.result_ttl]
        for delivery, record in finished:
            fields = record.as_fields()
            answer = fields.pop("answer")
            fields["handle"] = delivery.handle if delivery else ""
            args += [orjson.dumps(fields), answer]
        return {"keys": [self.stream, *(self.record + record.id for _, record in finished)], "args": args}


class RedisStore(ResultStore):
    def __init__(self, keys: _Keys):
        self.k = keys

    def create(self, record: Record, idempotency_key: str | None = None, digest: str = "",
               message: bytes = b"") -> str:
        """With `message`, also XADD it, in the same atomic step (RedisBroker.submit)."""
        k = self.k
        idem = k.idem + hashlib.sha256(idempotency_key.encode()).hexdigest() if idempotency_key else k.idem
        fields = [item for pair in record.as_fields().items() for item in pair]
        with k.reachable():
            k.ensure_group()
            found = k.scripts["submit"](keys=[idem, k.record + record.id, k.stream],
                                        args=["1" if idempotency_key else "", record.id, digest or "-", k.keep,
                                              message, *fields])
        if not found:
            return record.id
        existing, _, first_digest = found.decode().partition(" ")
        if digest and first_digest not in (digest, "-"):
            raise IdempotencyConflict(existing)
        return existing

    def get(self, job_id: str) -> Record | None:
        with self.k.reachable():
            fields = self.k.redis.hgetall(self.k.record + job_id)
        return Record.from_fields(fields) if fields else None

    def mark_running(self, job: Job, attempts: int, now: float) -> Record:
        return self.mark_many([(job, attempts)], now)[0]

    def mark_many(self, jobs: list[tuple[Job, int]], now: float) -> list[Record]:
        k = self.k
        if not jobs:
            return []
        args = [k.keep]
        for job, attempts in jobs:
            fields = Record.queued(job).as_fields()
            args.append(orjson.dumps({"started": repr(now), "attempts": str(attempts),
                                      **{name: fields[name] for name in ("id", "model", "version", "submitted", "expires")}}))
        with k.reachable():
            states = k.scripts["start"](keys=[k.record + job.id for job, _ in jobs], args=args)
        return [Record(job.id, job.model, job.version, _text(state), job.submitted, job.expires, now, 0.0, attempts)
                for (job, attempts), state in zip(jobs, states)]

    def finish(self, record: Record) -> bool:
        return self.finish_many([(None, record)])[0]

    def finish_many(self, finished: list[tuple["Delivery | None", Record]]) -> list[bool]:
        """Each record unless terminal, and with a delivery, its XACK and XDEL: one atomic script call."""
        if not finished:
            return []
        with self.k.reachable():
            return [bool(kept) for kept in self.k.scripts["complete"](**self.k.complete_args(finished))]


class RedisQueue(JobQueue):
    def __init__(self, keys: _Keys, settings: Settings):
        self.k, self.settings = keys, settings
        self._cursor = "0-0"

    def send(self, job: Job) -> None:
        with self.k.reachable():
            self.k.ensure_group()
            self.k.redis.xadd(self.k.stream, {"message": job.encode()})

    def receive(self, consumer: str, count: int, wait: float) -> list[Delivery]:
        k = self.k
        with k.reachable():
            k.ensure_group()
            taken = self._take_over(consumer, count)
            if len(taken) < count:
                block = None if taken else max(1, int(wait * 1000))
                for _, entries in k.redis.xreadgroup(GROUP, consumer, {k.stream: ">"}, count=count - len(taken),
                                                     block=block) or []:
                    taken += [_delivery(entry_id, fields, 1) for entry_id, fields in entries if fields]
        return taken

    def _take_over(self, consumer: str, count: int) -> list[Delivery]:
        """Entries idle past the lease (their worker died), with their delivery counts (XAUTOCLAIM
        counted this one). The cursor goes round the pending list over successive calls."""
        k = self.k
        lease_ms = int(self.settings.queue_lease_seconds * 1000)
        reply = k.redis.xautoclaim(k.stream, GROUP, consumer, lease_ms, self._cursor, count=count)
        self._cursor = _text(reply[0])
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields]  # Redis 6.2: deleted = nil
        if not entries:
            return []
        with k.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(k.stream, GROUP, min=entry_id, max=entry_id, count=1)
            counts = [(rows[0]["times_delivered"] if rows else 1) for rows in pipe.execute()]
        return [_delivery(entry_id, fields, times) for (entry_id, fields), times in zip(entries, counts)]

    def extend(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        if not deliveries:
            return []
        with self.k.reachable():
            mine = {_text(entry) for entry in self.k.scripts["extend"](
                keys=[self.k.stream], args=[GROUP, consumer, *(d.handle for d in deliveries)])}
        return [d for d in deliveries if d.handle in mine]

    def ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            handles = [d.handle for d in deliveries]
            with self.k.reachable(), self.k.redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.k.stream, GROUP, *handles)
                pipe.xdel(self.k.stream, *handles)
                pipe.execute()

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        message = delivery.job.encode() if delivery.job else b""
        with self.k.reachable():
            self.k.scripts["dead"](keys=[self.k.stream, self.k.dead],
                                   args=[GROUP, delivery.handle, message, reason, delivery.deliveries])

    def stats(self) -> QueueStats:
        k = self.k
        with k.reachable(), k.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(k.stream)
            pipe.xlen(k.dead)
            pipe.xrange(k.stream, count=1)
            pipe.xpending(k.stream, GROUP)
            try:
                length, dead, first, pending = pipe.execute()
            except redis.ResponseError:  # no group yet: nothing was ever sent
                return QueueStats(0, 0, 0, None)
        in_flight = pending["pending"] if pending else 0
        oldest = max(0.0, time.time() - int(_text(first[0][0]).split("-")[0]) / 1000) if first else None
        return QueueStats(max(0, length - in_flight), in_flight, dead, oldest)

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The dead-letter stream's first `count` entries: `message`, `reason`, `deliveries`, as text."""
        with self.k.reachable():
            return [{_text(k): _text(v) for k, v in fields.items()}
                    for _, fields in self.k.redis.xrange(self.k.dead, count=count)]

    def close(self) -> None:
        self.k.redis.close()


class RedisBroker(Broker):
    """Queue and store on one Redis, for one model's jobs; submit and complete are single atomic scripts.
    Thread-safe (redis-py's connection pool), but a queue's take-over cursor is one per broker: give each
    worker process its own."""

    def __init__(self, settings: Settings, model: str, client: "redis.Redis | None" = None):
        keys = _Keys(settings, model, client)
        super().__init__(RedisQueue(keys, settings), RedisStore(keys), settings)

    def submit(self, job: Job, idempotency_key: str | None = None, digest: str = "") -> tuple[str, bool]:
        job_id = self.store.create(Record.queued(job), idempotency_key, digest, job.encode())
        return job_id, job_id == job.id

    def start(self, deliveries: list[Delivery], now: float | None = None) -> list[Record]:
        return self.store.mark_many([(d.job, d.deliveries) for d in deliveries], time.time() if now is None else now)

    def complete(self, finished: list[tuple[Delivery, Record]]) -> list[bool]:
        return self.store.finish_many(finished)


def _delivery(entry_id, fields: dict, times: int) -> Delivery:
    handle = _text(entry_id)
    raw = fields.get(b"message", b"")
    try:
        return Delivery(Job.decode(raw), handle, int(times))
    except BadMessage as exc:
        return Delivery(None, handle, int(times), str(exc))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
