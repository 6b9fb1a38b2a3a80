"""A steady HTTP load for life-cycle tests: N clients in threads, each keeping its connection alive,
every answer counted: status codes, connection resets and timeouts."""
import threading
import time
from collections import Counter

import requests

# Every report of the run, printed again in pytest's terminal summary (tests/conftest.py), so CI's log
# shows the counts even though pytest captures the output of passing tests.
REPORTS: list[str] = []


class Load:
    def __init__(self, url: str, body: dict, clients: int = 32, timeout: float = 30.0):
        self.url, self.body, self.clients, self.timeout = url, body, clients, timeout
        self.outcomes: Counter = Counter()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _client(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                answer = session.post(self.url, json=self.body, timeout=self.timeout)
                outcome, detail = answer.status_code, answer.text[:200]
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
