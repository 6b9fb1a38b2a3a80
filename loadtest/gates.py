"""SLO gates: the run's figures against the thresholds, each gate passed or broken, and the verdict.

The figures are the whole run's, every request of every user class together (locust's "Aggregated"
row): the error rate counts failures of any kind (a non-2xx, a wrong body, a bad request not refused
as it should be, a timeout), throughput is requests over the time from the first to the last.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01
    """Failed requests over all requests."""
    max_p95_ms: float = 500.0
    max_p99_ms: float = 1000.0
    min_rps: float = 1.0
    """Requests per second over the whole run, ramps included."""


@dataclass(frozen=True)
class Figures:
    requests: int
    failures: int
    p95_ms: float
    p99_ms: float
    rps: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Gate:
    name: str
    value: float
    threshold: float
    at_least: bool
    """A floor (throughput) rather than a ceiling (errors, latency)."""
    unit: str = ""

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.at_least else self.value <= self.threshold

    def line(self) -> str:
        relation = ">=" if self.at_least else "<="
        return (f"  {self.name:<12} {_show(self.value, self.unit):>12}  {relation} "
                f"{_show(self.threshold, self.unit):<12} {'pass' if self.passed else 'FAIL'}")


def _show(number: float, unit: str) -> str:
    if unit == "%":
        return f"{number:.2%}"
    if unit == "req/s":
        return f"{number:.2f} req/s"
    return f"{number:g} {unit}".strip()


def evaluate(figures: Figures, thresholds: Thresholds) -> list[Gate]:
    """Every gate; a run that sent no request breaks the first, whatever the others say."""
    return [
        Gate("requests", figures.requests, 1, at_least=True),
        Gate("error rate", figures.error_rate, thresholds.max_error_rate, at_least=False, unit="%"),
        Gate("p95 latency", figures.p95_ms, thresholds.max_p95_ms, at_least=False, unit="ms"),
        Gate("p99 latency", figures.p99_ms, thresholds.max_p99_ms, at_least=False, unit="ms"),
        Gate("throughput", figures.rps, thresholds.min_rps, at_least=True, unit="req/s"),
    ]


def verdict(gates: list[Gate]) -> str:
    broken = [gate.name for gate in gates if not gate.passed]
    result = f"FAIL ({', '.join(broken)})" if broken else "PASS"
    return "\n".join(["SLO gates:", *(gate.line() for gate in gates), f"SLO verdict: {result}"])


def passed(gates: list[Gate]) -> bool:
    return all(gate.passed for gate in gates)
