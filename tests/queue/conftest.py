"""The brokers the queue's tests run against: a real redis-server (started here, on a free port, with the
append-only file on) and moto's SQS and S3 in server mode; each test gets a namespace of its own."""
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from api.process import redis as local_redis
from api.queue.broker import open_broker
from api.settings import Settings
from bench.harness import ProcessGroup, free_port, listening, wait_until

REGION = "us-east-1"
_names = itertools.count()


class RedisServer(ProcessGroup):
    """redis-server in a folder of its own; `kill` (SIGKILL, as a crash) and `restart` keep the port and
    the append-only file, so what it acknowledged before comes back."""

    GRACE = 10

    def __init__(self, folder: Path, port: int | None = None):
        self.folder, self.port = folder, port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        super().__init__(local_redis.command(folder, self.port), folder / f"redis-{time.monotonic_ns()}.log",
                         name="redis-server")
        self.wait(self.ping, 20)

    def ping(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            return client.ping()
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()

    def crash_and_restart(self) -> None:
        """SIGKILL, then the same server again on the same port and files (this object, restarted)."""
        self.kill()
        self._log.close()
        ProcessGroup.__init__(self, local_redis.command(self.folder, self.port),
                              self.folder / f"redis-{time.monotonic_ns()}.log", name="redis-server")
        self.wait(self.ping, 20)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto's server (SQS with visibility timeouts and redrive, S3 with conditional writes) in a process of
    its own (tests/queue/moto_serve.py): in this one it would share the GIL with the test's own threads."""
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION})
    port = free_port()
    server = ProcessGroup([sys.executable, str(Path(__file__).with_name("moto_serve.py")), str(port)],
                          tmp_path_factory.mktemp("moto") / "moto.log", name="moto server")
    server.wait(lambda: listening(port), 60)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def aws_client(service: str, endpoint: str):
    import boto3
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def sqs_resources(endpoint: str, name: str, lease: float) -> dict:
    """A jobs queue, its dead-letter queue and a bucket, as deploy/cloudformation/workers.yaml makes them."""
    sqs = aws_client("sqs", endpoint)
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    jobs = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(max(1, round(lease))),
        # A backstop only: the worker dead-letters at queue_max_deliveries itself (marking the job failed).
        "RedrivePolicy": f'{{"deadLetterTargetArn": "{dead_arn}", "maxReceiveCount": "100"}}'})["QueueUrl"]
    aws_client("s3", endpoint).create_bucket(Bucket=name)
    return {"queue_sqs_url": jobs, "queue_sqs_dead_letter_url": dead, "queue_s3_bucket": name,
            "queue_aws_endpoint_url": endpoint}


@pytest.fixture(params=["redis", "sqs"])
def backend(request) -> str:
    return request.param


@pytest.fixture()
def make_settings(request, backend, tmp_path):
    """Settings(**overrides) for this test's own namespace on the backend under test."""
    name = f"t{next(_names)}-{os.getpid()}"
    resources = {}

    def make(**overrides) -> Settings:
        lease = overrides.get("queue_lease_seconds", 30.0)
        if backend == "redis":
            where = {"queue_redis_url": request.getfixturevalue("redis_server").url}
        else:
            if not resources:
                resources.update(sqs_resources(request.getfixturevalue("moto_server"), name, lease))
            where = resources
        defaults = {"model_store": tmp_path, "run_dir": tmp_path, "warmup_batches": (1,), "queue_backend": backend,
                    "queue_name": name}
        return Settings(**{**defaults, **where, **overrides})
    return make


@pytest.fixture()
def broker_for(make_settings):
    """broker_for(**settings) -> a Broker on this test's namespace; closed after the test."""
    opened = []

    def make(**overrides):
        broker = open_broker(make_settings(**overrides))
        opened.append(broker)
        return broker
    yield make
    for broker in opened:
        broker.close()


def wait_for(condition, timeout: float = 30.0, what: str = "") -> None:
    wait_until(condition, timeout, what, interval=0.05)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
