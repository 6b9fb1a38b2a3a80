"""The queue's Prometheus metrics, written by the workers and summed with the HTTP workers' on `/metrics`.

`keras-serving serve-async` starts the workers with the stack's PROMETHEUS_MULTIPROC_DIR, so one scrape
of the stack reads these too (counters and histograms summed over workers, dead ones included). The
broker's own figures (depth, oldest age) are sampled by every worker: the most recent sample wins, so a
killed worker's last sample never outlives a live one's. Elsewhere (Kubernetes) `keras-serving worker
--metrics-port` serves them itself.
"""
from prometheus_client import Counter, Gauge, Histogram

from api.queue.broker import QueueStats

PREFIX = "keras_serving_"
LATENCY_BUCKETS = (.01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

JOBS = Counter(PREFIX + "jobs", "Jobs the workers ended, by outcome: succeeded, failed (the answer an "
               "error, as :predict would give), expired (not started within its TTL), dead_lettered (too many "
               "deliveries), duplicate (delivered again after its answer was written: acknowledged, not run).",
               ["model", "outcome"])
DELIVERIES = Counter(PREFIX + "job_deliveries", "Jobs received by the workers; `redelivery` is true for a "
                     "job delivered before (its worker died, or its lease ran out).", ["model", "redelivery"])
RETRIED = Counter(PREFIX + "jobs_left_for_retry", "Jobs a worker left unacknowledged after a failure of its "
                  "own (5xx: overload, deadline, the model raising), for another delivery.", ["model"])
LATENCY = Histogram(PREFIX + "job_latency_seconds", "Time from a job's submit to its answer being written.",
                    ["model"], buckets=LATENCY_BUCKETS)
QUEUED = Gauge(PREFIX + "queue_jobs", "Jobs in the broker: waiting (for a worker), in_flight (taken, not "
               "acknowledged), dead (in the dead-letter queue); sampled by the workers.", ["model", "state"],
               multiprocess_mode="mostrecent")
OLDEST = Gauge(PREFIX + "queue_oldest_job_age_seconds", "Age of the oldest job waiting or in flight (Redis; "
               "SQS: CloudWatch's ApproximateAgeOfOldestMessage).", ["model"], multiprocess_mode="mostrecent")


class QueueMetrics:
    """One model's queue metrics, label children made once."""

    def __init__(self, model: str):
        self.model = model
        self._latency = LATENCY.labels(model)

    def delivered(self, redelivery: bool) -> None:
        DELIVERIES.labels(self.model, "true" if redelivery else "false").inc()

    def ended(self, outcome: str, latency: float | None = None) -> None:
        JOBS.labels(self.model, outcome).inc()
        if latency is not None:
            self._latency.observe(latency)

    def left_for_retry(self) -> None:
        RETRIED.labels(self.model).inc()

    def sampled(self, stats: QueueStats) -> None:
        for state in ("waiting", "in_flight", "dead"):
            QUEUED.labels(self.model, state).set(getattr(stats, state))
        if stats.oldest_age is not None:
            OLDEST.labels(self.model).set(stats.oldest_age)
        elif stats.waiting + stats.in_flight == 0:
            OLDEST.labels(self.model).set(0)
