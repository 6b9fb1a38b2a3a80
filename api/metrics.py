"""Prometheus metrics, summed over every gunicorn worker (prometheus_client's multiprocess mode).

Each process writes its samples to mmapped files under `PROMETHEUS_MULTIPROC_DIR`, which
gunicorn.conf.py sets (to `<run_dir>/metrics`) before anything imports prometheus_client, so the
workers it forks inherit it; one scrape of `/metrics`, whichever worker answers, reads them all.
Without the variable (the app in-process, in tests) the metrics live in this process alone.

Never imports TensorFlow: the master imports this module too (it counts worker exits).
Every name and its TensorFlow Serving and Triton equivalent: docs/operations.md.
"""
import os
import shutil
import subprocess

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess, values)

from api.batching import BatchStats

if getattr(values.ValueClass, "_multiprocess", False):  # what prometheus_client chose at its import
    # Every update of a multiprocess value first asks the process's id, to notice a fork, and Linux's
    # getpid() is a system call each time (glibc stopped caching it in 2.25): three a request, 1.2% of
    # a worker's CPU at 64 connections (py-spy, docs/performance.md). The id is kept here, renewed in
    # the child at each fork, and given through MultiProcessValue's own `process_identifier` parameter.
    _pid = [os.getpid()]
    os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _pid[0])

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "keras_serving_"
LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

REQUESTS = Counter(PREFIX + "requests", "HTTP requests answered by the app, by route template (the Flask "
                   "url rule; `unmatched` for 404s), method and status.", ["route", "method", "status"])
REQUEST_SECONDS = Histogram(PREFIX + "request_duration_seconds", "Time the app took to answer a request, "
                            "from the start of its handling to its response.", ["route"], buckets=LATENCY_BUCKETS)
INFERENCE_SECONDS = Histogram(PREFIX + "inference_duration_seconds", "Time of one compiled model call "
                              "(one batch).", ["model", "version"], buckets=LATENCY_BUCKETS)
QUEUE_SECONDS = Histogram(PREFIX + "queue_duration_seconds", "Time a request slice waited in the batcher's "
                          "queue before its batch started.", ["model", "version"], buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram(PREFIX + "batch_size", "Instances in one compiled call, before padding.",
                       ["model", "version"], buckets=BATCH_BUCKETS)
INSTANCES = Counter(PREFIX + "inferred_instances", "Instances (rows) inferred; rate() of it is instances "
                    "per second.", ["model", "version"])
REFUSED = Counter(PREFIX + "refused_requests", "Requests the batcher refused with 503 because its queue "
                  "was full.", ["model", "version"])
DROPPED = Counter(PREFIX + "dropped_requests", "Request slices dropped before inference: deadline passed or "
                  "client gone.", ["model", "version"])
QUEUED = Gauge(PREFIX + "queued_instances", "Instances waiting in the batchers, summed over live workers, "
               "as of each worker's last batch.", ["model", "version"], multiprocess_mode="livesum")
LOAD_SECONDS = Gauge(PREFIX + "model_load_seconds", "Time to load and compile the model version, slowest "
                     "live worker.", ["model", "version"], multiprocess_mode="livemax")
WARMUP_SECONDS = Gauge(PREFIX + "model_warmup_seconds", "Time of the warm-up calls, slowest live worker.",
                       ["model", "version"], multiprocess_mode="livemax")
MODEL_INFO = Gauge(PREFIX + "model_info", "1 for each model version a live worker serves, on that device.",
                   ["model", "version", "device"], multiprocess_mode="livemax")
READY = Gauge(PREFIX + "workers_ready", "Workers whose model is loaded, warm and not draining.",
              multiprocess_mode="livesum")
WORKER_EXITS = Counter(PREFIX + "worker_exits", "gunicorn workers that exited (counted by the master): "
                       "crashes, timeouts, max_requests and reload restarts, shutdowns.")


def worker_exited(pid: int) -> None:
    """In the master: the dead worker's live gauges go; its counters and histograms stay in the sums."""
    WORKER_EXITS.inc()
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(pid)


def exposition() -> tuple[bytes, str]:
    """The body of `/metrics` and its content type."""
    if os.environ.get(ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    return body + _gpu_samples(), CONTENT_TYPE_LATEST


class RequestMetrics:
    """Two updates per request, with the label children cached so that the hot path skips labels()."""

    def __init__(self):
        self._counters: dict[tuple, object] = {}
        self._timers: dict[str, object] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(route, method, str(status))
        timer = self._timers.get(route)
        if timer is None:
            timer = self._timers[route] = REQUEST_SECONDS.labels(route)
        counter.inc()
        timer.observe(seconds)


class BatchMetrics(BatchStats):
    """The batcher's own counters, exported as they are recorded (one model version)."""

    def __init__(self, model: str, version: int):
        super().__init__()
        labels = (model, str(version))
        self._inference, self._queue = INFERENCE_SECONDS.labels(*labels), QUEUE_SECONDS.labels(*labels)
        self._size, self._instances = BATCH_SIZE.labels(*labels), INSTANCES.labels(*labels)
        self._queued, self._refused, self._dropped = QUEUED.labels(*labels), REFUSED.labels(*labels), \
            DROPPED.labels(*labels)

    def record(self, requests, instances, padded, seconds, queue_waits=(), still_queued=0) -> None:
        super().record(requests, instances, padded, seconds, queue_waits, still_queued)
        self._inference.observe(seconds)
        self._size.observe(instances)
        self._instances.inc(instances)
        for wait in queue_waits:
            self._queue.observe(wait)
        self._queued.set(still_queued)

    def refuse(self) -> None:
        super().refuse()
        self._refused.inc()

    def drop(self) -> None:
        super().drop()
        self._dropped.inc()


def model_loaded(model: str, version: int, device: str, load_seconds: float, warmup_seconds: float) -> None:
    MODEL_INFO.labels(model, str(version), device).set(1)
    LOAD_SECONDS.labels(model, str(version)).set(load_seconds)
    WARMUP_SECONDS.labels(model, str(version)).set(warmup_seconds)


def set_ready(ready: bool) -> None:
    READY.set(1 if ready else 0)


# -- GPUs: read at scrape time, for the whole host, so they need no multiprocess files ------------
GPU_QUERY = "index,memory.used,memory.total,utilization.gpu"


def _gpu_samples() -> bytes:
    """`nvidia-smi`'s view of every GPU on the host; nothing at all where there is none (CPU hosts)."""
    if shutil.which("nvidia-smi") is None:
        return b""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return b""
    return gpu_exposition(out).encode()


def gpu_exposition(csv: str) -> str:
    """Prometheus text for nvidia-smi's CSV rows: `index, used MiB, total MiB, utilisation %`."""
    rows = [[field.strip() for field in line.split(",")] for line in csv.splitlines() if line.strip()]
    rows = [row for row in rows if len(row) == 4 and all(f.replace(".", "", 1).isdigit() for f in row)]
    if not rows:
        return ""
    families = (("gpu_memory_used_bytes", "GPU memory in use (all processes).", 1, 2 ** 20),
                ("gpu_memory_total_bytes", "GPU memory in all.", 2, 2 ** 20),
                ("gpu_utilization_ratio", "Share of the last sample period a kernel ran on the GPU.", 3, 0.01))
    lines = []
    for name, meaning, column, scale in families:
        lines += [f"# HELP {PREFIX}{name} {meaning}", f"# TYPE {PREFIX}{name} gauge"]
        lines += [f'{PREFIX}{name}{{gpu="{row[0]}"}} {float(row[column]) * scale!r}' for row in rows]
    return "\n".join(lines) + "\n"
