"""Dynamic batching inside one worker: concurrent requests share one compiled call.

Requests (greenlets in a gevent worker, threads in a gthread one) queue their instances in
`Batcher.run`. One of them at a time (see Batcher) takes up to `max_batch_size` queued instances, or what arrived within `batch_timeout`,
runs the model once and hands every request its slice. On a CPU a batch of 32 digits
costs about what one costs (anchors: 1,732 vs 29,887 images/s), so under concurrency this is
where throughput comes from; with no concurrency a request waits at most `batch_timeout`.

The policy is TensorFlow Serving's: `max_batch_size`, `batch_timeout_micros`,
`max_enqueued_batches` (beyond it a request is refused at once with 503), `allowed_batch_sizes`
(a batch is padded up to one of them). Requests larger than a batch are split, requests whose
deadline passed or whose client hung up are dropped before they cost an inference, and a batch
that fails is rerun request by request so one bad request never fails its batch-mates.

In a gevent worker a long compiled call runs on a native thread of its own (`event_loop_hooks`):
TensorFlow releases the GIL while its kernels run, so the event loop goes on reading and parsing the
next requests meanwhile, and they form the next batch (the shape of Ray Serve's async replica with
`@serve.batch` and `asyncio.to_thread`). A call of a millisecond runs on the loop itself: handing it to
another thread and back costs more than the call.

A request's batch is one array [instances, ...] or, for a model with several inputs, a dict of arrays
(input name -> [instances, ...]) that all have the same number of instances: concatenation, padding,
splitting and slicing work per input key, so a request's rows stay together across its inputs. A string
input is an object array of bytes: it joins and splits as any array does, and pads with b"".

Pure Python and numpy: the model call is injected, so this is tested without TensorFlow.
"""
import logging
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from api.errors import ApiError, DeadlineExceeded, InferenceFailed, Unavailable
from api.settings import BatchPolicy

log = logging.getLogger("api.batching")

Outputs = dict[str, np.ndarray]
Inputs = np.ndarray | dict[str, np.ndarray]  # one array, or one per input name with the same first dimension


class _Waiter:
    """One request thread waiting: for its slices to finish, or for its turn to run a batch."""

    __slots__ = ("event", "remaining", "promoted", "gone")

    def __init__(self, slices: int):
        self.event = threading.Event()
        self.remaining = slices
        self.promoted = False  # the previous leader handed this thread the next batch
        self.gone = False  # stopped waiting (deadline): its slices are skipped, never promoted


class _Task:
    """One slice of one request (a request larger than a batch becomes several)."""

    __slots__ = ("rows", "size", "deadline", "start_by", "client_gone", "waiter", "outputs", "error", "queued_at")

    def __init__(self, rows: Inputs, size: int, deadline: float, client_gone, waiter: _Waiter, queued_at: float,
                 start_by: float | None = None):
        self.rows = rows  # an array, or a dict of arrays (one per input), `size` instances each
        self.size = size
        self.queued_at = queued_at  # perf_counter: the queue wait is measured against the batch's start
        self.deadline = deadline
        self.start_by = start_by
        self.client_gone = client_gone
        self.waiter = waiter
        self.outputs: Outputs | None = None
        self.error: ApiError | None = None

    def finish(self, outputs: Outputs | None = None, error: ApiError | None = None) -> None:
        self.outputs, self.error = outputs, error
        self.waiter.remaining -= 1  # only the leader finishes tasks: one thread at a time
        if self.waiter.remaining == 0:
            self.waiter.event.set()


class Batcher:
    """Leader/follower batching: no thread of its own.

    A request that finds no batch running runs one itself, with whatever is queued; requests that
    arrive meanwhile queue up, and when the call ends the leader hands the next batch to the thread
    of the oldest queued request. So at most one compiled call runs at a time, as with a dedicated
    inference thread, but a lone request pays no thread hand-off, and under load the thread that
    runs the batch already holds the GIL: a dedicated thread has to win it back from every request
    thread after each call, which measured here tripled the wall time of a call.
    """

    def __init__(self, infer: Callable[[Inputs], Outputs], policy: BatchPolicy, name: str = "model",
                 stats: "BatchStats | None" = None, runner: "Callable | None" = None,
                 gather: "Callable[[], None] | None" = None):
        self._infer = infer
        self._runner = runner  # runs the compiled call elsewhere (event_loop_hooks); None: on the leader
        self._gather = gather  # lets requests already read join the batch about to form
        self.mode = "native thread" if runner else "event loop" if gather else "request thread"
        self.policy = policy
        self.name = name
        self._queue: deque[_Task] = deque()
        self._queued = 0  # instances in the queue
        self._cond = threading.Condition()
        self._leading = False
        self._seconds_per_instance = 0.0  # recent batches' call time per instance (moving average)
        self._call_ends = 0.0  # monotonic s: when the running call should end, by that average; 0: none runs
        self._rejoin_until = 0.0  # monotonic s: the next batch may wait until then ...
        self._rejoin_target = 0  # ... for this many instances (those just answered plus those waiting)
        self._room = threading.Condition()  # notified after each batch, for requests waiting for room
        self.stats = stats or BatchStats()  # api/metrics.py passes one that also exports them

    # -- request threads --------------------------------------------------------------------------
    def run(self, batch: Inputs, deadline: float, client_gone: Callable[[], bool] | None = None,
            start_by: float | None = None) -> Outputs:
        """Infer `batch` within the shared batches; raises the ApiError the request ends in.

        `batch`: an array [n, ...], or a dict input name -> array [n, ...] (the same n for every input;
        ValueError otherwise, a caller's bug). The model gets what the request gave, concatenated with its
        batch-mates' along the first dimension (per input), so every request to one batcher must take the
        same form. Returns output name -> array [n, ...]: this request's rows only.

        `deadline` (monotonic s): past it, 504. `start_by` (monotonic s, the request's SERVE_MAX_QUEUE_WAIT):
        a request that would start later, by the queue ahead of it at the recent call time per instance,
        is refused at once with 503 + Retry-After, and one still queued when it passes is refused then.
        An event-loop worker takes every connection at once, so this is where an overload queues.
        """
        size = self.policy.max_batch_size
        count = _count(batch)
        waiter = _Waiter((count + size - 1) // size)
        now = time.perf_counter()
        # only the first slice may still be refused: once it runs, the request has started
        tasks = [_Task(batch if count <= size else _rows(batch, i, i + size), min(size, count - i), deadline,
                       client_gone, waiter, now, None if i else start_by)
                 for i in range(0, count, size)]
        with self._cond:
            if self._queued + count > self.policy.max_enqueued and self._queued:
                self.stats.refuse()
                raise Unavailable(f"server is overloaded: {self._queued} instances already queued "
                                  f"(limit {self.policy.max_enqueued}); retry shortly", retry_after=1)
            expected = self.expected_wait()
            if start_by is not None and self._queued and time.monotonic() + expected > start_by:
                self.stats.refuse()
                raise Unavailable(f"server is overloaded: the request would wait about {expected:.2f} s for "
                                  f"the {self._queued} instances queued ahead of it; retry shortly", retry_after=1)
            self._queue.extend(tasks)
            self._queued += count
            lead = not self._leading
            self._leading = True
            self._cond.notify()  # a leader waiting out batch_timeout counts what arrived
        while True:
            if lead:
                self._lead(waiter)
            elif not waiter.event.wait(max(0.0, deadline - time.monotonic())):
                with self._cond:
                    if waiter.remaining and not waiter.promoted:
                        waiter.gone = True
                        raise DeadlineExceeded("the request did not finish within its deadline "
                                               f"({time.monotonic() - deadline:+.2f} s past it)")
            if waiter.remaining == 0:
                break
            with self._cond:
                lead, waiter.promoted = waiter.promoted, False
                waiter.event.clear()
        for task in tasks:
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            return tasks[0].outputs
        return {name: np.concatenate([t.outputs[name] for t in tasks]) for name in tasks[0].outputs}

    def policy_dict(self) -> dict:
        p = self.policy
        return {"max_batch_size": p.max_batch_size, "batch_timeout_micros": round(p.batch_timeout * 1e6),
                "batch_rejoin_fraction": p.rejoin_fraction,
                "max_enqueued_batches": p.max_enqueued_batches, "allowed_batch_sizes": list(p.allowed_batch_sizes)}

    @property
    def queued(self) -> int:
        return self._queued

    def expected_wait(self) -> float:
        """Seconds a request arriving now would wait for the model: what is left of the call running now,
        then the instances queued ahead of it, each at the recent batches' call time per instance.

        The running call counts: where one call takes about as long as `SERVE_MAX_QUEUE_WAIT` (ResNet50's
        batch of 16 on one core, about 1.3 s), a request let in at its start would be refused only after
        its body was read and parsed, when the call ends past its start-by (docs/performance.md)."""
        running = self._call_ends - time.monotonic() if self._call_ends else 0.0
        return max(0.0, running) + self._queued * self._seconds_per_instance

    def wait_for_room(self, start_by: float) -> bool:
        """Wait, before the request's body is read, until a request arriving then would start by
        `start_by` (monotonic s); False once `start_by` passes first (then refuse it: 503).

        The wait is what paces an overload: refused at once, a client that retries at once (a load
        generator, a naive retry loop) sends its body again and again, and the worker spends itself
        receiving bodies it refuses (ResNet50 JSON at 4x the connections held 26% of the peak so);
        held here unread, as connections once waited in the accept queue, it costs nothing."""
        with self._room:
            while True:
                now = time.monotonic()
                if now + self.expected_wait() <= start_by:
                    return True
                if now >= start_by:
                    return False
                self._room.wait(start_by - now)

    # -- the leader -------------------------------------------------------------------------------
    def _lead(self, own: _Waiter) -> None:
        """Run batches until this thread's own slices are done, then hand over to the next in line."""
        try:
            while own.remaining:
                if self._gather is not None:
                    self._gather()
                tasks = self._next_batch()
                live = [task for task in tasks if self._still_wanted(task)]
                if live:
                    self._run_batch(live)
        finally:
            with self._cond:
                while self._queue and self._queue[0].waiter.gone:  # nobody to promote there
                    self._drop(self._queue.popleft())
                if self._queue:
                    successor = self._queue[0].waiter
                    successor.promoted = True
                    successor.event.set()
                else:
                    self._leading = False

    def _drop(self, task: _Task) -> None:
        self._queued -= task.size
        self.stats.drop()

    def _next_batch(self) -> list[_Task]:
        policy = self.policy
        with self._cond:
            if policy.batch_timeout > 0:
                until = time.monotonic() + policy.batch_timeout
                while self._queued < policy.max_batch_size:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            target, self._rejoin_target = min(self._rejoin_target, policy.max_batch_size), 0
            while self._queued < target:  # wait for the requests just answered (batch_rejoin_fraction)
                left = self._rejoin_until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            tasks, rows = [], 0
            while self._queue and (not tasks or rows + self._queue[0].size <= policy.max_batch_size):
                task = self._queue.popleft()
                tasks.append(task)
                rows += task.size
            self._queued -= rows
            return tasks

    def _still_wanted(self, task: _Task) -> bool:
        if task.waiter.gone:
            self.stats.drop()
            return False
        if task.start_by is not None and time.monotonic() > task.start_by:
            self.stats.refuse()
            task.finish(error=Unavailable("server is overloaded: the request waited its queue limit for the "
                                          "model; retry shortly", retry_after=1))
            return False
        if time.monotonic() > task.deadline:
            self.stats.drop()
            task.finish(error=DeadlineExceeded("the request's deadline passed while it was queued"))
            return False
        if task.client_gone is not None and task.client_gone():
            self.stats.drop()
            task.finish(error=DeadlineExceeded("the client closed the connection"))
            return False
        return True

    def _run_batch(self, tasks: list[_Task]) -> None:
        size = sum(task.size for task in tasks)
        padded = self.policy.padded(size)
        started = time.perf_counter()
        try:
            # Joining fails only where batch-mates differ in a dimension the model leaves open (None):
            # then each runs alone, below, as a failed batch does.
            rows = tasks[0].rows if len(tasks) == 1 else _join([t.rows for t in tasks])
            if padded > size:
                rows = _pad(rows, padded - size)
            self._call_ends = time.monotonic() + padded * self._seconds_per_instance
            try:
                outputs = self._runner(self._infer, rows) if self._runner else self._infer(rows)
            finally:
                self._call_ends = 0.0
        except Exception as exc:  # noqa: BLE001 - one request's bad values must not fail the others
            if len(tasks) == 1:
                tasks[0].finish(error=_as_api_error(exc))
            else:
                for task in tasks:  # find the culprit: each request alone
                    self._run_batch([task])
            return
        seconds = time.perf_counter() - started
        if self.policy.rejoin_fraction:
            # Closed-loop clients send again on their answer: without this wait they keep arriving while
            # the other half's batch runs, and batches alternate at half the size they could have.
            with self._cond:  # _queued moves under it as requests arrive
                self._rejoin_target = self._queued + size
                self._rejoin_until = time.monotonic() + self.policy.rejoin_fraction * seconds
        per_instance = seconds / size
        self._seconds_per_instance = per_instance if not self._seconds_per_instance else \
            0.8 * self._seconds_per_instance + 0.2 * per_instance
        self.stats.record(len(tasks), size, padded, seconds, [started - task.queued_at for task in tasks],
                          self._queued)
        with self._room:
            self._room.notify_all()
        offset = 0
        for task in tasks:
            n = task.size
            task.finish({name: value[offset:offset + n] for name, value in outputs.items()})
            offset += n


def _count(batch: Inputs) -> int:
    """The instances in a request's batch: its first dimension, the same for every input."""
    if not isinstance(batch, dict):
        return len(batch)
    counts = {name: len(value) for name, value in batch.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"a batch needs one or more inputs with the same number of instances, got {counts}")
    return next(iter(counts.values()))


def _rows(batch: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(batch, dict):
        return {name: value[start:stop] for name, value in batch.items()}
    return batch[start:stop]


def _join(parts: list[Inputs]) -> Inputs:
    if isinstance(parts[0], dict):
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return np.concatenate(parts)


def _pad(batch: Inputs, extra: int) -> Inputs:
    """Blank instances appended (to reach an allowed batch size): zeros, or empty strings (b"") for a
    string input (an object array of bytes, whose np.zeros would hold the integer 0, which TensorFlow
    cannot take as tf.string); their outputs are never returned."""
    if isinstance(batch, dict):
        return {name: _pad(value, extra) for name, value in batch.items()}
    shape = (extra, *batch.shape[1:])
    padding = np.full(shape, b"", dtype=object) if batch.dtype == object else np.zeros(shape, batch.dtype)
    return np.concatenate([batch, padding])


class BatchStats:
    """Counters the benchmark and metadata read; plain ints, updated by the inference thread only
    (`refuse` under the batcher's lock). Its methods are the hooks api/metrics.py extends."""

    def __init__(self):
        self.batches = self.instances = self.padded = self.requests = 0
        self.refused = self.dropped = 0
        self.busy_seconds = 0.0

    def record(self, requests: int, instances: int, padded: int, seconds: float,
               queue_waits: list[float] = (), still_queued: int = 0) -> None:
        """One compiled call: `seconds` it took, how long each of its slices waited, what still waits."""
        self.batches += 1
        self.requests += requests
        self.instances += instances
        self.padded += padded
        self.busy_seconds += seconds

    def refuse(self) -> None:
        self.refused += 1

    def drop(self) -> None:
        self.dropped += 1

    def as_dict(self) -> dict:
        return {"batches": self.batches, "instances": self.instances, "requests": self.requests,
                "mean_batch_size": round(self.instances / self.batches, 2) if self.batches else 0.0,
                "padded_instances": self.padded - self.instances, "refused_requests": self.refused,
                "dropped_requests": self.dropped, "busy_seconds": round(self.busy_seconds, 3)}


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):  # the runtime's own, e.g. the model refusing these values (400)
        return exc
    # Anything else is ours, logged with its trace, never sent.
    log.exception("inference failed")
    return InferenceFailed("inference failed; the error is logged on the server", status=500)


def in_gevent_worker() -> bool:
    """This process runs gevent's event loop with its threads monkey-patched (a gevent worker)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


def event_loop_hooks(inline: bool) -> tuple[Callable | None, Callable | None]:
    """The batcher's `(runner, gather)` in a gevent worker; `(None, None)` elsewhere (gthread, tests).

    `gather()` yields to the loop before a batch is formed, so that every request already read in this
    turn of the loop is parsed and queued first and joins the batch (the loop serves a greenlet at a
    time: without it the first request would run alone). `runner(fn, *args)` runs the compiled call on
    a native thread of its own, one call at a time (TensorFlow Serving's `num_batch_threads: 1`), while
    the loop goes on; with `inline` the loop runs it itself: for a call of a millisecond or less, the
    GIL hand-offs to and from another thread cost more than the call (each can wait out Python's 5 ms
    switch interval while the loop holds the GIL), and a stalled loop of that length costs nothing.
    """
    if not in_gevent_worker():
        return None, None
    import gevent
    from gevent.threadpool import ThreadPool

    def gather() -> None:
        gevent.sleep(0)

    if inline:
        return None, gather
    pool = ThreadPool(1)

    def run(fn, *args):
        return pool.apply(fn, args)

    return run, gather


def native_runner() -> Callable | None:
    """In a gevent worker, `run(fn, *args)` on a native thread of its own; elsewhere None."""
    return event_loop_hooks(inline=False)[0]
