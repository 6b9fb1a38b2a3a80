"""gunicorn's graceful stop and overload, through nginx. (Worker deaths, reloads, recycling and drains
have their own files in tests/faults/.)

Each test prints its counts: requests sent, answered 200, failed (any other status, reset or timeout).
"""
import os
import signal
import threading
import time

import requests

from tests.load import REPORTS, Load, wait_until
from tests.models import build_slow_model
from tests.servers import Stack


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
