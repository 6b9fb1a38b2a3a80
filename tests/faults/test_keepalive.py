"""Keep-alive races: a request sent on an idle connection at the moment the far side closes it fails
(through nginx, a 502 unless retried). Each hop must close idle connections before the hop in front
of it would reuse them: load balancer < nginx's client keep-alive, nginx's upstream keep-alive <
gunicorn's. The settings refuse any other order (tests/test_settings.py, tests/test_nginx.py check the
rendered configuration); here real connections go idle for every gap around every timeout.

The timeouts are scaled down (seconds instead of a minute) so that each gap is tried in CI's time.
The balancer hop has a negative control: a balancer keeping connections longer than nginx does fail.
The nginx -> gunicorn hop has none: nginx drops a cached connection as soon as gunicorn's close
reaches it, so with that order inverted on purpose these gaps still saw no error (the race is narrower
than a gap can aim at); the settings' validator is what keeps that order.
"""
import http.client
import json
import threading
import time
from collections import Counter

import pytest
import requests

from tests.load import REPORTS
from tests.servers import Stack, running

LB_IDLE, CLIENT_KEEPALIVE, UPSTREAM_KEEPALIVE, GUNICORN_KEEPALIVE = 1, 2, 3, 4
AROUND = (-0.15, 0.0, 0.15)  # seconds either side of a timeout, and right on it


@pytest.fixture(scope="module")
def stack(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keepalive")
    with running(Stack(tmp, model_store=store, workers=2, threads=4, model_versions="latest",
                       load_balancer_idle_timeout=LB_IDLE, client_keepalive=CLIENT_KEEPALIVE,
                       upstream_keepalive=UPSTREAM_KEEPALIVE, keepalive=GUNICORN_KEEPALIVE)) as served:
        yield served


def gaps(*timeouts: float) -> list[float]:
    return [t + d for t in timeouts for d in AROUND]


def reuse_after(url: str, body: dict, gap: float, outcomes: Counter, lock: threading.Lock, times: int = 2) -> None:
    """One client on one keep-alive connection: a request, `gap` seconds idle, another, ... ."""
    with requests.Session() as session:
        for attempt in range(times + 1):
            if attempt:
                time.sleep(gap)
            try:
                outcome = session.post(url, json=body, timeout=10).status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes[outcome] += 1


def nginx_upstream_errors(log: str) -> list[str]:
    """nginx's [error] lines about its upstream connections (a reused connection gunicorn had closed)."""
    return [line for line in log.splitlines() if "[error]" in line and "upstream" in line]


def test_nginx_reusing_idle_upstream_connections_at_every_gap_gets_no_502(stack, digits):
    """One client at a time, so that nginx reuses its one most recent upstream connection after exactly
    the client's gap: around nginx's upstream keep-alive and around gunicorn's."""
    body, outcomes, lock = {"instances": digits[0][:1].tolist()}, Counter(), threading.Lock()
    errors_before = len(nginx_upstream_errors(stack.log()))
    for gap in gaps(UPSTREAM_KEEPALIVE, GUNICORN_KEEPALIVE):
        reuse_after(stack.url + "/predict", body, gap, outcomes, lock, times=1)
    errors = nginx_upstream_errors(stack.log())[errors_before:]
    _report("nginx -> gunicorn idle gaps around 3 s and 4 s", outcomes, errors)
    assert set(outcomes) == {200}, outcomes
    assert not errors, errors[:3]


class Balancer:
    """One connection as a load balancer holds it: reused while it has been idle less than the balancer's
    idle timeout, else closed and opened afresh. Like a balancer, it never checks whether nginx closed
    the connection meanwhile: with the timeouts in order it needs not."""

    def __init__(self, port: int, idle_timeout: float):
        self.port, self.idle_timeout = port, idle_timeout
        self.connection, self.last_used = None, 0.0

    def post(self, path: str, body: bytes):
        if self.connection is None or time.monotonic() - self.last_used >= self.idle_timeout:
            if self.connection is not None:
                self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            self.connection.request("POST", path, body, {"Content-Type": "application/json"})
            answer = self.connection.getresponse()
            answer.read()
            outcome = answer.status
        except (http.client.HTTPException, OSError) as exc:
            outcome = type(exc).__name__
            self.connection.close()
            self.connection = None
        self.last_used = time.monotonic()
        return outcome

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def balancers_reusing_after(stack, body: bytes, idle_timeout: float, gaps_: list[float]) -> Counter:
    """A balancer connection per gap, in parallel: a request, `gap` seconds idle, another, twice."""
    outcomes, lock = Counter(), threading.Lock()

    def run(gap):
        balancer = Balancer(stack.port, idle_timeout)
        for attempt in range(3):
            if attempt:
                time.sleep(gap)
            outcome = balancer.post("/predict", body)
            with lock:
                outcomes[outcome] += 1
        balancer.close()

    clients = [threading.Thread(target=run, args=(gap,)) for gap in gaps_ for _ in range(2)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    return outcomes


def test_a_load_balancer_reusing_idle_connections_at_every_gap_gets_no_error(stack, digits):
    """Idle gaps around the balancer's idle timeout (1 s) and nginx's client keep-alive (2 s): the
    balancer closes first, so it never sends on a connection nginx is closing."""
    body = json.dumps({"instances": digits[0][:1].tolist()}).encode()
    errors_before = len(nginx_upstream_errors(stack.log()))
    outcomes = balancers_reusing_after(stack, body, LB_IDLE, gaps(LB_IDLE, CLIENT_KEEPALIVE))
    errors = nginx_upstream_errors(stack.log())[errors_before:]
    _report("load balancer -> nginx idle gaps around 1 s and 2 s", outcomes, errors)
    assert set(outcomes) == {200}, outcomes
    assert not errors, errors[:3]


def test_a_load_balancer_idle_timeout_longer_than_nginxs_keepalive_would_fail(stack, digits):
    """The same balancer with its idle timeout (3 s) past nginx's keep-alive (2 s), the order the
    settings refuse: sent on connections nginx has just closed, its requests fail. This is what the
    test above would see if the order were broken."""
    body = json.dumps({"instances": digits[0][:1].tolist()}).encode()
    outcomes = balancers_reusing_after(stack, body, CLIENT_KEEPALIVE + 1, [CLIENT_KEEPALIVE + 0.15, CLIENT_KEEPALIVE + 0.5])
    _report("load balancer idle 3 s, nginx keep-alive 2 s (wrong order, on purpose)", outcomes, [])
    assert sum(outcomes.values()) - outcomes[200] > 0, outcomes


def _report(name: str, outcomes: Counter, errors: list[str]) -> None:
    line = (f"[keep-alive: {name}] requests sent={sum(outcomes.values())} ok={outcomes[200]} "
            f"failed={sum(outcomes.values()) - outcomes[200]} 502s={outcomes[502]} "
            f"nginx upstream errors={len(errors)} outcomes={dict(outcomes)}")
    print(line)
    REPORTS.append(line)


def test_a_client_keepalive_not_longer_than_the_load_balancers_idle_timeout_is_refused():
    from pydantic import ValidationError

    from api.settings import Settings
    with pytest.raises(ValidationError, match="client_keepalive"):
        Settings(load_balancer_idle_timeout=60, client_keepalive=60)
    with pytest.raises(ValidationError, match="upstream_keepalive"):
        Settings(upstream_keepalive=90, keepalive=90)
