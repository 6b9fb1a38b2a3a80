"""`keras-serving worker`: one model per process, pulling jobs from the broker through one compiled call.

    keras-serving worker [--consumer NAME] [--metrics-port PORT]

Start-up is a gunicorn worker's: the same registry loads and warms the model (safe loader, compiled
runtime, batcher) after the process starts. Then, until SIGTERM or SIGINT:

1. take up to SERVE_QUEUE_PULL_JOBS jobs (those whose worker died first), waiting up to
   SERVE_QUEUE_POLL_SECONDS when there are none;
2. dead-letter those delivered more than SERVE_QUEUE_MAX_DELIVERIES times (a job that kills its worker:
   its record says failed) and unreadable messages; acknowledge those that already have an answer (a
   crash came between writing it and acknowledging); mark those past their TTL expired, never run;
3. run the rest as one compiled call per model version (api/queue/execute.py): input that fails the
   checks is failed at once with the API's error, never retried;
4. write each answer (the first write wins), then acknowledge; a failure of the server's own (5xx)
   leaves the job unacknowledged, for another delivery.

While a batch runs, a thread renews the lease on the jobs held every third of SERVE_QUEUE_LEASE_SECONDS
(for at most SERVE_QUEUE_MAX_JOB_SECONDS), so no other worker takes a long job. SIGTERM stops the
taking: what is held is finished, written and acknowledged, then the process exits 0. A broker that
goes away is waited for (backoff up to 5 s); results already computed are written once it is back.
One JSON log line per job ends with its id, outcome, delivery and latency.
"""
import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time

from api.logs import JsonFormatter
from api.settings import Settings

log = logging.getLogger("api.queue.worker")


class Worker:
    """The pull loop over a broker and a loaded registry. `protection` (optional): an object with
    `busy(bool)`, told when the worker starts and stops holding jobs (AWS scale-in protection)."""

    def __init__(self, broker, registry, settings: Settings, consumer: str | None = None, protection=None):
        from api.queue.metrics import QueueMetrics
        self.broker, self.registry, self.settings = broker, registry, settings
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = QueueMetrics(registry.name)
        self.protection = protection
        self.stopping = threading.Event()
        self._held: list = []
        self._held_since = 0.0
        self._lock = threading.Lock()

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Pull and run until `stop()`; returns the exit status (0: drained)."""
        keeper = threading.Thread(target=self._keep_leases, name="lease-keeper", daemon=True)
        keeper.start()
        pause = 0.0
        while not self.stopping.is_set():
            try:
                self.step()
                pause = 0.0
            except self._unavailable as exc:
                pause = min(5.0, max(0.2, pause * 2))
                log.warning("broker unavailable, retrying in %.1f s: %s", pause, exc)
                self.stopping.wait(pause)
        self.broker.close()
        return 0

    def stop(self, *_) -> None:
        """Stop taking jobs; the ones held are finished first (a signal handler)."""
        self.stopping.set()

    def step(self) -> int:
        """One pull, run to completion; the number of jobs taken."""
        deliveries = self.broker.receive(self.consumer, self.settings.queue_pull_jobs, self.settings.queue_poll_seconds)
        if not deliveries:
            if self.protection:
                self.protection.busy(False)
            return 0
        if self.protection:
            self.protection.busy(True)
        self._hold(deliveries)
        try:
            self._handle(deliveries)
        finally:
            self._hold([])
        return len(deliveries)

    def _handle(self, deliveries: list) -> None:
        now = time.time()
        for delivery in deliveries:
            self.metrics.delivered(delivery.deliveries > 1)
        poison = [d for d in deliveries if d.job is None or d.deliveries > self.settings.queue_max_deliveries]
        for delivery in poison:
            self._dead_letter(delivery)
        live = [d for d in deliveries if d not in poison]
        if not live:
            return
        records = self.broker.start(live, now)
        done = [d for d, record in zip(live, records) if record.state in ("succeeded", "failed", "expired")]
        if done:
            self._retrying(self.broker.queue.ack, done)
            for delivery in done:
                self._log(delivery, "duplicate", 0, kept=False)
        todo = [(d, r) for d, r in zip(live, records) if d not in done]
        expired = [(d, r) for d, r in todo if d.job.expires < now]
        runnable = [(d, r) for d, r in todo if d.job.expires >= now]
        finished = [(d, r.finish("expired", 410, _expired_answer(d.job))) for d, r in expired]
        finished += self._run(runnable)
        self._write(finished)

    def _run(self, runnable: list) -> list:
        """Run the jobs; the (delivery, terminal record) pairs to write. Server-side failures are left out
        (unacknowledged: delivered again once the lease runs out)."""
        from api.queue.execute import run_jobs
        if not runnable:
            return []
        outcomes = run_jobs(self.registry, self.settings, [d.job for d, _ in runnable], self.settings.queue_max_job_seconds)
        finished = []
        for (delivery, record), outcome in zip(runnable, outcomes):
            if outcome.retry:
                self.metrics.left_for_retry()
                self._log(delivery, "retry", outcome.status, kept=False)
                continue
            finished.append((delivery, record.finish(outcome.state, outcome.status, outcome.answer)))
        return finished

    def _write(self, finished: list) -> None:
        if not finished:
            return
        kept = self._retrying(self.broker.complete, finished)
        now = time.time()
        for (delivery, record), won in zip(finished, kept):
            self.metrics.ended(record.state, now - delivery.job.submitted)
            self._log(delivery, record.state, record.status, kept=won)

    def _dead_letter(self, delivery) -> None:
        """Out of the queue for good; the record says failed (unless the job already had its answer: the
        store keeps the first terminal write)."""
        from api.protocols.codecs import dump_json
        from api.queue.jobs import Record
        record = None
        if delivery.job is None:
            reason = f"unreadable message: {delivery.error}"
        else:
            reason = (f"dead-lettered after {delivery.deliveries - 1} deliveries: the job killed or stalled its "
                      f"worker each time (SERVE_QUEUE_MAX_DELIVERIES={self.settings.queue_max_deliveries})")
            record = Record.queued(delivery.job).finish("failed", 500, dump_json({"error": reason}))
        self._retrying(self.broker.dead_letter, delivery, record, reason)
        self.metrics.ended("dead_lettered")
        self._log(delivery, "dead_lettered", 500, kept=record is not None, reason=reason)

    # -- leases -----------------------------------------------------------------------------------
    def _hold(self, deliveries: list) -> None:
        with self._lock:
            self._held, self._held_since = list(deliveries), time.monotonic()

    def _keep_leases(self) -> None:
        """Renew the lease on what is held, every third of it, up to SERVE_QUEUE_MAX_JOB_SECONDS; and
        sample the queue's figures for the metrics now and then."""
        every = self.settings.queue_lease_seconds / 3
        sampled = 0.0
        while True:
            time.sleep(every)
            with self._lock:
                held, since = list(self._held), self._held_since
            try:
                if held and time.monotonic() - since < self.settings.queue_max_job_seconds:
                    lost = len(held) - len(self.broker.extend(self.consumer, held))
                    if lost:
                        log.warning("%d job leases had run out and were taken by another worker", lost)
                if time.monotonic() - sampled > 5:
                    sampled = time.monotonic()
                    self.metrics.sampled(self.broker.stats())
            except self._unavailable as exc:
                log.warning("could not renew leases: %s", exc)
            except Exception:  # the keeper must outlive any one bad call, or long jobs lose their leases
                log.exception("lease keeper")

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def _unavailable(self):
        from api.queue.broker import BrokerUnavailable
        return BrokerUnavailable

    def _retrying(self, call, *args):
        """`call(*args)`, again while the broker is away (up to SERVE_QUEUE_MAX_JOB_SECONDS): a result
        computed is worth writing once Redis is back, rather than the job being run again."""
        deadline, pause = time.monotonic() + self.settings.queue_max_job_seconds, 0.1
        while True:
            try:
                return call(*args)
            except self._unavailable as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("broker unavailable while writing results, retrying: %s", exc)
                time.sleep(pause)
                pause = min(5.0, pause * 2)

    def _log(self, delivery, outcome: str, status: int, kept: bool, reason: str = "") -> None:
        job = delivery.job
        fields = {"job_id": job.id if job else None, "model": job.model if job else self.registry.name,
                  "version": job.version if job else None, "outcome": outcome, "status": status,
                  "delivery": delivery.deliveries, "written": kept, "consumer": self.consumer,
                  "latency_s": round(time.time() - job.submitted, 4) if job else None}
        if reason:
            fields["reason"] = reason
        log.info("job %s %s", fields["job_id"], outcome, extra={"fields": fields})


def _expired_answer(job) -> bytes:
    from api.protocols.codecs import dump_json
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.expires))
    return dump_json({"error": f"job expired: not started within its time to live (it expired at {when})"})


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keras-serving worker", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Settings: the SERVE_QUEUE_* variables (docs/async.md).")
    parser.add_argument("--consumer", help="this worker's name in the consumer group (default: host-pid)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve Prometheus metrics on this port (0: off; under serve-async the stack's "
                             "/metrics already sums the workers')")
    args = parser.parse_args(argv)
    settings = Settings()
    if settings.queue_backend == "none":
        print("keras-serving worker: SERVE_QUEUE_BACKEND is 'none': set 'redis' or 'sqs'", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    # Imported here, not at the top: `--help` and a misconfiguration answer without numpy or TensorFlow.
    from api.queue.broker import open_broker
    from api.queue.protection import protection_for
    from api.serving.registry import ModelRegistry

    if args.metrics_port:
        from prometheus_client import start_http_server
        start_http_server(args.metrics_port, addr="0.0.0.0")  # nosec B104: a pod's own port, scraped by Prometheus
    worker = None
    signal.signal(signal.SIGTERM, lambda *_: worker.stop() if worker else sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: worker.stop() if worker else sys.exit(0))
    registry = ModelRegistry(settings)
    registry.load(announce=False)  # never the HTTP readiness markers: those are gunicorn's workers'
    if not registry.ready:
        log.error("worker cannot start: %s", registry.error)
        return 1
    worker = Worker(open_broker(settings), registry, settings, args.consumer, protection_for(settings))
    log.info("worker ready", extra={"fields": {"model": registry.name, "versions": registry.versions(),
                                               "backend": settings.queue_backend, "consumer": worker.consumer}})
    status = worker.run()
    log.info("worker stopped", extra={"fields": {"consumer": worker.consumer}})
    return status


if __name__ == "__main__":
    sys.exit(main())
