"""The model a worker serves: its loaded versions and the worker's readiness.

Life cycle of a worker: `loading` (versions load and warm up) -> `ready` -> `draining` (stopping:
readiness answers 503 so load balancers stop sending, requests in flight finish). `failed` keeps
the worker up and says why on `/ready`, instead of a crash loop that hides the reason.
"""
import gc
import logging
import os
import platform
import threading
from dataclasses import dataclass

from api import metrics
from api.batching import Batcher, event_loop_hooks, native_runner
from api.errors import NotFound, Unavailable
from api.model.signature import ModelSignature
from api.model.store import StoreError, list_versions, read_version, read_version_labels, select_versions
from api.process.markers import mark_ready, unmark
from api.settings import Settings

log = logging.getLogger("api.registry")


@dataclass(frozen=True)
class ServedVersion:
    """One model version as the worker serves it, built in one place (`ModelRegistry._load_versions`):
    its signature (what the protocols check requests against), its runtime (the compiled model; its
    `describe()` and `call_seconds`) and its batcher (every request goes through `batcher.run`)."""
    signature: ModelSignature
    runtime: object  # api.runtime.ModelRuntime: not imported here, it imports TensorFlow
    batcher: Batcher


class ModelRegistry:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.model_name
        self.state = "loading"
        self.error = ""
        self.loads = 0
        self._served: dict[int, ServedVersion] = {}
        self.labels: dict[str, int] = {}  # version labels (store's version_labels.json): label -> version

    # -- life cycle -------------------------------------------------------------------------------
    def load(self, run=None, announce: bool = True) -> None:
        """Load and warm every selected version; never raises, the outcome is in `state`.

        `run(fn, *args)` runs the TensorFlow work (import, load, trace, warm-up) elsewhere: a native
        thread in a gevent worker, so the loop answers 503 "still loading" meanwhile. None: right here.
        """
        try:
            self._served = self._load_versions(run or _here)
        except Exception as exc:  # any failure must surface on /ready, not kill the worker silently
            self.state, self.error = "failed", str(exc)
            log.error("model %s failed to load: %s", self.name, exc)
            return
        # TensorFlow and Keras leave millions of long-lived objects: a full collection walking them
        # stalls the worker for tens to hundreds of milliseconds (a p99 spike under load). Frozen, the
        # collector skips them; what requests allocate is still collected.
        gc.collect()
        gc.freeze()
        if self.state == "loading":
            self.state = "ready"
            if announce:
                self.announce_ready()

    def announce_ready(self) -> None:
        """Tell the master (readiness marker) and the metrics that this worker takes traffic; a worker
        that binds a socket of its own after loading announces once it listens (gunicorn.conf.py)."""
        if self.state == "ready":
            mark_ready(self.settings.run_dir)
            metrics.set_ready(True)

    def start(self, announce: bool = True):
        """Load in the background; returns what to `join(seconds)` and ask `is_alive()`."""
        run = native_runner()
        if run is None:
            thread = threading.Thread(target=self.load, args=(None, announce), name="model-load", daemon=True)
            thread.start()
            return thread
        import gevent  # a gevent worker: a greenlet waits on the native thread, the loop serves on
        return _Loading(gevent.spawn(self.load, run, announce))

    def drain(self) -> None:
        """Stop taking new work; queued requests still run (the batchers keep going until exit)."""
        self.state = "draining"
        unmark(self.settings.run_dir)
        metrics.set_ready(False)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # -- lookup -----------------------------------------------------------------------------------
    def get(self, name: str, version: int | None = None) -> ServedVersion:
        """The version a request names (None: the latest loaded), or the error the request ends in:
        NotFound (404) for another model or an unloaded version, Unavailable (503) while loading or
        after a failed load."""
        if name != self.name:
            raise NotFound(f"model '{name}' is not served here (this server serves '{self.name}')")
        if self.state == "loading":
            raise Unavailable(f"model '{name}' is still loading", retry_after=2)
        if self.state == "failed":
            raise Unavailable(f"model '{name}' failed to load: {self.error}", retry_after=30)
        if version is None:
            return self._served[max(self._served)]
        if version not in self._served:
            raise NotFound(f"model '{name}' has no version {version} loaded "
                           f"(loaded: {', '.join(map(str, sorted(self._served)))})")
        return self._served[version]

    def version_for_label(self, name: str, label: str) -> int:
        """The version a label names (TF Serving's `/labels/<label>` routes): NotFound (404) naming an
        unknown label and the labels there are; the version itself is then looked up as any other."""
        self.get(name)  # another model: 404; loading or failed: 503
        if label not in self.labels:
            known = ", ".join(sorted(self.labels)) or "none"
            raise NotFound(f"model '{name}' has no version labelled '{label}' (labels: {known})")
        return self.labels[label]

    def versions(self) -> list[int]:
        return sorted(self._served)

    # -- internals --------------------------------------------------------------------------------
    def _load_versions(self, run) -> dict:
        available = list_versions(self.settings.model_store, self.name)
        if not available:
            raise StoreError(f"no versions of '{self.name}' under {self.settings.model_store}")
        selected = select_versions(available, self.settings.model_versions)
        self.labels = read_version_labels(self.settings.model_store, self.name)
        # TensorFlow's import asks `platform` (cached), which spawns a process: do it here, where a
        # gevent worker can; its patched subprocess does not work on a native thread.
        platform.processor()
        # One call for all of TensorFlow: Keras keeps its state (dtype policy) per thread.
        loaded = run(_load_runtimes, self.settings, self.name, selected, self._warmup_sizes())
        served = {}
        for runtime in loaded:
            number, device = runtime.signature.version, runtime.device
            runner, gather = event_loop_hooks(inline=runtime.call_seconds * 1e6 <= self.settings.inline_call_micros)
            batcher = Batcher(runtime.infer, self.settings.batch_policy, f"{self.name}-{number}",
                              metrics.BatchMetrics(self.name, number), runner, gather)
            metrics.model_loaded(self.name, number, device, runtime.load_seconds, runtime.warmup_seconds)
            self.loads += 1
            log.info("model loaded name=%s version=%d pid=%d device=%s load_s=%.2f warmup_s=%.2f call_ms=%.2f "
                     "inference=%s", self.name, number, os.getpid(), device, runtime.load_seconds,
                     runtime.warmup_seconds, runtime.call_seconds * 1e3, batcher.mode)
            if runtime.call_seconds > self.settings.max_queue_wait / 2:
                # A queue shorter than two calls of the largest batch cannot keep the next batch ready
                # while one runs: under load, requests are let in, parsed, then refused when the call
                # ahead of them ends past their start-by (ResNet50 on one core, docs/performance.md).
                log.warning("a call at batch %d takes %.2f s, more than half of SERVE_MAX_QUEUE_WAIT "
                            "(%g s): under load the model will idle between batches and refuse requests it "
                            "could serve; raise SERVE_MAX_QUEUE_WAIT or lower SERVE_MAX_BATCH_SIZE",
                            max(self._warmup_sizes()), runtime.call_seconds, self.settings.max_queue_wait)
            served[number] = ServedVersion(runtime.signature, runtime, batcher)
        return served

    def _warmup_sizes(self) -> tuple[int, ...]:
        """Every padded size when padding is on (each is its own XLA program), else the configured ones
        plus the largest batch, so the first full batch under load allocates nothing new."""
        policy = self.settings.batch_policy
        if policy.allowed_batch_sizes:
            return policy.allowed_batch_sizes
        return tuple(sorted({*self.settings.warmup_batches, policy.max_batch_size}))


def _load_runtimes(settings: Settings, name: str, numbers: list[int], warmup: tuple[int, ...]) -> list:
    from api.runtime import ModelRuntime, configure_tensorflow  # TensorFlow: in the worker only

    device = configure_tensorflow(settings)
    runtimes = []
    for number in numbers:
        runtime = ModelRuntime.from_settings(read_version(settings.model_store, name, number), device, settings)
        runtime.warm_up(warmup)
        runtimes.append(runtime)
    return runtimes


def _here(fn, *args):
    return fn(*args)


class _Loading:
    """A loading greenlet, seen as a thread: `is_alive()`, `join(seconds)`."""

    def __init__(self, greenlet):
        self._greenlet = greenlet

    def is_alive(self) -> bool:
        return not self._greenlet.dead

    def join(self, timeout: float | None = None) -> None:
        self._greenlet.join(timeout)
