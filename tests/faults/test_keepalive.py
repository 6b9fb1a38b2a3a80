"""Keep-alive races: a request sent on an idle connection at the moment the far side closes it fails
(through nginx, a 502 unless retried). Each hop must close idle connections before the hop in front
of it would reuse them: load balancer < nginx's client keep-alive, nginx's upstream keep-alive <
gunicorn's. The settings refuse any other order (tests/test_settings.py, tests/test_nginx.py check the
rendered configuration); here real connections go idle for every gap around every timeout.

The timeouts are scaled down (seconds instead of a minute) so that each gap is tried in CI's time.
"""
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
    session = requests.Session()
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


def test_clients_reusing_idle_connections_at_every_gap_get_no_error(stack, digits):
    """Clients in parallel, each idle for its own gap around the load balancer's idle timeout and
    nginx's client keep-alive, then reusing (or, past nginx's timeout, reopening) their connection."""
    body, outcomes, lock = {"instances": digits[0][:1].tolist()}, Counter(), threading.Lock()
    errors_before = len(nginx_upstream_errors(stack.log()))
    clients = [threading.Thread(target=reuse_after, args=(stack.url + "/predict", body, gap, outcomes, lock))
               for gap in gaps(LB_IDLE, CLIENT_KEEPALIVE) for _ in range(2)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    errors = nginx_upstream_errors(stack.log())[errors_before:]
    _report("client -> nginx idle gaps around 1 s and 2 s", outcomes, errors)
    assert outcomes[502] == 0
    assert set(outcomes) == {200}, outcomes
    assert not errors, errors[:3]


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
