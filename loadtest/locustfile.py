"""The model server's users, the load shape chosen by name, and the SLO gates (docs/loadtesting.md).

    locust --config loadtest/locust.conf --host http://127.0.0.1:8080 [--shape step] [--max-p95-ms 250]

Every user reads the served model's metadata first, so the same file loads any one-input model.
"""
import logging
import random

import requests
from locust import FastHttpUser, LoadTestShape, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

# The loadtest package is installed into the virtualenv (make install: pip install -e .); locust itself
# puts only this folder on the path.
from loadtest import answers, gates, shapes
from loadtest.bad_requests import BadRequest, corpus
from loadtest.mix import MIX
from loadtest.model import ServedModel, from_metadata
from loadtest.payloads import Body, Payloads, digits

JSON = {"Content-Type": "application/json"}
log = logging.getLogger("loadtest")


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    parser.add_argument("--model", default="", env_var="LOCUST_MODEL",
                        help="Model to load (default: the one the server's /ready names)")
    parser.add_argument("--shape", default="steady", choices=list(shapes.SHAPES), env_var="LOCUST_SHAPE",
                        help="Load shape; -u is its peak, -r its ramp, -t its length (default per shape)")
    parser.add_argument("--steps", type=int, default=8, env_var="LOCUST_STEPS",
                        help="Steps of the step shape")
    parser.add_argument("--think-time", type=float, default=0.5, env_var="LOCUST_THINK_TIME",
                        help="Mean seconds a user waits between requests (uniform, 0.5x to 1.5x); 0: none")
    defaults = gates.Thresholds()
    for name, what in (("max_error_rate", "Largest share of failed requests, 0..1"),
                       ("max_p95_ms", "Largest 95th percentile latency, ms"),
                       ("max_p99_ms", "Largest 99th percentile latency, ms"),
                       ("min_rps", "Fewest requests per second over the run")):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name),
                            env_var="LOCUST_" + name.upper(), help=f"SLO gate: {what}")


# -- what to send: read from the served model once per process -----------------------------------------

# Import scikit-learn and read the digits now, before a worker connects: done in test_start, this CPU-bound
# second or two starves the worker's heartbeat greenlet and the master drops the worker as missing.
digits()


class Traffic:
    """What this process sends, built once from the served model's metadata when the run starts."""
    model: ServedModel | None = None
    payloads: Payloads | None = None
    bad: list[BadRequest] = []


@events.test_start.add_listener
def read_served_model(environment, **kwargs) -> None:
    if Traffic.payloads is not None or isinstance(environment.runner, MasterRunner):
        return  # the master sends no request
    host, name = environment.host.rstrip("/"), environment.parsed_options.model
    try:
        name = name or requests.get(f"{host}/ready", timeout=10).json()["model"]
        v2 = requests.get(f"{host}/v2/models/{name}", timeout=10)
        v2.raise_for_status()
        v1 = requests.get(f"{host}/v1/models/{name}/metadata", timeout=10)
        Traffic.model = from_metadata(v2.json(), v1.json() if v1.ok else None)
    except (requests.RequestException, ValueError, KeyError) as exc:
        log.error("cannot read the served model's metadata from %s (name it with --model?): %r", host, exc)
        return
    Traffic.payloads, Traffic.bad = Payloads.build(Traffic.model), corpus(Traffic.model)
    log.info("loading %s: %s", host, Traffic.model)


# -- users ---------------------------------------------------------------------------------------------

class ModelUser(FastHttpUser):
    """geventhttpclient rather than requests: the client often shares the server's cores, and spends
    several times less CPU per request this way. Each class's `weight` and `think_factor` are its share of
    the user mix, declared in loadtest/mix.py by class name."""
    abstract = True
    network_timeout = 35.0  # past the server's own 30 s request timeout: its 504 is what gets counted
    connection_timeout = 5.0
    think_factor = 1.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        share = MIX[cls.__name__]  # KeyError: a user class missing from the mix
        cls.weight, cls.think_factor = share.weight, share.think_factor

    def wait_time(self) -> float:
        mean = self.environment.parsed_options.think_time * self.think_factor
        return random.uniform(0.5 * mean, 1.5 * mean)

    def on_start(self) -> None:
        if Traffic.payloads is None:
            raise StopUser()  # the reason is logged above; the gates then fail the run for want of requests

    def send(self, path: str, body: bytes, name: str, check, headers=JSON) -> None:
        with self.client.post(path, data=body, headers=headers, name=name, catch_response=True) as answer:
            reason = check(answer.status_code or 0, answer.content or b"")
            if reason:
                answer.failure(reason)
            else:
                answer.success()

    def predict(self, path: str, bodies: list[Body], name: str, **expected) -> None:
        """One of `bodies`, right when it gets a prediction per instance (`expected`: check_predict's key,
        top_k)."""
        body = random.choice(bodies)
        self.send(path, body.data, name,
                  lambda status, data: answers.check_predict(status, data, body.rows, **expected))


class PredictUser(ModelUser):
    """The bulk of real traffic: `POST /predict`, mostly one instance, sometimes a handful."""

    @task(4)
    def one_instance(self) -> None:
        self.predict("/predict", Traffic.payloads.one, "predict: one instance")

    @task(1)
    def small_batch(self) -> None:
        self.predict("/predict", Traffic.payloads.batches, "predict: small batch")


class ImageUser(ModelUser):
    """Uploads: a base64 PNG, larger than the model's input, asking for the best labels."""

    @task
    def upload(self) -> None:
        name = "predict: b64 image, top_k" if Traffic.model.color_mode else "predict: top_k (no image input)"
        self.predict("/predict", Traffic.payloads.uploads, name, top_k=Traffic.payloads.top_k)


class TFServingUser(ModelUser):
    """Existing TensorFlow Serving clients: row and columnar bodies on the model's own route."""

    @task
    def rows(self) -> None:
        self.predict(f"/v1/models/{Traffic.model.name}:predict", Traffic.payloads.batches,
                     "tfserving: predict rows")

    @task
    def columns(self) -> None:
        self.predict(f"/v1/models/{Traffic.model.name}:predict", Traffic.payloads.columnar,
                     "tfserving: predict columns", key="outputs")


class V2User(ModelUser):
    """KServe v2 / Triton clients, JSON tensors."""

    @task
    def infer(self) -> None:
        body = random.choice(Traffic.payloads.v2)
        self.send(f"/v2/models/{Traffic.model.name}/infer", body.data, "v2: infer",
                  lambda status, data: answers.check_v2(status, data, body.rows))


class BadRequestUser(ModelUser):
    """Clients that get it wrong, a few percent of requests: each must be refused with its 4xx and a
    JSON error, and counts as a success only then."""

    @task
    def bad_request(self) -> None:
        bad = random.choice(Traffic.bad)
        self.send(bad.path, bad.body, f"bad: {bad.name}",
                  lambda status, data: answers.check_refused(status, data, bad.status),
                  headers={"Content-Type": bad.content_type})


# -- shape ---------------------------------------------------------------------------------------------

class NamedShape(LoadTestShape):
    """The shape `--shape` names; locust takes the first shape class it finds, so there is only this one."""
    use_common_options = True
    stages: list[shapes.Stage] | None = None

    def tick(self):
        if self.stages is None:
            options = self.runner.environment.parsed_options
            self.stages = shapes.plan(options.shape, options.num_users or 1, options.spawn_rate or 1,
                                      options.run_time, options.steps)
            log.info("shape %s: %s", options.shape, self.stages)
        return shapes.tick(self.stages, self.get_run_time())


# -- SLO gates, on the master (or the only process): its stats hold every worker's --------------------

VERDICT: list[str] = []


@events.quitting.add_listener
def apply_gates(environment, **kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    total, options = environment.stats.total, environment.parsed_options
    figures = gates.Figures(requests=total.num_requests, failures=total.num_failures,
                            p95_ms=total.get_response_time_percentile(0.95) or 0,
                            p99_ms=total.get_response_time_percentile(0.99) or 0, rps=total.total_rps)
    thresholds = gates.Thresholds(max_error_rate=options.max_error_rate, max_p95_ms=options.max_p95_ms,
                                  max_p99_ms=options.max_p99_ms, min_rps=options.min_rps)
    results = gates.evaluate(figures, thresholds)
    VERDICT.append(gates.verdict(results))
    if environment.runner.exceptions:
        # A task raised: a bug in this file, not the server's doing, and the figures may be skewed by it.
        VERDICT.append(f"SLO gates not trusted: {len(environment.runner.exceptions)} task exception(s) above")
        environment.process_exit_code = 2
    else:
        # The gates decide, not locust's default of exit 1 on any failed request: the error-rate gate
        # says how many may fail.
        environment.process_exit_code = 0 if gates.passed(results) else 1


@events.quit.add_listener
def print_verdict(exit_code, **kwargs) -> None:
    """After locust's own tables, so the verdict is the last thing in the log."""
    for verdict in VERDICT:
        print(verdict, flush=True)
