"""The soak's measurements (bench/soak.py): the stack's processes read from /proc, nginx's log lines by
level, locust's figures from its CSV reports, and the two locust runs that are sampled: the closed-loop
calibration and the paced soak itself."""
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.harness import (ProcessGroup, children, descendants, log, open_fds, pid_from, rss_mib,
                           tree_cpu_seconds)
from bench.servers import OurStack
from loadtest import reports
from loadtest.mix import WELL_FORMED

NGINX_LINE = re.compile(rb"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] ", re.MULTILINE)
ERROR_LEVELS = ("error", "crit", "alert", "emerg")
# Capacity is what real clients get: the well-formed requests only (the cheap 4xx would inflate it).
CALIBRATION_USERS = WELL_FORMED
EMPTY_POINT = {"at": None, "users": 0, "requests": 0, "failures": 0, "rps": None, "failures_per_s": None,
               "p50_ms": None, "p95_ms": None, "p99_ms": None}
"""A sample's locust figures before locust has written any."""


def machine_cpu_seconds(proc_stat: str, ticks_per_s: int) -> dict:
    """From /proc/stat's first line: CPU time every process on the machine used, and steal, the time the
    hypervisor gave this VM's cores to someone else (a VM that runs slow for a while shows it here)."""
    fields = proc_stat.split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return {"all processes": (user + nice + system + irq + softirq) / ticks_per_s,
            "steal": steal / ticks_per_s}


def machine_now() -> dict:
    return machine_cpu_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def reaped_children_cpu_seconds() -> float:
    """CPU of this process's children that have ended and been waited for, theirs included: locust's
    whole run, once loadtest.run (which waits for its locust) is reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def nginx_levels(text: bytes) -> Counter:
    """nginx's own lines ('2024/01/31 12:00:00 [error] 12#12: ...') by level; the JSON lines of gunicorn
    and the app that share the stream do not match."""
    return Counter(level.decode() for level in NGINX_LINE.findall(text))


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


class Locust(ProcessGroup):
    """`python -m loadtest.run` in a session of its own: stopped as a group (loadtest.run and its locust
    child) on Ctrl-C. SIGTERM goes to locust itself: it stops its users and writes its reports, and
    loadtest.run returns normally (a signal to loadtest.run would make it kill locust before the reports
    are written)."""

    GRACE = 30
    TERM = "children"

    def __init__(self, command: list[str], log_path: Path):
        super().__init__(command, log_path, name="locust")


def locust_command(host: str, report_dir: Path, model: str, users: int, spawn_rate: float, seconds: float,
                   think_time: float, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "loadtest.run", "--host", host, "--report-dir", str(report_dir),
            "--shape", "steady", "-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{math.ceil(seconds)}s",
            "--think-time", f"{think_time:g}", "--model", model, *extra]


class Watcher:
    """Samples the stack's processes and the load. nginx logs to stderr under the supervisor
    (api/process/nginx.py's default), so its lines are in the stack's log, beside gunicorn's."""

    def __init__(self, stack: OurStack, report_dir: Path):
        self.stack, self.report_dir = stack, report_dir
        self.nginx_log = LogCounter(stack.log_path)
        self.locust: Locust | None = None
        self._reaped_before = 0.0

    def start_locust(self, command: list[str], log_path: Path) -> Locust:
        self._reaped_before = reaped_children_cpu_seconds()
        self.locust = Locust(command, log_path)
        return self.locust

    def locust_cpu_seconds(self) -> float | None:
        if self.locust is None:
            return None
        if self.locust.process.poll() is None:
            seconds = tree_cpu_seconds(self.locust.pid)
            if self.locust.process.poll() is None:
                return seconds
        return reaped_children_cpu_seconds() - self._reaped_before  # exited while read: the reaped figure

    def locust_points(self) -> list[dict]:
        return reports.history(self.report_dir)

    def sample(self, label: str) -> dict:
        run_dir = self.stack.run_dir
        master = pid_from(run_dir / "gunicorn.pid")
        nginx = pid_from(run_dir / "nginx" / "nginx.pid")
        workers = []
        for pid in children(master) if master else []:
            rss = rss_mib(pid)
            if rss is not None:
                workers.append({"pid": pid, "rss_mib": rss, "fds": open_fds(pid)})
        fds = {f"gunicorn worker {w['pid']}": w["fds"] for w in workers}
        if master:
            fds["gunicorn master"] = open_fds(master)
        for pid in descendants(nginx) if nginx else []:
            fds[f"nginx {'master' if pid == nginx else 'worker'} {pid}"] = open_fds(pid)
        points = self.locust_points()
        access = run_dir / "nginx" / "access.log"
        cpu = {"server": tree_cpu_seconds(self.stack.pid), **machine_now()}
        locust_cpu = self.locust_cpu_seconds()
        if locust_cpu is not None:
            cpu["locust"] = locust_cpu
        return {"label": label, "at": time.time(), "workers": workers,
                "master": {"pid": master, "rss_mib": rss_mib(master) if master else None},
                "nginx_pid": nginx, "fds": fds, "nginx_levels": dict(self.nginx_log.count()),
                "log_bytes": {"stack log (app access lines)": self.stack.log_path.stat().st_size,
                              "nginx access.log": access.stat().st_size if access.exists() else 0},
                "cpu_s": cpu, "locust": points[-1] if points else dict(EMPTY_POINT)}


def calibrate(stack: OurStack, host: str, model: str, work: Path, seconds: float, users: int) -> dict:
    """Closed loop, think time 0: ok requests/s once warm (the first third is left out). On a shared
    machine this is the capacity of server and client together: the figure the soak can offer at all."""
    report_dir = work / "calibrate"
    command = locust_command(host, report_dir, model, users, users, seconds, 0.0,
                             ["--max-p95-ms", "1e9", "--max-p99-ms", "1e9", *CALIBRATION_USERS])
    log(f"calibrating: {users} users, think time 0, {seconds:.0f} s")
    server_before, locust_before = tree_cpu_seconds(stack.pid), reaped_children_cpu_seconds()
    machine_before, started = machine_now(), time.time()
    # locust has a session of its own: Ctrl-C reaches only this process, and leaving `with` stops locust
    with Locust(command, work / "locust-calibrate.log") as locust:
        locust.process.wait()
    elapsed = time.time() - started
    locust_cpu = reaped_children_cpu_seconds() - locust_before
    points = reports.history(report_dir)
    if not points:
        sys.exit(f"calibration produced no figures: see {work / 'locust-calibrate.log'}")
    capacity = reports.ok_rate(points, points[0]["at"] + seconds / 3)
    run = reports.whole_run(report_dir)
    machine = {name: (value - machine_before[name]) / elapsed for name, value in machine_now().items()}
    cores = {"server": (tree_cpu_seconds(stack.pid) - server_before) / elapsed,
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
    locust = watcher.start_locust(command, work / "locust-soak.log")
    process = locust.process
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
        log(f"  start: {brief(samples[-1])}")
        points = watcher.locust_points()
        # locust's clock starts about when it writes its first row
        stops_at = (points[0]["at"] if points else launched) + duration
        started, next_at = time.time(), time.time() + interval
        while process.poll() is None and time.time() < stops_at - 3:
            if time.time() >= next_at:
                samples.append(watcher.sample(f"+{time.time() - started:.0f}s"))
                log(f"  {samples[-1]['label']}: {brief(samples[-1])}")
                next_at += interval
            time.sleep(0.5)
        samples.append(watcher.sample("end"))
        log(f"  end: {brief(samples[-1])}")
        process.wait(60)
        interrupted = False
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        interrupted = True
        log("interrupted (or locust overran): stopping the load, then reporting what was measured")
        if samples[-1]["label"] != "end":
            samples.append(watcher.sample("end"))
    locust.stop()  # when interrupted: SIGTERM to locust, which writes its reports; else closes its log
    if not interrupted:  # whoever pressed Ctrl-C wants the report now
        log(f"  settling {settle:.0f} s for the idle connections to close")
        time.sleep(settle)
    samples.append(watcher.sample("after"))
    return samples, process.returncode, interrupted


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def brief(sample: dict) -> str:
    """A sample in one progress line."""
    point = sample["locust"]
    rss = " ".join(f"{w['rss_mib']:.0f}" for w in sample["workers"])
    return (f"RSS MiB {rss}; fds {sum(f or 0 for f in sample['fds'].values())}; "
            f"nginx errors {sum(sample['nginx_levels'].get(level, 0) for level in ERROR_LEVELS)}; "
            f"{point['requests']} requests, {point['failures']} failed, {point['rps'] or 0:.0f} req/s, "
            f"p95 {ms(point['p95_ms'])} ms")
