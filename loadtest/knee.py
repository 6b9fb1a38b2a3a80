"""The knee of a step run: per step, the throughput and latency once it settled, and the last step
before p95 bends up or requests start failing.

    python -m loadtest.knee run/loadtest/loadtest_stats_history.csv

Reads locust's stats history (one "Aggregated" row a second, its rates and percentiles over the last
10 seconds), so each step should last 15 seconds or more (`--shape step -t` over `--steps`).
"""
import sys
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from loadtest import reports

SETTLED_SECONDS = 5
"""Rows a user count must last to be a step rather than a moment of the ramp between two."""
BEND = 2.0
"""p95 more than this many times the step before's: requests have begun to queue."""


@dataclass(frozen=True)
class Step:
    users: int
    rps: float
    failures_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def line(self) -> str:
        return (f"{self.users:>6} {self.rps:>9.1f} {self.failures_per_s:>9.1f} {self.p50_ms:>8g} "
                f"{self.p95_ms:>8g} {self.p99_ms:>8g}")


def steps(rows: list[dict]) -> list[Step]:
    """The last row of every user count held for SETTLED_SECONDS or more, in the order they ran."""
    settled = []
    aggregated = [row for row in rows if row["Name"] == "Aggregated" and row["95%"] != "N/A"]
    for users, group in groupby(aggregated, key=lambda row: int(row["User Count"])):
        group = list(group)
        if users > 0 and len(group) >= SETTLED_SECONDS:
            last = group[-1]
            settled.append(Step(users, float(last["Requests/s"]), float(last["Failures/s"]),
                                float(last["50%"]), float(last["95%"]), float(last["99%"])))
    return settled


def knee(found: list[Step]) -> Step | None:
    """The step before the first that fails requests (shed, timed out) or whose p95 is over BEND times
    the step before's; None when even the lightest step fails, or no step bends (raise the peak)."""
    for before, step in zip([None, *found], found, strict=False):  # each step with the one before it
        if step.failures_per_s > 0 or (before and step.p95_ms > BEND * before.p95_ms):
            return before
    return None


def main(argv=None) -> int:
    found = steps(reports.rows(Path((argv or sys.argv[1:])[0])))
    print(" users     req/s  failed/s  p50 ms   p95 ms   p99 ms")
    for step in found:
        print(step.line())
    bend = knee(found)
    if bend:
        print(f"knee: {bend.users} users, {bend.rps:.1f} req/s, p95 {bend.p95_ms:g} ms")
    else:
        print("knee: none (no step bends: raise -u; or even the lightest step fails)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
