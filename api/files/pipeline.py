"""The job: read and check -> infer -> write, threads joined by small bounded queues.

    reader thread  -- block i to queue i % C -->  C model threads (the main thread and C - 1 more):
                                                  the compiled model, one call each at a time
                   -- queue i % C ------------->  writer thread: shards, errors, manifest

C (`calls`) calls of the model are in flight at once, each with its share of TensorFlow's intra-op
threads: on a CPU, two single-threaded calls side by side get more from two cores than one call split
over both (the split waits on its slower half, and the call's own Python and small ops leave cores idle;
measured in docs/batch.md). Blocks are dealt to the model threads in turn and collected in the same
turn, so the output order is the input order with no reordering. Each stage holds one block at a time
and each queue at most max(1, batch_queue_batches // C), so at most 2 + C x (2 x max(1,
batch_queue_batches // C) + 1) blocks of `batch_size` rows are in memory whatever the input's size (8
for the defaults: two calls, queues of 2). The model's kernels release the GIL, so reading, checking and
writing the neighbouring blocks overlap the model's calls.

Blocks never straddle a shard (`batch_shard_rows` input rows, counted over all inputs in order) nor a
file, so the rows of a shard, and hence the bytes of its file, depend only on the input: what makes a
resumed run's output the same as an uninterrupted one's. SIGTERM or SIGINT stop the reader at the end of
the shard it is in; the shards before are committed and the job exits 143 or 130 (a second signal ends
it at once; --resume redoes that shard).
"""
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from api.errors import ApiError
from api.files import numparse
from api.files import rows as checks
from api.files.columns import RESERVED, Layout
from api.files.formats import Formatter
from api.files.progress import Display, Meter, summary_line
from api.files.readers import open_reader
from api.files.shards import Output
from api.files.sources import Source, UsageError
from api.protocols import tfserving
from api.settings import Settings

EXIT_OK, EXIT_ERROR_RATE, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
AUTO_BATCH_ROWS = 512
CALLS = 2  # model calls in flight at once, each with cores // CALLS intra-op threads (see model_calls)
AUTO_BATCH_BYTES = 32 * 1024 * 1024
_DONE = object()


@dataclass(frozen=True)
class Options:
    """What the command line asks (api/files/job.py); None: the setting's value."""
    output: Path
    model: str
    version: str | None = None
    output_format: str = "jsonl"
    key_field: str | None = None
    keep: tuple[str, ...] = ()
    top_k: int | None = None
    batch_size: int = 0
    shard_rows: int = 100_000
    max_error_rate: float = 1.0
    resume: bool = False
    quiet: bool = False


def check_options(options: Options, sources: list[Source]) -> None:
    """What can be refused before the model loads (UsageError)."""
    for name in (options.key_field, *options.keep):
        if name in RESERVED:
            raise UsageError(f"'{name}' names a field of the output rows ({', '.join(RESERVED)}); "
                             "carry another column")
    if (options.key_field or options.keep) and any(s.format in ("images", "file-list") for s in sources):
        raise UsageError("--key-field and --keep-columns take rows with fields; an image's row is its path")


class Job:
    """One run over `sources` with a loaded `runtime` (api/runtime.ModelRuntime); `run()` returns the exit
    status. `cpus`: the cores it may use (for the summary)."""

    def __init__(self, options: Options, settings: Settings, sources: list[Source], runtime, cpus: list[int],
                 calls: int = 1):
        self.options, self.settings, self.sources, self.runtime, self.cpus = options, settings, sources, runtime, cpus
        self.calls = max(1, calls)
        signature = runtime.signature
        self.layout = Layout(signature.inputs, options.key_field, options.keep, settings.max_body_bytes)
        try:
            top_k = tfserving.parse_top_k(options.top_k, settings.max_top_k, signature)
        except ApiError as exc:
            raise UsageError(f"--top-k: {exc.message}") from None
        self.batch = options.batch_size or auto_batch_size(signature)
        # JSON Lines numbers: numparse's compiled parser loaded (numba's import, its cache) beside the warm-up
        loading = None
        if self.layout.compiled_numbers and any(source.format == "jsonl" for source in sources):
            loading = threading.Thread(target=numparse.available, name="predict-files-numparse", daemon=True)
            loading.start()
        runtime.warm_up((self.batch,))  # the first call's allocations are not the job's rate (as serving warms)
        if loading is not None:
            loading.join()
        self.block_limits = settings.model_copy(update={
            "max_instances": max(settings.max_instances, self.batch),
            "max_tensor_elements": settings.max_tensor_elements * self.batch})
        for source in sources:  # every file's columns are checked before the first row runs
            if source.format in ("csv", "parquet"):
                open_reader(source, self.layout).close()
        images = all(s.format in ("images", "file-list") for s in sources)
        self.formatter = Formatter(signature, top_k, options.key_field, options.keep, self._carried_types())
        schema = self.formatter.schema(images) if options.output_format == "parquet" else None
        self.output = Output(options.output, options.output_format, self._identity(top_k), options.resume, schema)
        self.schema = schema
        self.meter = Meter(total=sum(s.size for s in sources))
        self.halt = threading.Event()  # stop reading now: an error, or the error rate is over the limit
        self.stopping: int | None = None  # the signal that asked to stop at the end of the shard
        self.failure: BaseException | None = None
        self.outcome = "done"
        self.rows_this_run = 0

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> int:
        size = queue_size(self.settings.batch_queue_batches, self.calls)
        self.inboxes = [queue.Queue(size) for _ in range(self.calls)]
        self.outboxes = [queue.Queue(size) for _ in range(self.calls)]
        display = Display(self.meter, Display.choose(self.options.quiet), self.settings.batch_progress_seconds)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in EXIT_SIGNAL}
        self.reader = threading.Thread(target=self._read, name="predict-files-read")
        self.writer = threading.Thread(target=self._write, name="predict-files-write")
        self.models = [threading.main_thread(), *(threading.Thread(target=self._infer, args=(n,),
                                                                   name=f"predict-files-model-{n}")
                                                  for n in range(1, self.calls))]
        started = time.monotonic()
        try:
            display.start()
            self.reader.start()
            self.writer.start()
            for thread in self.models[1:]:
                thread.start()
            self._infer(0)
            for thread in self.models[1:]:
                thread.join()
            self.writer.join()
            self.reader.join()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            display.stop()
        return self._finish(time.monotonic() - started)

    def _on_signal(self, signum, frame) -> None:
        self.stopping = signum
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the job at once

    def _fail(self, exc: BaseException) -> None:
        self.failure = self.failure or exc
        self.halt.set()

    # -- stages: each drains its inbox to the end, so a stage that fails never leaves another blocked --
    def _read(self) -> None:
        sent = 0
        try:
            for block in self._blocks():
                checked = checks.check(block, self.runtime.signature, self.settings, self.block_limits)
                self._put(self.inboxes[sent % self.calls], (block, checked), self.models[sent % self.calls])
                sent += 1
        except BaseException as exc:  # noqa: BLE001 - a stage's failure stops the job and is reported
            self._fail(exc)
        finally:
            for turn in range(sent, sent + self.calls):  # the writer's next turn meets the first of these
                self._put(self.inboxes[turn % self.calls], _DONE, self.models[turn % self.calls])

    def _blocks(self):
        """Every block of every source, in order, from the first row after the finished shards."""
        shard_rows, index, skip, before = self.options.shard_rows, 0, len(self.output.shards) * self.options.shard_rows, 0
        for source in self.sources:
            reader = open_reader(source, self.layout)
            try:
                if index < skip:
                    index += reader.skip(skip - index)
                    if index < skip:  # this file lies wholly within finished shards
                        before += source.size
                        continue
                while not (self.halt.is_set() or (self.stopping and index % shard_rows == 0)):
                    block = reader.read(min(self.batch, shard_rows - index % shard_rows))
                    if block is None:
                        break
                    block.first, index = index, index + len(block)
                    if self.meter.read_at_start is None:
                        self.meter.read_at_start = before
                    self.meter.read = before + block.done
                    yield block
            finally:
                reader.close()
            before += source.size
            if self.halt.is_set() or (self.stopping and index % shard_rows == 0):
                return

    def _infer(self, n: int) -> None:
        """Model thread `n`: every C-th block, in turn. A block it drops (the job is halting) still takes
        its turn, as `None`, so the writer's round never waits on a block that will not come."""
        pad = self.batch if self.runtime.xla else 0
        inbox, outbox = self.inboxes[n], self.outboxes[n]
        while (item := self._get(inbox, self.reader)) is not _DONE:
            result = None
            if not self.halt.is_set():
                block, checked = item
                try:
                    result = (block, checks.infer(self.runtime, checked, pad))
                except BaseException as exc:  # noqa: BLE001
                    self._fail(exc)
            self._put(outbox, result, self.writer)
        self._put(outbox, _DONE, self.writer)

    def _write(self) -> None:
        shard, counts, turn = None, None, 0
        while (item := self._get(self.outboxes[turn % self.calls], self.models[turn % self.calls])) is not _DONE:
            turn += 1
            if item is None or self.halt.is_set():
                continue
            try:
                block, inferred = item
                index = block.first // self.options.shard_rows
                if shard is not None and index != shard:
                    self._commit(shard, counts)
                    if self.halt.is_set():
                        continue
                if index != shard:
                    shard, counts = index, {"rows": 0, "predicted": 0, "failed": 0}
                self._write_block(index, block, inferred, counts)
            except BaseException as exc:  # noqa: BLE001
                self._fail(exc)
        try:
            if shard is not None and not self.halt.is_set():
                self._commit(shard, counts)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _write_block(self, index: int, block, inferred, counts: dict) -> None:
        if self.schema is not None:
            predictions = self.formatter.table(block, inferred, self.schema)
        else:
            predictions = self.formatter.lines(block, inferred)
        self.output.write(index, predictions, self.formatter.errors(block, inferred.errors))
        added = {"rows": len(block), "predicted": inferred.predicted, "failed": len(inferred.errors)}
        for name, count in added.items():
            counts[name] += count
            setattr(self.meter, name, getattr(self.meter, name) + count)

    def _commit(self, shard: int, counts: dict) -> None:
        self.output.commit(shard, counts)
        self.rows_this_run += counts["rows"]
        totals = self.output.totals()
        if totals["rows"] and totals["failed"] / totals["rows"] > self.options.max_error_rate:
            self.outcome = (f"stopped: {totals['failed'] / totals['rows']:.2%} of the rows failed, over "
                            f"--max-error-rate {self.options.max_error_rate:.2%}")
            self.halt.set()

    # -- queues ------------------------------------------------------------------------------------
    def _put(self, box: queue.Queue, item, consumer: threading.Thread) -> None:
        """Blocks while the queue is full, unless its consumer is gone (consumers drain to the end)."""
        while not _gone(consumer):
            try:
                box.put(item, timeout=0.2)
                return
            except queue.Full:
                pass

    def _get(self, box: queue.Queue, producer: threading.Thread):
        while True:
            try:
                return box.get(timeout=0.2)
            except queue.Empty:
                if _gone(producer) and box.empty():
                    return _DONE

    # -- the end ----------------------------------------------------------------------------------
    def _finish(self, elapsed: float) -> int:
        if self.failure is not None:
            status, self.outcome = EXIT_FAILED, f"failed: {_describe(self.failure)}"
        elif self.halt.is_set():
            status = EXIT_ERROR_RATE
        elif self.stopping:
            status = EXIT_SIGNAL[self.stopping]
            self.outcome = f"interrupted by {signal.Signals(self.stopping).name} at a shard's end: --resume goes on"
        else:
            status = EXIT_OK
        totals = self.output.totals()
        summary = {"outcome": self.outcome, **totals, "rows_this_run": self.rows_this_run,
                   "rows_per_s": round(self.rows_this_run / max(elapsed, 1e-9), 1), "elapsed_s": round(elapsed, 3),
                   "output": str(self.options.output), "exit": status, "model": self.runtime.signature.name,
                   "version": self.runtime.signature.version, "device": self.runtime.device,
                   "batch_size": self.batch, "cpus": self.cpus, "model_calls": self.calls}
        self.output.finish(summary, complete=status == EXIT_OK)
        if status != EXIT_OK or not self.options.quiet:
            print(summary_line(summary), file=sys.stderr, flush=True)
        self.summary = summary
        return status

    # -- what the job is, for --resume ---------------------------------------------------------------
    def _identity(self, top_k) -> dict:
        options, signature = self.options, self.runtime.signature
        return {"inputs": [s.identity() for s in self.sources], "model": signature.name,
                "version": signature.version, "output_format": options.output_format,
                "key_field": options.key_field, "keep_columns": list(options.keep),
                "top_k": list(top_k) if top_k else None, "batch_size": self.batch,
                "shard_rows": options.shard_rows}

    def _carried_types(self) -> dict:
        """Parquet in, Parquet out: carried columns keep their type (else they are written as text)."""
        if self.options.output_format != "parquet" or not all(s.format == "parquet" for s in self.sources):
            return {}
        import pyarrow.parquet as pq
        schemas = [pq.read_schema(s.path) for s in self.sources]
        names = [n for n in (self.options.key_field, *self.options.keep) if n]
        return {name: schemas[0].field(name).type for name in names
                if all(schema.field(name).type == schemas[0].field(name).type for schema in schemas)}


def queue_size(queue_batches: int, calls: int) -> int:
    """Blocks each of the 2 x `calls` queues holds: the setting's share, at least one."""
    return max(1, queue_batches // calls)


def model_calls(cores: int) -> int:
    """Calls of the model in flight (CALLS where there are that many cores; one on a single core)."""
    return max(1, min(CALLS, cores))


def auto_batch_size(signature) -> int:
    """AUTO_BATCH_ROWS, or fewer where that many rows' inputs would be over AUTO_BATCH_BYTES."""
    row_bytes = 0
    for info in signature.inputs.values():
        elements = 1
        for size in info.instance_shape:
            elements *= size or 1
        row_bytes += elements * (64 if info.is_string else info.dtype.itemsize)
    return max(1, min(AUTO_BATCH_ROWS, AUTO_BATCH_BYTES // max(1, row_bytes)))


def limit_cpus(share: float) -> list[int]:
    """Pin this process (and the threads it starts from now on) to `share` of the cores it may use, at
    least one: the last ones. A serving stack beside it is not pinned, so it keeps the others whatever
    the job does. Returns the cores."""
    cores = sorted(os.sched_getaffinity(0))
    count = max(1, int(len(cores) * share + 1e-9))
    if count < len(cores):
        os.sched_setaffinity(0, cores[-count:])
    return cores[-count:]


def _gone(thread: threading.Thread) -> bool:
    """The thread ran and ended (one not started yet is still to come: the threads start one by one)."""
    return thread.ident is not None and not thread.is_alive()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def run(options: Options, settings: Settings, sources: list[Source], cpu_share: float = 1.0, threads: int = 0,
        calls: int = 0) -> int:
    """Load the model and run the job; the exit status (EXIT_*). Failures to load are reported, not raised.
    The cores are limited for the job's length only, so an in-process caller gets its own back.
    `calls`: model calls in flight (0: model_calls); `threads`: TensorFlow intra-op threads (0: the cores
    shared between the calls)."""
    original = os.sched_getaffinity(0)
    try:
        cpus = limit_cpus(cpu_share)
        calls = calls or model_calls(len(cpus))
        try:
            runtime = load_runtime(settings, options.model, options.version, threads or max(1, len(cpus) // calls),
                                   calls)
        except Exception as exc:  # noqa: BLE001 - StoreError, Keras's and TensorFlow's own: all end here
            print(f"predict-files failed: model {options.model!r} does not load: {exc}", file=sys.stderr)
            return EXIT_FAILED
        try:
            job = Job(options, settings, sources, runtime, cpus, calls)
        except UsageError as exc:
            print(f"predict-files: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return job.run()
    finally:
        os.sched_setaffinity(0, original)


def load_runtime(settings: Settings, name: str, version: str | None, threads: int, calls: int = 1):
    """The compiled model, as a serving worker loads it (safe loader, one trace), with `threads`
    TensorFlow intra-op threads and at least `calls` inter-op threads, so that `calls` calls run side by
    side. `version`: a number, a version label, or None for the newest."""
    from api.model.store import StoreError, list_versions, read_version, read_version_labels
    from api.runtime import ModelRuntime, configure_tensorflow  # TensorFlow: only once a job runs

    store = settings.model_store
    if version is None:
        available = list_versions(store, name)
        if not available:
            raise StoreError(f"no versions of '{name}' under {store}")
        number = available[-1]
    elif version.isdigit():
        number = int(version)
    else:
        labels = read_version_labels(store, name)
        if version not in labels:
            raise StoreError(f"no version labelled '{version}' (labels: {', '.join(sorted(labels)) or 'none'})")
        number = labels[version]
    device = configure_tensorflow(Settings(**{**settings.model_dump(), "workers": 1, "intra_op_threads": threads,
                                              "inter_op_threads": max(settings.inter_op_threads, calls)}))
    return ModelRuntime.from_settings(read_version(store, name, number), device, settings)
