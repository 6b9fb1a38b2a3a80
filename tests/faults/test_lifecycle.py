"""No request lost to the server's own life cycle, proven under a steady load through nginx.

Each test prints its counts: requests sent, answered 200, failed (any other status, reset or timeout).
"""
import os
import signal
import threading
import time

import pytest
import requests

from tests.load import REPORTS, Load, wait_until
from tests.models import build_slow_model
from tests.servers import Stack, running

CLIENTS = 32


@pytest.fixture()
def fresh_stack(store, tmp_path):
    """A stack of its own: these tests kill and restart its workers."""
    with running(Stack(tmp_path, model_store=store, workers=2, threads=4, model_versions="latest")) as served:
        yield served


def digit_body(digits) -> dict:
    return {"instances": digits[0][:1].tolist()}


def test_a_worker_killed_with_sigkill_loses_no_request(fresh_stack, digits):
    stack = fresh_stack
    victim = min(stack.worker_pids())
    with Load(stack.url + "/predict", digit_body(digits), CLIENTS) as load:
        load.wait_for(300)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(stack.ready_pids() - {victim}) == 2, what="no warm replacement")
        sent_at_replacement = load.sent
        load.wait_for(sent_at_replacement + 300)
    load.report("SIGKILL one worker")
    assert load.failed == 0, load.failures[:5]
    assert load.sent >= 600


def test_a_sighup_reload_loses_no_request_and_never_runs_short_of_warm_workers(fresh_stack, digits):
    stack = fresh_stack
    old = stack.worker_pids()
    fewest_ready = [len(stack.ready_pids())]
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            fewest_ready[0] = min(fewest_ready[0], len(stack.ready_pids()))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    with Load(stack.url + "/predict", digit_body(digits), CLIENTS) as load:
        load.wait_for(300)
        watcher.start()
        os.kill(stack.gunicorn_pid, signal.SIGHUP)
        wait_until(lambda: not (stack.worker_pids() & old) and len(stack.ready_pids()) == 2, timeout=120,
                   what="reload did not finish")
        watching.set()
        watcher.join()
        sent_after = load.sent
        load.wait_for(sent_after + 300)
    load.report("SIGHUP reload of all workers")
    assert load.failed == 0, load.failures[:5]
    assert fewest_ready[0] >= 2, "a worker stopped before its replacement was warm"
    log = stack.log()
    assert log.count("is warm: stopping worker") == 2 and "rolling restart done" in log


def test_sigterm_lets_in_flight_requests_finish(store, tmp_path, digits):
    """Requests the workers hold when gunicorn gets SIGTERM (each ~0.2 s of inference, 8 at once) all answer 200."""
    build_slow_model(store)
    stack = Stack(tmp_path, model_store=store, model_name="slow", workers=2, threads=4, graceful_timeout=20,
                  max_queue_wait=30)
    try:
        stack.wait_ready(workers=2)
        body = {"instances": digits[0][:32].tolist()}
        results, started = [], time.monotonic()

        def one():
            try:
                results.append(requests.post(stack.url + "/predict", json=body, timeout=60).status_code)
            except requests.RequestException as exc:
                results.append(type(exc).__name__)

        clients = [threading.Thread(target=one) for _ in range(8)]  # one per worker thread
        for client in clients:
            client.start()
        wait_until(lambda: _in_flight(stack) >= 8, timeout=10, what="requests never reached the workers")
        os.kill(stack.gunicorn_pid, signal.SIGTERM)
        for client in clients:
            client.join()
        took = time.monotonic() - started
        line = (f"[SIGTERM with 8 in flight] requests sent=8 ok={results.count(200)} "
                f"failed={8 - results.count(200)} all answered in {took:.2f} s (graceful timeout 20 s) "
                f"outcomes={results}")
        print(line)
        REPORTS.append(line)
        assert results == [200] * 8
        assert took < 20
    finally:
        stack.stop()


def _in_flight(stack) -> int:
    """Requests nginx has sent upstream and not yet seen answered, read from nginx's stub_status."""
    text = requests.get(stack.status_url + "/nginx_status", timeout=2).text
    writing = int(text.split("Writing:")[1].split()[0])
    return writing - 1  # this status request itself is being written


def test_overload_is_refused_fast_with_503_and_retry_after(store, tmp_path, digits):
    """Far more work than two workers can do in time: the excess gets 503 + Retry-After, not a timeout."""
    build_slow_model(store)
    stack = Stack(tmp_path, model_store=store, model_name="slow", workers=2, threads=4, max_queue_wait=0.5)
    try:
        stack.wait_ready(workers=2)
        with Load(stack.url + "/predict", {"instances": digits[0][:32].tolist()}, clients=48) as load:
            load.wait_for(200, timeout=60)
        load.report("overload: 48 clients, ~0.2 s of work each, 2 workers")
        assert load.outcomes[200] > 0 and load.outcomes[503] > 0
        assert set(load.outcomes) <= {200, 503}, load.outcomes
        refusals = [f for f in load.failures if f.startswith("503")]
        assert all("overloaded" in f for f in refusals), refusals[:3]
        assert max(load.latencies) < 10, "a request waited far past the queue limit"
        answer = requests.post(stack.url + "/predict", json={"instances": digits[0][:1].tolist()}, timeout=10)
        assert answer.status_code == 200  # the overload passed, nothing left broken
    finally:
        stack.stop()
