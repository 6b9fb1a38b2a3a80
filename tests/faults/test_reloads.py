"""Reloads and recycling under a steady load through nginx: new model versions and releases roll out,
and workers past their request limit are replaced, with no request failed and none waiting for a
model load. Each test prints its counts.

The mechanism (api/process/arbiter.py): a worker is replaced by starting its successor first and stopping
it only once the successor's model is warm, so the instance never has fewer warm workers than it
should. gunicorn's own HUP and max_requests stop the old worker first.
"""
import shutil
import signal
import time
from collections import Counter

import pytest

from tests.load import Background, Load, wait_until
from tests.servers import Stack, running

CLIENTS = 32


def v2_body(digits) -> dict:
    image = digits[0][:1]
    return {"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                        "data": image.ravel().tolist()}]}


class FewestReady(Background):
    """Watches the readiness markers; `fewest` is the smallest number of warm workers ever seen."""

    def __init__(self, stack):
        super().__init__(join_s=None)
        self.stack, self.fewest = stack, len(stack.ready_pids())

    def _run(self):
        while not self._stop.is_set():
            self.fewest = min(self.fewest, len(self.stack.ready_pids()))
            time.sleep(0.01)


def load_seconds(log: str) -> list[float]:
    """Seconds each worker spent loading and warming its model, from its `model loaded` log lines."""
    import re
    return [float(load) + float(warm) for load, warm in re.findall(r"load_s=([\d.]+) warmup_s=([\d.]+)", log)]


@pytest.fixture()
def own_store(store, tmp_path):
    """A store of its own, holding digits version 1: the test publishes new versions into it."""
    root = tmp_path / "store"
    shutil.copytree(store / "digits" / "1", root / "digits" / "1")
    return root


def test_reloads_in_a_row_roll_out_new_versions_without_a_failure_or_a_stall(own_store, tmp_path, digits):
    """A new model version published and reloaded (SIGHUP), then at once a reload with no new version (a
    new release of the code: every worker imports it afresh), all under load."""
    served = Counter()
    answers = []

    def record(answer):
        version = answer.json()["model_version"]
        served[version] += 1
        answers.append(version)

    stack = Stack(tmp_path, model_store=own_store, workers=2, threads=4, model_versions="latest")
    with running(stack):
        took = []
        with Load(stack.url + "/v2/models/digits/infer", v2_body(digits), CLIENTS, on_answer=record) as load, \
                FewestReady(stack) as ready:
            load.wait_for(300)
            for version in (2, None):
                if version is not None:  # publish the new version as a deploy would: copy, then reload
                    shutil.copytree(own_store / "digits" / "1", own_store / "digits" / str(version))
                old, started = stack.worker_pids(), time.monotonic()
                stack.process.send_signal(signal.SIGHUP)
                wait_until(lambda: not (stack.worker_pids() & old) and len(stack.ready_pids()) == 2, timeout=120,
                           what="a reload did not finish")
                took.append(time.monotonic() - started)
            after_last = len(answers)
            load.wait_for(load.sent + 300)
        line = load.report(f"2 reloads in a row (version 2, then a release), each took "
                           f"{', '.join(f'{t:.1f}' for t in took)} s; answers by version {dict(sorted(served.items()))}")
        loads = load_seconds(stack.log())
    assert load.failed == 0, load.failures[:5]
    assert ready.fewest >= 2, "a worker stopped before its successor was warm"
    assert set(answers[after_last:]) == {"2"}, "the newest version must serve once the reloads are done"
    assert served["1"], "the first version served until the reload"
    # No request waited for a worker to start: one start (fork, import, load, warm-up) takes about half
    # a reload of two workers; the slowest answer must be far below it.
    worker_start = min(took) / 2
    assert len(loads) == 2 + 4 and max(load.latencies) < worker_start / 2, (worker_start, loads, line)


def test_max_requests_recycles_workers_without_a_failure(store, tmp_path, digits):
    """Workers replaced every 600 to 900 requests under load until both first workers are gone: each stops
    only once its successor is warm."""
    stack = Stack(tmp_path, model_store=store, workers=2, threads=4, model_versions="latest",
                  max_requests=600, max_requests_jitter=300)
    with running(stack):
        first = stack.worker_pids()
        with Load(stack.url + "/v2/models/digits/infer", v2_body(digits), CLIENTS) as load, \
                FewestReady(stack) as ready:
            wait_until(lambda: not (stack.worker_pids() & first) and len(stack.ready_pids()) == 2, timeout=150,
                       what="both first workers were not recycled")
            load.wait_for(load.sent + 200)
        recycled = stack.log().count("is warm: stopping worker")
        load.report(f"max_requests 600 + jitter 300: {recycled} workers recycled")
        assert recycled >= 2 and stack.log().count("reached its request limit") >= 2
    assert load.failed == 0, load.failures[:5]
    assert ready.fewest >= 2, "a worker stopped before its successor was warm"
    assert "WORKER TIMEOUT" not in stack.log()
