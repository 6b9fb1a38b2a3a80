"""The soak's report (bench/soak.py): start against end from the samples, the verdict, and the table
printed at the end. Pure functions of the samples: nothing here reads a process or a file."""
import os
import textwrap
import time

from bench.soak_sample import ERROR_LEVELS, ms
from loadtest.reports import ok_rate


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
    rows += [(f"{p[:3]} ms, last 10 s", ms(a[p]), ms(b[p]), "") for p in ("p50_ms", "p95_ms", "p99_ms")]
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
              f"({100 * failures / requests if requests else 0:.3f}%), p50 {ms(run.get('p50_ms'))} ms, "
              f"p95 {ms(run.get('p95_ms'))} ms, p99 {ms(run.get('p99_ms'))} ms"]
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
