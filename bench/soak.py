"""`make soak` (python -m bench.soak): the stack under a paced locust load at ~70% of its capacity for a
long time, watched for what only time shows: memory creeping up, file descriptors leaking, nginx errors.

    python -m bench.soak [--duration 1h] [--users N | --rate R] [--capacity RPS] [--model digits]

1. starts our stack (api/process/stack.py, as `make serve`) with its own ports and run dir;
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

This module is the command line and the plan of the load; the measurements and the two locust runs are
bench/soak_sample.py's, start against end, the verdict and the table bench/soak_report.py's.
"""
import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, log, machine
from bench.models import digits_store
from bench.servers import OurStack
from bench.soak_report import idle_change, spread, summarise, table, verdict
from bench.soak_sample import Watcher, calibrate, soak
from loadtest import reports
from loadtest.mix import MIX

RESULTS = ROOT / "bench" / "results"


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1h', '1h30m' to seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def rate_per_user(think_time: float, mix: dict = MIX) -> float:
    """Requests per second one user sends, on average over the mix (loadtest/mix.py, the locustfile's own):
    each waits a mean of think_time x its factor between requests. The response time (a few ms against a
    second) is left out."""
    weights = sum(share.weight for share in mix.values())
    return sum(share.weight / (think_time * share.think_factor) for share in mix.values()) / weights


def pace(rate: float, users: int | None, think_time: float) -> tuple[int, float]:
    """(users, think time) that offer `rate` requests/s: open-loop in effect while the think time dwarfs
    the response time, so a slower server does not quietly get less load, as a closed loop would give it."""
    if users:
        return users, users * rate_per_user(1.0) / rate
    return max(1, math.ceil(rate / rate_per_user(think_time))), think_time


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
    described = machine()
    report: dict = {"machine": described, "args": {k: str(v) for k, v in vars(args).items()},
                    "work": str(work)}
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
        sample["locust"] = reports.point_at(points, sample["at"]) or sample["locust"]
    labelled = {s["label"]: s for s in samples}
    summary_start, summary_end = labelled.get("start", samples[0]), labelled.get("end", samples[-1])
    summary = summarise(summary_start, summary_end, reports.whole_run(watcher.report_dir), plan["target_rps"])
    summary.update(plan=plan, calibration=report.get("calibration"),
                   idle=idle_change(labelled["idle"], labelled["after"]),
                   spread=spread(points, summary_start["at"], summary_end["at"]),
                   failure_kinds=reports.failure_kinds(watcher.report_dir))
    recycling = os.environ.get("SERVE_MAX_REQUESTS", "0") not in ("", "0")  # the stack inherits this env
    reasons = verdict(summary, args.max_rss_growth, None if interrupted else locust_rc, recycling)
    if interrupted:
        reasons.append("interrupted before --duration: a partial soak")
    report.update(samples=samples, summary=summary, locust_exit=locust_rc, verdict=reasons or "PASS")
    out = args.out or RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))  # first: an hour's samples outlive a bug in the table
    print(table(summary, reasons, described))
    log(f"samples written to {out}; logs and locust reports in {work}; the stack's run dir {stack.run_dir}")
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
