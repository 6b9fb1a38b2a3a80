"""`make soak` (python -m bench.soak): the stack under a paced locust load at ~70% of its capacity for a
long time, watched for what only time shows: memory creeping up, file descriptors leaking, nginx errors.

    python -m bench.soak [--duration 1h] [--users N | --rate R] [--capacity RPS] [--model digits]

1. starts our stack (scripts/run_stack.py, as `make serve`) with its own ports and run dir;
2. measures capacity, unless `--capacity` gives it: a short closed-loop locust run (think time 0) of
   the well-formed users, ok requests per second after its warm-up;
3. runs the project's locust users (loadtest/locustfile.py, via loadtest.run) paced by think time so the
   offered load is `--load` (0.7) of that capacity, for `--duration`;
4. samples when the load is steady and every `--interval` until the end: each gunicorn worker's RSS,
   the open fds of the workers, the master and nginx, nginx's log lines by level, log sizes, CPU used,
   and locust's counts, rates and percentiles;
5. prints start against end and a verdict (exit 1: failures, new nginx errors, a replaced worker, RSS
   grown past `--max-rss-growth`); the raw samples go to bench/results/soak-<time>.json.
Not in CI: it is meant to run for an hour. locust runs on the server's cores; the report says how much
of them it took.
"""
import argparse
import csv
import io
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

from bench.models import digits_store
from bench.servers import ROOT, OurStack, children

RESULTS = ROOT / "bench" / "results"
# The locustfile's classes as (weight, think-time factor): the paced rate depends on the mix. Mirrors
# loadtest/locustfile.py (not imported: importing locust monkey-patches this process with gevent); a
# drift shows as the achieved rate missing the target.
USER_MIX = {"PredictUser": (4, 1.0), "ImageUser": (2, 1.0), "TFServingUser": (1, 1.0), "V2User": (1, 1.0),
            "BadRequestUser": (1, 4.0)}
# Capacity is what real clients get: the well-formed requests only (the cheap 4xx would inflate it).
CALIBRATION_USERS = [name for name in USER_MIX if name != "BadRequestUser"]
NGINX_LINE = re.compile(rb"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] ", re.MULTILINE)
ERROR_LEVELS = ("error", "crit", "alert", "emerg")
PERCENTILES = ("50%", "95%", "99%")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- pure functions: parsing, pacing, summarising ------------------------------------------------------

def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1h', '1h30m' to seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def vmrss_mib(status: str) -> float | None:
    """/proc/<pid>/status's VmRSS in MiB; None for a zombie, which has none."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def cpu_seconds(stat: str, ticks_per_s: int) -> float:
    """utime + stime of /proc/<pid>/stat; the fields are counted after the command name, which may
    itself hold spaces and parentheses."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def machine_cpu_seconds(proc_stat: str, ticks_per_s: int) -> dict:
    """From /proc/stat's first line: CPU time every process on the machine used, and steal, the time the
    hypervisor gave this VM's cores to someone else (a VM that runs slow for a while shows it here)."""
    fields = proc_stat.split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return {"all processes": (user + nice + system + irq + softirq) / ticks_per_s,
            "steal": steal / ticks_per_s}


def machine_now() -> dict:
    return machine_cpu_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def nginx_levels(text: bytes) -> Counter:
    """nginx's own lines ('2024/01/31 12:00:00 [error] 12#12: ...') by level; the JSON lines of gunicorn
    and the app that share the stream do not match."""
    return Counter(level.decode() for level in NGINX_LINE.findall(text))


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # locust writes N/A for a percentile of an empty window


def locust_point(row: dict) -> dict:
    """One Aggregated row of loadtest_stats_history.csv: counts since the start, rates and percentiles of
    locust's last 10 s window."""
    return {"at": _number(row["Timestamp"]), "users": int(row["User Count"]),
            "requests": int(row["Total Request Count"]), "failures": int(row["Total Failure Count"]),
            "rps": _number(row["Requests/s"]), "failures_per_s": _number(row["Failures/s"]),
            **{f"p{p[:-1]}_ms": _number(row.get(p)) for p in PERCENTILES}}


def history(text: str) -> list[dict]:
    return [locust_point(row) for row in csv_rows(text) if row.get("Name") == "Aggregated"]


def point_at(points: list[dict], at: float) -> dict | None:
    """The last history point written by `at`."""
    before = [p for p in points if p["at"] <= at]
    return before[-1] if before else None


def whole_run(stats_text: str) -> dict | None:
    """The Aggregated row of loadtest_stats.csv: the run's totals and its percentiles over every request."""
    for row in csv_rows(stats_text):
        if row.get("Name") == "Aggregated":
            return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                    "rps": _number(row["Requests/s"]),
                    **{f"p{p[:-1]}_ms": _number(row.get(p)) for p in PERCENTILES}}
    return None


def failure_kinds(failures_text: str) -> dict[str, int]:
    """loadtest_failures.csv by status: one row per distinct message (a 503's names its wait), too many
    to read; 'HTTP 503' for an answer, the exception's name for a connection that failed."""
    kinds: Counter = Counter()
    for row in csv_rows(failures_text):
        statuses = re.findall(r"(?:HTTP|got) (\d{3})", row["Error"])
        kinds[f"HTTP {statuses[-1]}" if statuses else row["Error"].split("(")[0]] += int(row["Occurrences"])
    return dict(kinds.most_common())


def spread(points: list[dict], start: float, end: float) -> dict:
    """Least, median and most of each second's last-10-s p95 and p99 between two moments: latency that
    drifts up over the soak, which the run's overall percentiles average away."""
    window = [p for p in points if start <= p["at"] <= end]
    figures = {}
    for key in ("p95_ms", "p99_ms"):
        values = sorted(p[key] for p in window if p[key] is not None)
        if values:
            figures[key] = {"min": values[0], "median": values[len(values) // 2], "max": values[-1]}
    return figures


def ok_rate(points: list[dict], after: float) -> float:
    """Successful requests per second between the first point at or past `after` and the last."""
    steady = [p for p in points if p["at"] >= after]
    if len(steady) < 2 or steady[-1]["at"] <= steady[0]["at"]:
        return 0.0
    first, last = steady[0], steady[-1]
    ok = (last["requests"] - last["failures"]) - (first["requests"] - first["failures"])
    return ok / (last["at"] - first["at"])


def rate_per_user(think_time: float, mix: dict = USER_MIX) -> float:
    """Requests per second one user sends, on average over the mix: each waits a mean of think_time x its
    factor between requests. The response time (a few ms against a second) is left out."""
    weights = sum(w for w, _ in mix.values())
    return sum(w / (think_time * factor) for w, factor in mix.values()) / weights


def pace(rate: float, users: int | None, think_time: float) -> tuple[int, float]:
    """(users, think time) that offer `rate` requests/s: open-loop in effect while the think time dwarfs
    the response time, so a slower server does not quietly get less load, as a closed loop would give it."""
    if users:
        return users, users * rate_per_user(1.0) / rate
    return max(1, math.ceil(rate / rate_per_user(think_time))), think_time


def growth(start: float, end: float, hours: float) -> dict:
    change = end - start
    percent = 100 * change / start if start else 0.0
    return {"start": start, "end": end, "change": change, "percent": percent,
            "percent_per_hour": percent / hours if hours else 0.0}


def summarise(start: dict, end: dict, run: dict | None, target_rps: float) -> dict:
    """Start against end: per-worker RSS growth (workers alive at both), fds, nginx lines, the load."""
    hours = (end["at"] - start["at"]) / 3600
    before = {w["pid"]: w for w in start["workers"]}
    after = {w["pid"]: w for w in end["workers"]}
    kept = [pid for pid in before if pid in after]
    points = [start["locust"], end["locust"]]
    achieved = ok_rate(points, start["locust"]["at"]) if all(p["at"] for p in points) else 0.0
    sent = end["locust"]["requests"] - start["locust"]["requests"]
    return {
        "seconds": end["at"] - start["at"],
        "rss_mib": {pid: growth(before[pid]["rss_mib"], after[pid]["rss_mib"], hours) for pid in kept},
        "rss_total_mib": growth(sum(w["rss_mib"] for w in start["workers"]),
                                sum(w["rss_mib"] for w in end["workers"]), hours),
        "replaced": {"gone": sorted(set(before) - set(after)), "new": sorted(set(after) - set(before))},
        "fds": {name: {"start": start["fds"].get(name), "end": end["fds"].get(name)}
                for name in sorted(set(start["fds"]) | set(end["fds"]))},
        "nginx": {level: {"start": start["nginx_levels"].get(level, 0),
                          "end": end["nginx_levels"].get(level, 0)} for level in ("warn", *ERROR_LEVELS)},
        "log_mib": {name: growth(start["log_bytes"].get(name, 0) / 2**20, size / 2**20, hours)
                    for name, size in end["log_bytes"].items()},
        "cpu_cores": {name: (end["cpu_s"][name] - start["cpu_s"].get(name, 0)) / (end["at"] - start["at"])
                      for name in end["cpu_s"]},
        "load": {"target_rps": target_rps, "ok_rps": achieved, "requests": sent,
                 "failures": end["locust"]["failures"] - start["locust"]["failures"],
                 "window_start": start["locust"], "window_end": end["locust"]},
        "whole_run": run,
    }


def idle_change(idle: dict, after: dict) -> dict:
    """Totals with no load, before the soak and after it: fds held once the clients have gone are leaks,
    where the under-load figures move with the connections open at that moment."""
    return {"fds": {"before": sum(f or 0 for f in idle["fds"].values()),
                    "after": sum(f or 0 for f in after["fds"].values())},
            "rss_mib": {"before": sum(w["rss_mib"] for w in idle["workers"]),
                        "after": sum(w["rss_mib"] for w in after["workers"])}}


def verdict(summary: dict, max_rss_growth: float, locust_rc: int | None,
            recycling: bool = False) -> list[str]:
    """Why the soak failed; empty when it passed. `recycling`: SERVE_MAX_REQUESTS replaces workers on
    purpose, so a new pid is expected."""
    reasons = []
    run = summary["whole_run"] or {}
    failures = run.get("failures", summary["load"]["failures"])
    if failures:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in summary.get("failure_kinds", {}).items())
        reasons.append(f"{failures} failed requests ({kinds or 'see loadtest_failures.csv'})")
    new_errors = sum(v["end"] - v["start"] for level, v in summary["nginx"].items() if level in ERROR_LEVELS)
    if new_errors:
        reasons.append(f"{new_errors} new nginx lines at [error] or worse")
    if summary["replaced"]["gone"] and not recycling:
        # without SERVE_MAX_REQUESTS nothing replaces a worker on purpose: it died or timed out
        reasons.append(f"workers replaced during the soak: {summary['replaced']['gone']} -> "
                       f"{summary['replaced']['new']}")
    for pid, g in summary["rss_mib"].items():
        if g["percent"] > max_rss_growth:
            reasons.append(f"worker {pid} RSS grew {g['percent']:.1f}% (> {max_rss_growth:g}%)")
    if locust_rc not in (0, None):
        reasons.append(f"locust exited {locust_rc} (1: an SLO gate broke, 2: a locustfile exception)")
    return reasons


def overload(summary: dict) -> str | None:
    """Why a failed soak may say more about the offered load than about the server's health: shed
    requests (503) or a rate short of the offered one mean the stack was past its capacity."""
    load = summary["load"]
    shed = summary.get("failure_kinds", {}).get("HTTP 503", 0)
    short = load["target_rps"] and load["ok_rps"] < 0.9 * load["target_rps"]
    if not shed and not short:
        return None
    return (f"overloaded: {shed} requests shed (503) and {load['ok_rps']:.0f} of {load['target_rps']:.0f} "
            "req/s achieved. For a while the offered rate was more than the stack got through: the "
            "capacity, measured closed-loop in a few seconds, did not hold, or other work on the machine (or "
            "steal) took the cores; the p95 'most' and the CPU line say which. The memory, fd and nginx "
            "figures stand. On a quiet machine, run again with a lower --load or --capacity from a knee "
            "(docs/loadtesting.md).")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _growth_cell(g: dict) -> str:
    return f"{g['change']:+.1f} MiB ({g['percent']:+.2f}%, {g['percent_per_hour']:+.1f}%/h)"


def table(summary: dict, reasons: list[str], machine: str) -> str:
    s, load, run, plan = summary, summary["load"], summary["whole_run"] or {}, summary.get("plan", {})
    a, b = load["window_start"], load["window_end"]
    rows = [("", "start", "end", "change")]
    rows += [(f"worker {pid} RSS MiB", f"{g['start']:.1f}", f"{g['end']:.1f}", _growth_cell(g))
             for pid, g in s["rss_mib"].items()]
    t = s["rss_total_mib"]
    rows.append(("all workers RSS MiB", f"{t['start']:.1f}", f"{t['end']:.1f}", _growth_cell(t)))
    for name, f in s["fds"].items():
        both = f["start"] is not None and f["end"] is not None
        rows.append((f"open fds: {name}", str(f["start"]), str(f["end"]),
                     f"{f['end'] - f['start']:+d}" if both else "gone/new"))
    rows += [(f"nginx [{level}] lines", str(n["start"]), str(n["end"]), f"{n['end'] - n['start']:+d}")
             for level, n in s["nginx"].items()]
    hours = s["seconds"] / 3600 or 1
    rows += [(f"{name} MiB", f"{g['start']:.1f}", f"{g['end']:.1f}", f"{g['change'] / hours:+.0f} MiB/h")
             for name, g in s["log_mib"].items()]
    rows += [("requests so far", str(a["requests"]), str(b["requests"]), f"{load['requests']:+d}"),
             ("failures so far", str(a["failures"]), str(b["failures"]), f"{load['failures']:+d}"),
             ("req/s, last 10 s", f"{a['rps'] or 0:.1f}", f"{b['rps'] or 0:.1f}", "")]
    rows += [(f"{p[:3]} ms, last 10 s", _ms(a[p]), _ms(b[p]), "") for p in ("p50_ms", "p95_ms", "p99_ms")]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]

    requests = run.get("requests", load["requests"])
    failures = run.get("failures", load["failures"])
    idle = s.get("idle")
    lines = [f"# soak, {time.strftime('%Y-%m-%d %H:%M')}, {machine}",
             f"offered {load['target_rps']:.1f} req/s ({plan.get('source', '')}): {plan.get('users')} locust "
             f"users, think time {plan.get('think_time_s', 0):.3g} s",
             f"{s['seconds'] / 60:.1f} min from the start sample (every user running) to the end sample"
             + (" (short: the %/h figures extrapolate warm-up noise)" if s["seconds"] < 600 else ""), ""]
    if s.get("calibration"):
        c = s["calibration"]
        cores = ", ".join(f"{name} {value:.2f}" for name, value in c["cpu_cores"].items())
        lines.insert(2, f"capacity: {c['capacity_rps']:.1f} ok req/s, {c['users']} closed-loop users for "
                        f"{c['seconds']:.0f} s (CPU, in cores: {cores})")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines += ["",
              f"achieved {load['ok_rps']:.1f} ok req/s between the samples, "
              f"{load['ok_rps'] / load['target_rps']:.0%} of the {load['target_rps']:.1f} offered",
              f"whole run (ramp included): {requests} requests, {failures} failed "
              f"({100 * failures / requests if requests else 0:.3f}%), p50 {_ms(run.get('p50_ms'))} ms, "
              f"p95 {_ms(run.get('p95_ms'))} ms, p99 {_ms(run.get('p99_ms'))} ms"]
    for key, figures in s.get("spread", {}).items():
        lines.append(f"{key[:3]} of each second's last 10 s, start to end: least {figures['min']:.0f} ms, "
                     f"median {figures['median']:.0f} ms, most {figures['max']:.0f} ms")
    if idle:
        lines.append(f"idle, before the load and after it: open fds {idle['fds']['before']} -> "
                     f"{idle['fds']['after']}, workers' RSS {idle['rss_mib']['before']:.1f} -> "
                     f"{idle['rss_mib']['after']:.1f} MiB")
    cores = s["cpu_cores"]
    other = cores.get("all processes", 0) - cores.get("server", 0) - cores.get("locust", 0)
    lines += [f"CPU used, in cores of the machine's {os.cpu_count()}: server {cores.get('server', 0):.2f}, "
              f"locust {cores.get('locust', 0):.2f}, everything else {max(0.0, other):.2f}; "
              f"steal {cores.get('steal', 0):.2f}.",
              "  locust runs on the server's cores: what it and other work take, the server cannot use, so",
              "  capacity and latency here are a floor for the server alone.",
              "verdict: " + ("PASS" if not reasons else "FAIL\n  " + "\n  ".join(reasons))]
    note = overload(summary)
    if note:
        lines += textwrap.wrap(note, 100, initial_indent="note: ", subsequent_indent="  ")
    return "\n".join(lines)


# -- the stack's processes, read from /proc ------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # the process ended between listing it and reading it


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def process_rss_mib(pid: int) -> float | None:
    status = _read(Path(f"/proc/{pid}/status"))
    return vmrss_mib(status) if status else None


def tree(pid: int) -> list[int]:
    return [pid] + [p for child in children(pid) for p in tree(child)]


def tree_cpu_seconds(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    stats = [_read(Path(f"/proc/{p}/stat")) for p in tree(pid)]
    return sum(cpu_seconds(s, ticks) for s in stats if s)


def reaped_children_cpu_seconds() -> float:
    """CPU of this process's children that have ended and been waited for, theirs included: locust's
    whole run, once loadtest.run (which waits for its locust) is reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pid_from(path: Path) -> int | None:
    text = _read(path)
    return int(text.split()[0]) if text and text.split() else None


class LogCounter:
    """nginx's lines by level in a growing file, read from where the last call stopped: the stack's log
    also holds the app's access line per request, far too much to read again every 30 s."""

    def __init__(self, path: Path):
        self.path, self.offset, self.levels = path, 0, Counter()

    def count(self) -> Counter:
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            chunk = file.read()
        complete = chunk.rfind(b"\n") + 1  # a half-written line waits for the next call
        self.levels += nginx_levels(chunk[:complete])
        self.offset += complete
        return Counter(self.levels)


class Watcher:
    """Samples the stack's processes and the load. nginx logs to stderr under run_stack.py
    (render_nginx's default), so its lines are in the stack's log, beside gunicorn's."""

    def __init__(self, stack: OurStack, report_dir: Path):
        self.stack, self.report_dir = stack, report_dir
        self.nginx_log = LogCounter(stack.log)
        self.locust: subprocess.Popen | None = None
        self._reaped_before = 0.0

    def start_locust(self, command: list[str], log_path: Path) -> subprocess.Popen:
        self._reaped_before = reaped_children_cpu_seconds()
        self.locust = start_locust(command, log_path)
        return self.locust

    def locust_cpu_seconds(self) -> float | None:
        if self.locust is None:
            return None
        if self.locust.poll() is None:
            seconds = tree_cpu_seconds(self.locust.pid)
            if self.locust.poll() is None:
                return seconds
        return reaped_children_cpu_seconds() - self._reaped_before  # exited while read: the reaped figure

    def locust_points(self) -> list[dict]:
        text = _read(self.report_dir / "loadtest_stats_history.csv")
        return history(text) if text else []

    def sample(self, label: str) -> dict:
        run_dir = self.stack.run_dir
        master = pid_from(run_dir / "gunicorn.pid")
        nginx = pid_from(run_dir / "nginx" / "nginx.pid")
        workers = []
        for pid in children(master) if master else []:
            rss = process_rss_mib(pid)
            if rss is not None:
                workers.append({"pid": pid, "rss_mib": rss, "fds": open_fds(pid)})
        fds = {f"gunicorn worker {w['pid']}": w["fds"] for w in workers}
        if master:
            fds["gunicorn master"] = open_fds(master)
        for pid in tree(nginx) if nginx else []:
            fds[f"nginx {'master' if pid == nginx else 'worker'} {pid}"] = open_fds(pid)
        points = self.locust_points()
        empty = {"at": None, "users": 0, "requests": 0, "failures": 0, "rps": None, "failures_per_s": None,
                 "p50_ms": None, "p95_ms": None, "p99_ms": None}
        access = run_dir / "nginx" / "access.log"
        cpu = {"server": tree_cpu_seconds(self.stack.process.pid), **machine_now()}
        locust_cpu = self.locust_cpu_seconds()
        if locust_cpu is not None:
            cpu["locust"] = locust_cpu
        return {"label": label, "at": time.time(), "workers": workers,
                "master": {"pid": master, "rss_mib": process_rss_mib(master) if master else None},
                "nginx_pid": nginx, "fds": fds, "nginx_levels": dict(self.nginx_log.count()),
                "log_bytes": {"stack log (app access lines)": self.stack.log.stat().st_size,
                              "nginx access.log": access.stat().st_size if access.exists() else 0},
                "cpu_s": cpu, "locust": points[-1] if points else empty}


# -- the runs ------------------------------------------------------------------------------------------

def locust_command(host: str, report_dir: Path, model: str, users: int, spawn_rate: float, seconds: float,
                   think_time: float, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "loadtest.run", "--host", host, "--report-dir", str(report_dir),
            "--shape", "steady", "-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{math.ceil(seconds)}s",
            "--think-time", f"{think_time:g}", "--model", model, *extra]


def start_locust(command: list[str], log_path: Path) -> subprocess.Popen:
    # its own session: stopped as a group (loadtest.run and its locust child) on Ctrl-C
    return subprocess.Popen(command, cwd=ROOT, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_locust(process: subprocess.Popen) -> None:
    """SIGTERM to locust itself: it stops its users and writes its reports, and loadtest.run returns
    normally (a signal to loadtest.run would make it kill locust before the reports are written)."""
    if process.poll() is None:
        for pid in children(process.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def calibrate(stack: OurStack, host: str, model: str, work: Path, seconds: float, users: int) -> dict:
    """Closed loop, think time 0: ok requests/s once warm (the first third is left out). On a shared
    machine this is the capacity of server and client together: the figure the soak can offer at all."""
    report_dir = work / "calibrate"
    command = locust_command(host, report_dir, model, users, users, seconds, 0.0,
                             ["--max-p95-ms", "1e9", "--max-p99-ms", "1e9", *CALIBRATION_USERS])
    log(f"calibrating: {users} users, think time 0, {seconds:.0f} s")
    server_before, locust_before = tree_cpu_seconds(stack.process.pid), reaped_children_cpu_seconds()
    machine_before, started = machine_now(), time.time()
    process = start_locust(command, work / "locust-calibrate.log")
    try:
        process.wait()
    except KeyboardInterrupt:
        stop_locust(process)  # its own session: Ctrl-C reached only this process
        raise
    elapsed = time.time() - started
    locust_cpu = reaped_children_cpu_seconds() - locust_before
    points = history(_read(report_dir / "loadtest_stats_history.csv") or "")
    if not points:
        sys.exit(f"calibration produced no figures: see {work / 'locust-calibrate.log'}")
    capacity = ok_rate(points, points[0]["at"] + seconds / 3)
    run = whole_run(_read(report_dir / "loadtest_stats.csv") or "")
    machine = {name: (value - machine_before[name]) / elapsed for name, value in machine_now().items()}
    cores = {"server": (tree_cpu_seconds(stack.process.pid) - server_before) / elapsed,
             "locust": locust_cpu / elapsed}
    cores["everything else"] = max(0.0, machine["all processes"] - cores["server"] - cores["locust"])
    cores["steal"] = machine["steal"]
    return {"users": users, "seconds": seconds, "capacity_rps": capacity, "whole_run": run,
            "cpu_cores": cores}


def soak(watcher: Watcher, host: str, model: str, work: Path, users: int, think_time: float,
         duration: float, interval: float, settle: float) -> tuple[list[dict], int | None, bool]:
    """The paced load with samples: 'idle' before it, 'start' once every user runs, then every
    `interval`, 'end' a few seconds before locust stops (still under load: connections open and buffers
    in use at both ends, so the two compare), 'after' once it has stopped. Returns the samples, locust's
    exit status and whether it was interrupted."""
    ramp = min(10.0, max(1.0, duration / 10))
    # full history: the Aggregated rows then hold the last 10 s's percentiles, not the run's so far
    command = locust_command(host, watcher.report_dir, model, users, max(1.0, users / ramp), duration,
                             think_time, ["--csv-full-history"])
    samples = [watcher.sample("idle")]
    launched = time.time()
    process = watcher.start_locust(command, work / "locust-soak.log")
    log(f"soak: {' '.join(command[1:])}")
    try:
        deadline = launched + 60 + ramp  # locust starts, imports, reads the model's metadata, ramps
        while process.poll() is None and time.time() < deadline:
            points = watcher.locust_points()
            if points and points[-1]["users"] >= users:
                break
            time.sleep(1)
        time.sleep(10)  # locust's rates and percentiles are of the last 10 s: let the ramp out of them
        samples.append(watcher.sample("start"))
        log(f"  start: {_brief(samples[-1])}")
        points = watcher.locust_points()
        # locust's clock starts about when it writes its first row
        stops_at = (points[0]["at"] if points else launched) + duration
        started, next_at = time.time(), time.time() + interval
        while process.poll() is None and time.time() < stops_at - 3:
            if time.time() >= next_at:
                samples.append(watcher.sample(f"+{time.time() - started:.0f}s"))
                log(f"  {samples[-1]['label']}: {_brief(samples[-1])}")
                next_at += interval
            time.sleep(0.5)
        samples.append(watcher.sample("end"))
        log(f"  end: {_brief(samples[-1])}")
        process.wait(60)
        interrupted = False
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        interrupted = True
        log("interrupted (or locust overran): stopping the load, then reporting what was measured")
        if samples[-1]["label"] != "end":
            samples.append(watcher.sample("end"))
        stop_locust(process)
    if not interrupted:  # whoever pressed Ctrl-C wants the report now
        log(f"  settling {settle:.0f} s for the idle connections to close")
        time.sleep(settle)
    samples.append(watcher.sample("after"))
    return samples, process.returncode, interrupted


def _brief(sample: dict) -> str:
    point = sample["locust"]
    rss = " ".join(f"{w['rss_mib']:.0f}" for w in sample["workers"])
    return (f"RSS MiB {rss}; fds {sum(f or 0 for f in sample['fds'].values())}; "
            f"nginx errors {sum(sample['nginx_levels'].get(l, 0) for l in ERROR_LEVELS)}; "
            f"{point['requests']} requests, {point['failures']} failed, {point['rps'] or 0:.0f} req/s, "
            f"p95 {_ms(point['p95_ms'])} ms")


def default_store(model: str) -> Path:
    store = ROOT / "models"
    if (store / model / "1" / "model.keras").exists():
        return store
    if model != "digits":
        sys.exit(f"no model {model!r} in {store}: give --store")
    return digits_store(Path(tempfile.gettempdir()) / "bench-store")


def plan_load(capacity: float | None, measured: bool, rate: float | None, load: float, users: int | None,
              think_time: float) -> dict:
    """The offered rate and how it is paced, with where the rate came from."""
    if rate:
        source = "--rate"
    else:
        rate = load * capacity
        source = f"{load:.0%} of {capacity:.1f} req/s, {'measured' if measured else 'from --capacity'}"
    users, think_time = pace(rate, users, think_time)
    return {"capacity_rps": capacity, "target_rps": rate, "source": source, "users": users,
            "think_time_s": think_time}


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=parse_duration, default="1h",
                        help="length of the load (default 1h)")
    paced = parser.add_mutually_exclusive_group()
    paced.add_argument("--users", type=int, help="locust users; the think time is set to offer the rate")
    paced.add_argument("--rate", type=float, help="offered requests/s (default: --load of the capacity)")
    parser.add_argument("--capacity", type=float, help="requests/s the stack sustains; skips the calibration")
    parser.add_argument("--load", type=float, default=0.7, help="share of the capacity offered (default 0.7)")
    parser.add_argument("--think-time", type=float, default=1.0,
                        help="mean seconds between a user's requests, without --users (default 1)")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--store", type=Path,
                        help="model store (default: models/, else digits trained into a temporary store)")
    parser.add_argument("--interval", type=parse_duration, default="30s",
                        help="between samples (default 30s)")
    parser.add_argument("--calibrate", type=parse_duration, default="30s",
                        help="length of the capacity measurement (default 30s)")
    parser.add_argument("--calibrate-users", type=int, default=24,
                        help="closed-loop users of the capacity measurement (default 24)")
    parser.add_argument("--settle", type=parse_duration, default="65s",
                        help="idle wait before the 'idle' sample and the 'after' one, past nginx's keepalive "
                             "to gunicorn (SERVE_UPSTREAM_KEEPALIVE, 60 s) (default 65s)")
    parser.add_argument("--max-rss-growth", type=float, default=20.0,
                        help="fail when a worker's RSS grows more than this %% over the soak (default 20)")
    parser.add_argument("--out", type=Path,
                        help="the samples as JSON (default bench/results/soak-<time>.json)")
    args = parser.parse_args(argv)
    if args.load <= 0 or (args.users is not None and args.users < 1):
        parser.error("--load and --users must be positive")
    return args


def main(argv=None) -> int:
    args = arguments(argv)
    store = args.store or default_store(args.model)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    machine = (f"{platform.node()}: {platform.processor() or platform.machine()}, "
               f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")
    report: dict = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "work": str(work)}
    log(f"stack: {args.model} from {store}; logs and locust reports in {work}")
    with OurStack(store, args.model, work) as stack:
        report["cold_start_s"] = stack.wait(stack.ready)
        host = stack.url.removesuffix("/predict")
        capacity = args.capacity
        if capacity is None and args.rate is None:
            calibration = calibrate(stack, host, args.model, work, args.calibrate, args.calibrate_users)
            report["calibration"], capacity = calibration, calibration["capacity_rps"]
            cores = ", ".join(f"{name} {value:.2f}" for name, value in calibration["cpu_cores"].items())
            log(f"capacity: {capacity:.1f} ok req/s (CPU, in cores: {cores})")
        plan = report["plan"] = plan_load(capacity, args.capacity is None, args.rate, args.load, args.users,
                                          args.think_time)
        log(f"offering {plan['target_rps']:.1f} req/s: {plan['users']} users, "
            f"think time {plan['think_time_s']:.3g} s")
        if plan["think_time_s"] < 0.2:
            log("  warning: think time under 0.2 s: the response time is a noticeable part of each user's "
                "cycle, so the load is partly closed-loop")
        watcher = Watcher(stack, work / "soak")
        if "calibration" in report:
            log(f"settling {args.settle:.0f} s for the calibration's idle connections to close")
            time.sleep(args.settle)
        samples, locust_rc, interrupted = soak(watcher, host, args.model, work, plan["users"],
                                               plan["think_time_s"], args.duration, args.interval,
                                               args.settle)
    # locust flushes its history every 5 s, so a sample read it up to 5 s late: the full history, read now,
    # has the row of each sample's own second
    points = watcher.locust_points()
    for sample in samples:
        sample["locust"] = point_at(points, sample["at"]) or sample["locust"]
    labelled = {s["label"]: s for s in samples}
    summary_start, summary_end = labelled.get("start", samples[0]), labelled.get("end", samples[-1])
    summary = summarise(summary_start, summary_end,
                        whole_run(_read(watcher.report_dir / "loadtest_stats.csv") or ""), plan["target_rps"])
    summary.update(plan=plan, calibration=report.get("calibration"),
                   idle=idle_change(labelled["idle"], labelled["after"]),
                   spread=spread(points, summary_start["at"], summary_end["at"]),
                   failure_kinds=failure_kinds(_read(watcher.report_dir / "loadtest_failures.csv") or ""))
    recycling = os.environ.get("SERVE_MAX_REQUESTS", "0") not in ("", "0")  # the stack inherits this env
    reasons = verdict(summary, args.max_rss_growth, None if interrupted else locust_rc, recycling)
    if interrupted:
        reasons.append("interrupted before --duration: a partial soak")
    report.update(samples=samples, summary=summary, locust_exit=locust_rc, verdict=reasons or "PASS")
    out = args.out or RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))  # first: an hour's samples outlive a bug in the table
    print(table(summary, reasons, machine))
    log(f"samples written to {out}; logs and locust reports in {work}; the stack's run dir {stack.run_dir}")
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
