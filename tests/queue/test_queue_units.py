"""The small pieces without a broker: the message format, the worker's command line, scale-in protection."""
import subprocess
import sys

import orjson
import pytest

from api.queue.jobs import BadMessage, Job, Record, issued_at
from api.queue.protection import ScaleInProtection
from bench.harness import ROOT


def test_the_message_format_round_trips_and_refuses_other_versions():
    job = Job.create("digits", 2, b'{"instances": [[1]]}', 60, now=1_767_225_600.0)
    assert Job.decode(job.encode()) == job
    assert orjson.loads(job.encode())["v"] == 1 and issued_at(job.id) == 1_767_225_600.0
    newer = {**orjson.loads(job.encode()), "v": 2}
    with pytest.raises(BadMessage, match="format 2 is not 1"):
        Job.decode(orjson.dumps(newer))
    with pytest.raises(BadMessage, match="missing or mistyped"):
        Job.decode(orjson.dumps({k: v for k, v in orjson.loads(job.encode()).items() if k != "body"}))
    with pytest.raises(BadMessage, match="not JSON"):
        Job.decode(b"{")
    extra = {**orjson.loads(job.encode()), "priority": "high"}  # unknown fields: ignored, not a new version
    assert Job.decode(orjson.dumps(extra)) == job


def test_a_record_reads_the_same_from_its_fields():
    record = Record.queued(Job.create("digits", None, b"{}", 60)).finish("succeeded", 200, b'{"predictions":[1]}')
    assert Record.from_fields(record.as_fields()) == record
    assert orjson.loads(record.document())["result"] == {"predictions": [1]}


def test_worker_help_needs_no_tensorflow_and_a_worker_without_a_broker_says_so():
    code = ("import sys; from api.cli import main\n"
            "try:\n    main(['worker', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--metrics-port" in result.stdout and "SERVE_QUEUE" in result.stdout
    off = subprocess.run([sys.executable, "-m", "api.cli", "worker"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "SERVE_QUEUE_BACKEND": "none"})
    assert off.returncode == 2 and "SERVE_QUEUE_BACKEND" in off.stderr


class FakeAutoScaling:
    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def set_instance_protection(self, **kwargs):
        if self.fail:
            raise RuntimeError("AccessDenied")
        self.calls.append(kwargs["ProtectedFromScaleIn"])


def test_an_instance_is_protected_while_its_worker_holds_jobs_and_released_once_idle():
    now = [0.0]
    client = FakeAutoScaling()
    protection = ScaleInProtection(client, "workers", "i-0123", idle_seconds=60, clock=lambda: now[0])
    protection.busy(True)
    protection.busy(True)  # one call per change, not per batch
    now[0] = 30
    protection.busy(False)  # idle, but not for long: keep it (a busy queue must not flip it)
    now[0] = 100
    protection.busy(False)
    assert client.calls == [True, False] and not protection.protected


def test_protection_that_cannot_be_set_never_stops_the_worker(caplog):
    protection = ScaleInProtection(FakeAutoScaling(fail=True), "workers", "i-0123")
    protection.busy(True)
    assert not protection.protected and "could not set scale-in protection" in caplog.text
