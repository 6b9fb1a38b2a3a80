"""Every setting of the server, declared once: typed, defaulted, documented, read from `SERVE_*`.

gunicorn.conf.py, the app factory, the model runtime and the scripts all read this one object;
`make settings` prints the effective values (the README's settings table comes from it).
"""
import bisect
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BatchPolicy:
    """TensorFlow Serving's batching parameters, as the batcher reads them (api/batching.py)."""
    max_batch_size: int = 64
    batch_timeout: float = 0.0  # seconds
    max_enqueued_batches: int = 16
    allowed_batch_sizes: tuple[int, ...] = ()
    rejoin_fraction: float = 0.0  # of the last call's time, waited for the requests just answered

    def __post_init__(self):
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ValueError("allowed_batch_sizes must increase and end with max_batch_size "
                             f"({self.max_batch_size}); got {list(sizes)}")

    @property
    def max_enqueued(self) -> int:
        """Instances that may wait at once; a request beyond it is refused, not queued."""
        return self.max_batch_size * self.max_enqueued_batches

    def padded(self, size: int) -> int:
        """The batch size the model is called with: the smallest allowed size that holds `size`."""
        if not self.allowed_batch_sizes:
            return size
        return self.allowed_batch_sizes[bisect.bisect_left(self.allowed_batch_sizes, size)]


# A browser's Origin header: scheme, host and port only (RFC 6454), or `*` for any origin.
ORIGIN = r"^(\*|https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?)$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SERVE_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    # -- model store -----------------------------------------------------------------------------
    model_store: Path = Path("models")
    """Root of the model store, laid out as TensorFlow Serving's: <store>/<name>/<version>/."""
    model_name: str = Field("digits", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """The model each worker loads and `POST /predict` serves."""
    model_versions: str = Field("all", pattern=r"^(all|latest(:[1-9][0-9]*)?|[0-9]+(,[0-9]+)*)$")
    """Which versions to load: `all`, `latest`, `latest:N` or a list such as `1,3`. The newest loaded
    version answers requests that name none."""
    warmup_batches: tuple[int, ...] = (1, 8, 32)
    """Batch sizes run once each before a worker reports ready, so no request pays for tracing."""

    # -- HTTP: nginx in front, gunicorn behind it ------------------------------------------------
    host: str = "127.0.0.1"
    """Address the public listener (nginx) binds; `0.0.0.0` on instances behind a load balancer."""
    port: int = Field(8080, ge=1, le=65535)
    """Port of the public listener (nginx)."""
    status_port: int = Field(8081, ge=1, le=65535)
    """Port of the instance-only listener on 127.0.0.1: /metrics, /health, nginx status."""
    bind: str = ""
    """gunicorn's bind; empty = the unix socket `<run_dir>/gunicorn.sock` that nginx proxies to."""
    request_timeout: float = Field(30.0, gt=0)
    """Seconds a request may take end to end; nginx's proxy timeouts follow it."""
    max_queue_wait: float = Field(1.0, gt=0)
    """Seconds a request may wait, from nginx's arrival stamp until the model starts on it; one that
    would wait longer (by the call running and the queue ahead of it) is held unread, then refused with
    503 + Retry-After instead of being served late. Keep it above two calls of the largest batch (the
    worker warns at load when it is not): ResNet50 on one core takes ~1.3 s a batch of 16, so 3 s."""
    client_rate: int = Field(1000, ge=1)
    """Requests per second one client address may send (nginx limit_req); beyond the burst, 429."""
    client_burst: int = Field(2000, ge=0)
    """Requests a client may send above its rate before it is refused (nginx limit_req burst)."""
    client_connections: int = Field(512, ge=1, le=65535)
    """Open connections one client address may hold (nginx limit_conn); beyond it, 429."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of the load balancers in front; their X-Forwarded-For gives the real client address."""
    load_balancer_idle_timeout: int = Field(60, ge=1)
    """Idle timeout of the load balancer in front (deploy/'s ALB is set to it); `client_keepalive` must be
    longer, so the load balancer, never nginx, closes an idle connection."""
    client_keepalive: int = Field(75, ge=1)
    """Seconds nginx keeps an idle client connection; longer than the load balancer's idle timeout."""
    upstream_keepalive: int = Field(60, ge=1)
    """Seconds nginx keeps an idle connection to gunicorn; shorter than gunicorn's keepalive."""
    upstream_tries: int = Field(3, ge=1, le=10)
    """Attempts nginx makes for one request on the shared socket when a worker dies or refuses (POST
    /predict is idempotent); with `worker_sockets`, after one attempt on each worker's own socket."""
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest request body accepted, in bytes, as sent and once decoded (`Content-Encoding: gzip` or
    `deflate`); larger bodies get 413."""
    max_string_bytes: int = Field(4 * 1024 * 1024, ge=1)
    """Longest string or bytes element of a tensor (TF Serving strings and `{"b64"}` bytes, v2 BYTES), in
    bytes; longer is a 413. Element counts stay bounded by max_tensor_elements and the body limit."""
    gzip_min_bytes: int = Field(1024, ge=0)
    """Answers from this size up (bytes) are gzipped by nginx for clients that send `Accept-Encoding:
    gzip`; 0 turns response compression off."""
    max_instances: int = Field(256, ge=1)
    """Most instances (rows of the batch dimension) in one request; more get 400."""
    max_tensor_elements: int = Field(16 * 1024 * 1024, ge=1)
    """Most scalar elements in one input tensor (guards v2 shapes that claim absurd sizes)."""
    max_json_depth: int = Field(32, ge=2, le=512)
    """Deepest JSON nesting accepted; deeper bodies get 400 before anything walks them."""
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    """Most pixels in one decoded image (width x height); larger images get 413."""
    max_top_k: int = Field(100, ge=1)
    """Largest `top_k` a request may ask for."""

    # -- gunicorn --------------------------------------------------------------------------------
    workers: int = Field(default_factory=lambda: max(1, min(2, _cpu_count())), ge=1)
    """gunicorn worker processes, each holding one copy of the model."""
    worker_class: Literal["gevent", "gthread"] = "gevent"
    """gunicorn worker class. `gevent`: one event loop per worker parses requests while the model runs
    on a native thread (measured fastest, docs/performance.md); `gthread`: a thread per request."""
    inference_lane: bool = True
    """Answer the inference routes' common case (POST with a Content-Length, no Content-Encoding, no
    Origin) as plain WSGI before Flask, with the same checks, answers, metrics and access line
    (api/http/lane.py: a quarter of the app's CPU for a digits request); false: all through Flask-RESTful."""
    worker_connections: int = Field(1000, ge=1)
    """Connections one gevent worker serves at once; waiting requests queue in the batcher, which refuses
    the excess with 503 (max_enqueued_batches)."""
    threads: int = Field(8, ge=1)
    """Request threads per worker (gthread only)."""
    worker_sockets: bool = True
    """One unix socket per worker slot besides the shared one, which nginx balances with `least_conn`
    (the shared socket as backup), so no worker idles while another queues. Only with the default bind."""
    timeout: int = Field(120, ge=3)
    """Seconds a silent worker lives before gunicorn kills it; covers model load and warm-up."""
    graceful_timeout: int = Field(30, ge=1)
    """Seconds a stopping worker has to finish its requests."""
    drain_seconds: float = Field(5.0, ge=0, le=300)
    """On a stop, seconds the server keeps serving after /ready turns 503, so that load balancers and
    health checks see it and stop sending before it stops accepting connections."""
    max_requests: int = Field(0, ge=0)
    """Requests a worker serves before it is replaced (a guard against slow leaks); 0 = never. Unlike
    gunicorn's own max_requests, the old worker stops only once its successor is warm."""
    max_requests_jitter: int = Field(0, ge=0)
    """Up to this many requests added at random to each worker's `max_requests`, so that workers started
    together are not replaced together."""
    keepalive: int = Field(90, ge=1)
    """Seconds gunicorn keeps an idle connection from nginx; longer than `upstream_keepalive`, so
    nginx never reuses a connection gunicorn is closing."""
    run_dir: Path = Path("run")
    """Folder for runtime state shared by the master and its workers (readiness markers)."""

    # -- dynamic batching (TensorFlow Serving's names and meaning) ------------------------------
    max_batch_size: int = Field(64, ge=1)
    """Most instances one compiled call takes; concurrent requests are batched up to it and a larger
    request is split."""
    batch_timeout_micros: int = Field(0, ge=0, le=1_000_000)
    """Microseconds the inference thread waits for more requests once one is queued. 0: take what is
    queued at once (batches form while the previous call runs); raise it to trade latency for fuller
    batches when requests trickle in."""
    batch_rejoin_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """After a call, the next batch waits up to this fraction of that call's time for the requests it
    has just answered to come back (clients that send their next request on the answer), so that
    batches stop splitting into halves that alternate. It waits only while fewer instances are queued
    than the call just answered plus those already waiting, so a lone client or a full queue never
    waits, and the model idles at most that share of its time. 0 (the default): never wait. On this
    2-core CPU it filled ResNet50's batches (4.0 instead of 2.3 at 4 connections, 13-15.5 instead of 9 at
    16) but the wait cost what the fuller batches saved (a loss at 4 JSON connections), and at 0.5 it
    cost digits about 5% at 32 and 64 connections (docs/performance.md, "Batches that rejoin"); for
    models whose batches cost far less per instance than single calls (GPUs), try 0.1 to 0.3."""
    inline_call_micros: int = Field(0, ge=0)
    """gevent workers: a model whose call at the largest warm-up batch takes at most this long runs on the
    event loop itself; a slower one runs on a native thread while the loop goes on parsing requests.
    0 (measured best since the inference lane, even for digits' 1 ms calls: docs/performance.md): always
    the native thread."""
    max_enqueued_batches: int = Field(16, ge=1)
    """Batches' worth of instances that may wait per worker; a request beyond it gets 503 at once."""
    allowed_batch_sizes: tuple[int, ...] = ()
    """Batch sizes a call is padded to (increasing, ending with max_batch_size), so that XLA and GPU
    kernels see a few fixed shapes; empty = no padding (the CPU default: padding costs compute)."""

    # -- demo page and browsers ------------------------------------------------------------------
    demo_page: bool = True
    """Serve the demo page at `/` (drop an image, see the top classes; docs/demo.md), from the app's own
    files, calling `POST /predict` as any client does; false: only the API (`/` is a 404)."""
    cors_origins: tuple[Annotated[str, Field(pattern=ORIGIN)], ...] = ()
    """Origins whose pages may call the API from a browser (CORS, preflight answered), written as the
    browser sends them (`https://app.example.com`, `http://localhost:3000`), or `*` for any; empty: none."""

    # -- asynchronous jobs (queue) ---------------------------------------------------------------
    queue_backend: Literal["none", "redis", "sqs"] = "none"
    """Broker of asynchronous jobs (`:submit`, `GET /v1/jobs/<id>`, `keras-serving worker`; docs/async.md):
    `redis` (Streams), `sqs` (results in S3), or `none`: the job routes answer 404."""
    queue_name: str = Field("keras-serving", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Prefix of the broker's keys (Redis: `<name>:<model>:jobs`, `<name>:job:<id>`; S3: under queue_s3_prefix)."""
    queue_redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for queue_backend `redis` (`rediss://` for TLS); `make serve-async` starts one on this port."""
    queue_sqs_url: str = ""
    """SQS queue URL of the jobs (queue_backend `sqs`); deploy/cloudformation/workers.yaml makes it."""
    queue_sqs_dead_letter_url: str = ""
    """SQS queue URL jobs go to after queue_max_deliveries deliveries (the jobs queue's redrive target)."""
    queue_s3_bucket: str = ""
    """S3 bucket of job records, results and idempotency keys (queue_backend `sqs`)."""
    queue_s3_prefix: str = "jobs/"
    """Key prefix of everything the queue writes to queue_s3_bucket."""
    queue_aws_endpoint_url: str = ""
    """Endpoint URL for SQS and S3 (a VPC endpoint, or a local test server); empty: AWS's own."""
    queue_job_ttl: float = Field(3600.0, gt=0)
    """Seconds a job may wait for a worker; one not started by then is `expired`, never run."""
    queue_result_ttl: float = Field(86400.0, gt=0)
    """Seconds a finished job's state and answer are kept; then `GET /v1/jobs/<id>` answers 410."""
    queue_lease_seconds: float = Field(30.0, gt=0)
    """Seconds a worker holds a job it took before another may take it (Redis pending-entry idle time, SQS
    visibility timeout); renewed every third of it while the job runs, so only a dead worker loses it."""
    queue_max_job_seconds: float = Field(600.0, gt=0)
    """Longest a worker keeps renewing its lease on one batch of jobs (seconds); a job hung longer is left
    for another worker to retry."""
    queue_max_deliveries: int = Field(3, ge=1)
    """Deliveries of one job before it goes to the dead-letter queue and is `failed` (a job that kills its
    worker every time)."""
    queue_pull_jobs: int = Field(32, ge=1, le=1000)
    """Most jobs a worker takes at once; their instances run in compiled calls of up to max_batch_size."""
    queue_poll_seconds: float = Field(2.0, gt=0, le=20)
    """Seconds a worker with nothing to do waits on the broker for jobs per call (long polling)."""
    queue_workers: int = Field(1, ge=0)
    """Worker processes `make serve-async` (`keras-serving serve-async`) starts beside the HTTP stack."""
    queue_autoscaling_group: str = ""
    """The EC2 Auto Scaling group a worker's instance is in: while the worker holds jobs the instance is
    protected from scale-in, so scaling in never kills a busy worker; empty: no protection (not on AWS)."""

    # -- batch prediction over files --------------------------------------------------------------
    batch_size: int = Field(0, ge=0)
    """Rows per compiled call of `keras-serving predict-files` (docs/batch.md); 0 = 512, fewer where a row's
    input is large, so that one batch's input stays within 32 MiB. Its flag: --batch-size."""
    batch_shard_rows: int = Field(100_000, ge=1)
    """Input rows per output shard (`predictions-NNNNN`) of predict-files: the most that `--resume` redoes
    and that SIGTERM waits for before the job exits. Its flag: --shard-rows."""
    batch_queue_batches: int = Field(2, ge=1, le=64)
    """Batches each of predict-files' queues (read -> infer -> write) holds; with batch_size, what bounds
    the job's memory whatever the input's size (docs/batch.md)."""
    batch_max_error_rate: float = Field(1.0, ge=0, le=1)
    """Fraction of predict-files' rows that may fail (errors.jsonl) before the job stops, exit status 1;
    checked at each shard and at the end. 1 = never stop. Its flag: --max-error-rate."""
    batch_cpu_share: float = Field(1.0, gt=0, le=1)
    """Share of the cores predict-files uses: it pins itself to that many of the cores it may run on and
    runs that many TensorFlow threads, leaving the rest to a serving stack beside it. Its flag: --cpu-share."""
    batch_model_calls: int = Field(0, ge=0)
    """Model calls predict-files keeps in flight at once, each with its share of the TensorFlow threads;
    0 = 2 (1 on a single core): on 2 cores the compiled function alone did 19% more rows/s as two calls of
    one thread than as one call of two (docs/batch.md). Its flag: --model-calls."""
    batch_progress_seconds: float = Field(10.0, gt=0)
    """Seconds between predict-files' progress lines when stderr is not a terminal (a terminal gets a bar)."""

    # -- TensorFlow ------------------------------------------------------------------------------
    intra_op_threads: int = Field(0, ge=0)
    """TensorFlow intra-op threads per worker; 0 = cores / workers, so workers never oversubscribe."""
    inter_op_threads: int = Field(1, ge=0)
    """TensorFlow inter-op threads per worker."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """Where inference runs: `auto` takes a GPU when TensorFlow sees one."""
    gpu_memory_mb: int = Field(0, ge=0)
    """GPU memory each worker may take, in MiB; 0 = grow on demand. Set it when several workers share
    one GPU so that one cannot starve the others."""
    xla: bool = False
    """Compile the model with XLA (`jit_compile`): faster kernels, one compilation per batch shape, so
    pair it with allowed_batch_sizes."""
    freeze_graph: bool = True
    """On a CPU without XLA, fold the model's variables into its compiled graph as constants at load (a
    frozen graph): oneDNN then lays each convolution's filter out once, where a variable's is laid out
    again on every call. ResNet50 measured +30-50% at batches of 1-2 and +10% at 8, one core each
    (docs/performance.md, "A frozen graph"). It costs memory: ResNet50's worker holds about 2.0 GiB
    against 1.1. A model whose graph holds other state (a lookup table) or whose frozen outputs differ
    from the original's keeps its variables, with a warning."""
    mixed_precision: bool = False
    """Run float32 models in float16 on the GPU (Keras `mixed_float16` policy); outputs stay float32."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of gunicorn and the app."""
    tf_log_level: int = Field(3, ge=0, le=3)
    """TensorFlow's own C++ log threshold in the workers (its TF_CPP_MIN_LOG_LEVEL). 3: its start-up chatter
    (on a CPU machine `failed call to cuInit`, at error level, among it) goes to `<run_dir>/tensorflow.log`,
    not the console; 0 shows everything, for debugging a device. The app logs model, versions, device."""

    @model_validator(mode="after")
    def _batching_is_consistent(self):
        self.batch_policy  # raises ValueError on allowed sizes that do not end with max_batch_size
        return self

    @model_validator(mode="after")
    def _keepalives_close_from_the_front(self):
        """Along client -> load balancer -> nginx -> gunicorn, each hop must close an idle connection
        before the hop behind it does: a request sent on a connection the far side is closing fails
        (for a POST through nginx, a 502 unless retried)."""
        if self.client_keepalive <= self.load_balancer_idle_timeout:
            raise ValueError(f"client_keepalive ({self.client_keepalive} s) must be longer than "
                             f"load_balancer_idle_timeout ({self.load_balancer_idle_timeout} s)")
        if self.upstream_keepalive >= self.keepalive:
            raise ValueError(f"upstream_keepalive ({self.upstream_keepalive} s) must be shorter than "
                             f"keepalive, gunicorn's ({self.keepalive} s)")
        return self

    @cached_property
    def batch_policy(self):
        return BatchPolicy(self.max_batch_size, self.batch_timeout_micros / 1e6, self.max_enqueued_batches,
                           self.allowed_batch_sizes, self.batch_rejoin_fraction)

    @cached_property
    def bind_address(self) -> str:
        return self.bind or f"unix:{self.socket_path}"

    @cached_property
    def metrics_dir(self) -> Path:
        """prometheus_client's multiprocess folder: every worker's samples, wiped when gunicorn starts."""
        return (self.run_dir / "metrics").resolve()

    @cached_property
    def socket_path(self) -> Path:
        return (self.run_dir / "gunicorn.sock").resolve()

    def worker_socket_path(self, slot: int) -> Path:
        """Worker slot `slot`'s own socket; a successor takes its predecessor's slot (api/process/arbiter.py)."""
        return (self.run_dir / f"worker-{slot}.sock").resolve()

    @cached_property
    def worker_socket_paths(self) -> tuple[Path, ...]:
        """The per-worker sockets nginx balances over; none with a bind of the operator's own."""
        if self.bind or not self.worker_sockets:
            return ()
        return tuple(self.worker_socket_path(slot) for slot in range(self.workers))

    @cached_property
    def tf_intra_op_threads(self) -> int:
        return self.intra_op_threads or max(1, _cpu_count() // self.workers)


def describe() -> str:
    """The effective settings, one `SERVE_NAME=value  # description` line each."""
    settings = Settings()
    lines = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        lines.append(f"SERVE_{name.upper()}={value}  # {' '.join((field.description or '').split())}")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's settings table: defaults as declared (not this machine's environment)."""
    rows = ["| variable | default | what |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "per machine"
        else:
            default = field.default
            if isinstance(default, tuple):
                default = ",".join(map(str, default))
        rows.append(f"| `SERVE_{name.upper()}` | `{default}` | {' '.join((field.description or '').split())} |")
    return "\n".join(rows)
