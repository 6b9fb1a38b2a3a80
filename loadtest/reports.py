"""Locust's CSV reports, read: `loadtest.run --report-dir DIR` writes DIR/loadtest_stats.csv (the whole
run, a row per request name and an "Aggregated" one), DIR/loadtest_stats_history.csv (an "Aggregated" row
a second: counts since the start, rates and percentiles of the last 10 s with --csv-full-history) and
DIR/loadtest_failures.csv (a row per distinct failure message). Plain csv, no locust import."""
import csv
import re
from collections import Counter
from pathlib import Path

PREFIX = "loadtest"
"""loadtest.run's `--csv` prefix in the report folder."""
PERCENTILES = ("50%", "95%", "99%")


def rows(path: Path) -> list[dict]:
    """Every row of a locust CSV, by column name."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _rows_so_far(report_dir: Path, kind: str) -> list[dict]:
    """The rows of DIR/loadtest_<kind>.csv; none while locust has not written the file yet."""
    try:
        return rows(report_dir / f"{PREFIX}_{kind}.csv")
    except FileNotFoundError:
        return []


def number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # locust writes N/A for a percentile of an empty window


def _percentiles(row: dict) -> dict:
    return {f"p{p[:-1]}_ms": number(row.get(p)) for p in PERCENTILES}


def point(row: dict) -> dict:
    """One Aggregated row of the stats history: counts since the start (at: seconds since the epoch), rates
    and percentiles (ms) of locust's last 10 s window."""
    return {"at": number(row["Timestamp"]), "users": int(row["User Count"]),
            "requests": int(row["Total Request Count"]), "failures": int(row["Total Failure Count"]),
            "rps": number(row["Requests/s"]), "failures_per_s": number(row["Failures/s"]),
            **_percentiles(row)}


def history(report_dir: Path) -> list[dict]:
    """Every point of the stats history so far, oldest first."""
    return [point(row) for row in _rows_so_far(report_dir, "stats_history")
            if row.get("Name") == "Aggregated"]


def whole_run(report_dir: Path) -> dict | None:
    """The Aggregated row of the stats: the run's totals and its percentiles (ms) over every request."""
    for row in _rows_so_far(report_dir, "stats"):
        if row.get("Name") == "Aggregated":
            return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                    "rps": number(row["Requests/s"]), **_percentiles(row)}
    return None


def failure_kinds(report_dir: Path) -> dict[str, int]:
    """The failures by status: one row per distinct message (a 503's names its wait), too many to read;
    'HTTP 503' for an answer, the exception's name for a connection that failed. Most first."""
    kinds: Counter = Counter()
    for row in _rows_so_far(report_dir, "failures"):
        statuses = re.findall(r"(?:HTTP|got) (\d{3})", row["Error"])
        kinds[f"HTTP {statuses[-1]}" if statuses else row["Error"].split("(")[0]] += int(row["Occurrences"])
    return dict(kinds.most_common())


def point_at(points: list[dict], at: float) -> dict | None:
    """The last history point written by `at`."""
    before = [p for p in points if p["at"] <= at]
    return before[-1] if before else None


def ok_rate(points: list[dict], after: float) -> float:
    """Successful requests per second between the first point at or past `after` and the last."""
    steady = [p for p in points if p["at"] >= after]
    if len(steady) < 2 or steady[-1]["at"] <= steady[0]["at"]:
        return 0.0
    first, last = steady[0], steady[-1]
    ok = (last["requests"] - last["failures"]) - (first["requests"] - first["failures"])
    return ok / (last["at"] - first["at"])
