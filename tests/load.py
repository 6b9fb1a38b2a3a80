"""A steady HTTP load for life-cycle tests: N clients in threads, each keeping its connection alive,
every answer counted: status codes, connection resets and timeouts. `HealthCheck` plays the load
balancer in front: it polls /ready and stops routing new requests once the server says it is leaving."""
import threading
import time
from collections import Counter

import requests

from bench.harness import wait_until

__all__ = ["REPORTS", "Background", "HealthCheck", "Load", "wait_until"]

# Every report of the run, printed again in pytest's terminal summary (tests/conftest.py), so CI's log
# shows the counts even though pytest captures the output of passing tests.
REPORTS: list[str] = []


class Background:
    """`count` daemon threads running `self._run` from the start of a `with` block to its end (or `stop()`),
    each of them until `self._stop` is set; `stop` waits up to `join_s` seconds for each."""

    def __init__(self, count: int = 1, join_s: float | None = 5.0):
        self.join_s = join_s
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.join_s)


class Load(Background):
    def __init__(self, url: str, body: dict, clients: int = 32, timeout: float = 30.0, on_answer=None,
                 source_address: str | None = None):
        super().__init__(clients, join_s=timeout + 5)
        self.url, self.body, self.clients, self.timeout = url, body, clients, timeout
        self.source_address = source_address  # e.g. 127.0.0.2: another client than an attacker on 127.0.0.1
        self.on_answer = on_answer  # called with every 200 answer, e.g. to see which model version served
        self.routing = threading.Event()  # cleared: no new request is sent (a load balancer deregistered us)
        self.routing.set()
        self.outcomes: Counter = Counter()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def _run(self) -> None:
        with requests.Session() as session:
            if self.source_address:
                session.mount("http://", _FromAddress(self.source_address))
            self._send_until_stopped(session)

    def _send_until_stopped(self, session: requests.Session) -> None:
        while not self._stop.is_set():
            if not self.routing.wait(0.05):
                continue
            started = time.monotonic()
            try:
                answer = session.post(self.url, json=self.body, timeout=self.timeout)
                outcome, detail = answer.status_code, answer.text[:200]
                if outcome == 200 and self.on_answer is not None:
                    self.on_answer(answer)
            except requests.RequestException as exc:
                outcome, detail = type(exc).__name__, str(exc)[:200]
            with self._lock:
                self.outcomes[outcome] += 1
                self.latencies.append(time.monotonic() - started)
                if outcome != 200:
                    self.failures.append(f"{outcome}: {detail}")

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return self.sent - self.outcomes[200]

    def wait_for(self, requests_done: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < requests_done and time.monotonic() < deadline:
            time.sleep(0.05)

    def report(self, name: str) -> str:
        worst = max(self.latencies, default=0.0)
        line = (f"[{name}] requests sent={self.sent} ok={self.outcomes[200]} failed={self.failed} "
                f"worst_latency_s={worst:.3f} outcomes={dict(self.outcomes)}")
        print(line)
        REPORTS.append(line)
        return line


class _FromAddress(requests.adapters.HTTPAdapter):
    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


class HealthCheck(Background):
    """A load balancer's health check, fast: polls `url`; after `unhealthy` answers in a row that are not
    200 it stops routing `load`'s new requests (requests already sent still finish)."""

    def __init__(self, url: str, load: Load, interval: float = 0.1, unhealthy: int = 2):
        super().__init__()
        self.url, self.load, self.interval, self.unhealthy = url, load, interval, unhealthy
        self.first_unhealthy_at: float | None = None
        self.deregistered_at: float | None = None

    def _run(self) -> None:
        in_a_row = 0
        while not self._stop.is_set() and self.deregistered_at is None:
            try:
                healthy = requests.get(self.url, timeout=2).status_code == 200
            except requests.RequestException:
                healthy = False
            in_a_row = 0 if healthy else in_a_row + 1
            if in_a_row == 1 and self.first_unhealthy_at is None:
                self.first_unhealthy_at = time.monotonic()
            if in_a_row >= self.unhealthy:
                self.load.routing.clear()
                self.deregistered_at = time.monotonic()
            self._stop.wait(self.interval)
