"""Stopping the instance's service under load, as systemd and a rollout stop it: readiness turns 503
first, the load balancer stops sending, requests in flight and queued finish, nothing is reset.

`HealthCheck` plays the load balancer: it polls /ready and deregisters the instance (stops sending new
requests) after two failed checks, as an ALB does, only faster.
"""
import signal
import threading
import time

import requests

from tests.load import REPORTS, HealthCheck, Load, wait_until
from tests.models import build_slow_model
from tests.servers import Gunicorn, Stack

CLIENTS = 32
DRAIN = 2.0  # SERVE_DRAIN_SECONDS: time for the health check to see 503 (the ALB needs interval x threshold)


def test_a_stop_drains_readiness_first_and_loses_no_request(store, tmp_path, digits):
    stack = Stack(tmp_path, model_store=store, workers=2, threads=4, model_versions="latest", drain_seconds=DRAIN)
    try:
        stack.wait_ready(workers=2)
        with Load(stack.url + "/predict", {"instances": digits[0][:1].tolist()}, CLIENTS) as load, \
                HealthCheck(stack.url + "/ready", load) as check:
            load.wait_for(300)
            stopped_at = time.monotonic()
            stack.process.send_signal(signal.SIGTERM)  # what systemd's stop and `make serve`'s Ctrl-C send
            exit_code = stack.process.wait(60)
            took = time.monotonic() - stopped_at
        load.report(f"stop under load, drain {DRAIN:g} s: not ready after "
                    f"{check.first_unhealthy_at - stopped_at:.2f} s, deregistered after "
                    f"{check.deregistered_at - stopped_at:.2f} s, exited {exit_code} after {took:.2f} s")
    finally:
        stack.stop()
    assert load.failed == 0, load.failures[:5]
    assert check.first_unhealthy_at - stopped_at < 1.0, "readiness must turn 503 at once"
    assert check.deregistered_at - stopped_at < DRAIN, "the server stopped accepting before the check saw it leave"
    assert exit_code == 0 and took >= DRAIN
    # the clients' keep-alive connections, idle since the deregistration, do not hold the stop to
    # gunicorn's graceful time-out (api/process/workers.py)
    assert took < DRAIN + 5
    statuses = {line["status"] for line in stack.access_lines() if line["uri"] == "/predict"}
    assert statuses == {200}, statuses


def test_requests_queued_at_a_stop_all_finish(store, tmp_path, digits):
    """24 requests of ~0.2 s of work each, 8 running and 16 queued (2 workers x 4 threads), when the
    stack is told to stop: every one answers 200."""
    build_slow_model(store)
    stack = Stack(tmp_path, model_store=store, model_name="slow", workers=2, threads=4, graceful_timeout=20,
                  max_queue_wait=30, drain_seconds=0.5)
    try:
        stack.wait_ready(workers=2)
        body = {"instances": digits[0][:32].tolist()}
        results = []

        def one():
            try:
                results.append(requests.post(stack.url + "/predict", json=body, timeout=60).status_code)
            except requests.RequestException as exc:
                results.append(type(exc).__name__)

        clients = [threading.Thread(target=one) for _ in range(24)]
        for client in clients:
            client.start()
        wait_until(lambda: _writing(stack) >= 24, timeout=10, what="requests never reached nginx")
        stopped_at = time.monotonic()
        stack.process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join()
        took = time.monotonic() - stopped_at
        exit_code = stack.process.wait(60)
    finally:
        stack.stop()
    line = (f"[stop with 8 running and 16 queued] requests sent=24 ok={results.count(200)} "
            f"failed={24 - results.count(200)} all answered {took:.2f} s after the stop, exit {exit_code}")
    print(line)
    REPORTS.append(line)
    assert results == [200] * 24, results
    assert exit_code == 0


def _writing(stack) -> int:
    """Requests nginx holds (reading their answer), from stub_status, less this status request itself."""
    text = requests.get(stack.status_url + "/nginx_status", timeout=2).text
    return int(text.split("Writing:")[1].split()[0]) - 1



def test_gunicorn_alone_drains_on_sigterm_as_systemd_stops_it(store, tmp_path, digits):
    """On an instance systemd stops the gunicorn unit itself (KillSignal=SIGTERM to the master): the
    master turns /ready to 503 and serves on for the drain before its graceful stop."""
    server = Gunicorn(tmp_path, model_store=store, workers=2, threads=4, model_versions="latest",
                      drain_seconds=DRAIN)
    try:
        server.wait_ready()
        server.wait_all_workers_ready(2)
        with Load(server.url + "/predict", {"instances": digits[0][:1].tolist()}, CLIENTS) as load, \
                HealthCheck(server.url + "/ready", load) as check:
            load.wait_for(300)
            stopped_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            exit_code = server.process.wait(60)
            took = time.monotonic() - stopped_at
        load.report(f"gunicorn alone stopped under load, drain {DRAIN:g} s: not ready after "
                    f"{check.first_unhealthy_at - stopped_at:.2f} s, exited {exit_code} after {took:.2f} s")
    finally:
        server.stop()
    assert load.failed == 0, load.failures[:5]
    assert check.first_unhealthy_at - stopped_at < 1.0 and check.deregistered_at - stopped_at < DRAIN
    assert exit_code == 0 and took >= DRAIN
    # the clients' keep-alive connections, idle since the deregistration, do not hold the stop to
    # gunicorn's graceful time-out (api/process/workers.py)
    assert took < DRAIN + 5
