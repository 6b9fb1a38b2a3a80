"""The batch job on digits (`keras-serving predict-files`, docs/batch.md) against what bounds it.

    python -m bench.batch [--rows 1000000] [--quick] [--store DIR]     (also part of `make bench`)

Generates a JSON Lines file of `--rows` held-out digits (and one ten times smaller), runs the job on each in
a child process of its own, and reports:
- rows/s against the in-process batched limit: the compiled function alone at the job's batch size, fed
  arrays already in memory, measured two ways, and the job judged against the higher (goal: at least 90%):
  one call at a time with every core's intra-op thread, and the job's own layout, CALLS calls in flight
  from as many threads with cores // CALLS intra-op threads each (both bench/inprocess.py, in a child
  process of their own);
- peak memory (the child's max RSS) of the big file beside the small one (goal: the same within 10%:
  memory is bounded by the queues, not the file);
- the serving stack's rows/s for the same rows sent as requests, one digit per request (from the digits
  report of the same `make bench` run, else bench/results/latest.json), and the ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import inprocess
from bench.harness import ROOT, log, machine
from bench.models import digits_store

BATCH = 512  # the job's default (api/files/pipeline.AUTO_BATCH_ROWS for digits)


def write_rows(path: Path, rows: int) -> Path:
    """`rows` held-out digits as JSON Lines (4 decimals, as a client sends them), cycling the split."""
    import orjson
    from api.training import held_out_split

    images = held_out_split()[1]
    lines = [orjson.dumps(image.round(4).tolist()) + b"\n" for image in images]
    with open(path, "wb") as file:
        for start in range(0, rows, len(lines)):
            file.write(b"".join(lines[:min(len(lines), rows - start)]))
    return path


def run_job(store: Path, rows: Path, out: Path) -> dict:
    """The command in a child process: its summary (manifest.json), wall time and max RSS (MiB)."""
    env = {**os.environ, "SERVE_RUN_DIR": str(out.parent / "run")}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "api.cli", "predict-files", str(rows), "--output", str(out),
                              "--store", str(store), "--batch-size", str(BATCH), "--quiet"], cwd=ROOT, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"predict-files exited {child.returncode} on {rows}")
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    return {**summary, "wall_s": round(time.perf_counter() - started, 2), "max_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def inprocess_limit(store: Path, seconds: float) -> dict:
    return inprocess.run(store, "digits", f"64,128,{BATCH}", seconds)


def layout_limit(store: Path, seconds: float) -> dict:
    """The compiled function alone in the job's layout (api/files/pipeline: model_calls calls in flight,
    cores // calls intra-op threads each), at BATCH rows (bench/inprocess.py --calls): rows/s."""
    from api.files.pipeline import model_calls
    from api.settings import _cpu_count

    calls = model_calls(_cpu_count())
    reading = inprocess.run(store, "digits", str(BATCH), seconds, calls)
    return {"calls": calls, "threads": reading["threads"], "batch": BATCH, "rows_per_s": reading["best_images_per_s"]}


def stack_rows_per_s(digits_report: dict | None) -> float | None:
    """The serving stack's best rows/s on digits, one row per request: this run's report, else the last one."""
    if digits_report is None:
        latest = ROOT / "bench" / "results" / "latest.json"
        if latest.exists():
            reports = json.loads(latest.read_text()).get("reports", [])
            digits_report = next((r for r in reports if r.get("model") == "digits"), None)
    if not digits_report or not digits_report.get("ours"):
        return None
    return max(r["ok_rps"] for r in digits_report["ours"]["json"])


def bench(store: Path, work: Path, rows: int, quick: bool, digits_report: dict | None = None) -> dict:
    small_rows = rows // 10
    log(f"[batch] writing {rows:,} and {small_rows:,} digit rows as JSON Lines")
    big, small = write_rows(work / "big.jsonl", rows), write_rows(work / "small.jsonl", small_rows)
    log("[batch] in-process limit (bench/inprocess.py)")
    limit = inprocess_limit(store, 1 if quick else 5)
    layout = layout_limit(store, 1 if quick else 5)
    log(f"[batch] predict-files on {small_rows:,} rows")
    small_run = run_job(store, small, work / "out-small")
    log(f"[batch] predict-files on {rows:,} rows")
    big_run = run_job(store, big, work / "out-big")
    return {"rows": rows, "batch_size": BATCH, "inprocess": limit, "layout": layout, "big": big_run, "small": small_run,
            "stack_rows_per_s": stack_rows_per_s(digits_report),
            "input_mib": round(big.stat().st_size / 2**20, 1)}


def table(report: dict) -> str:
    limit = report["inprocess"]["images_per_s"]
    single = limit.get(str(BATCH), limit.get(BATCH))
    layout = report.get("layout") or {"rows_per_s": 0, "calls": 1, "threads": report["inprocess"]["threads"]}
    at_batch = max(single, layout["rows_per_s"])  # the limit: the higher of the two ways to run it alone
    big, small, stack = report["big"], report["small"], report["stack_rows_per_s"]
    rate = big["rows_per_s"]
    lines = [f"## batch job (predict-files) on digits: {report['rows']:,} rows, {report['input_mib']} MiB of JSON Lines",
             "", f"| what | rows/s | of the in-process limit at batch {BATCH} | max RSS MiB |", "| --- | --- | --- | --- |"]
    for name, run in ((f"predict-files, {report['rows']:,} rows", big), (f"predict-files, {small['rows']:,} rows", small)):
        lines.append(f"| {name} | {run['rows_per_s']:,.0f} | {run['rows_per_s'] / at_batch:.0%} | {run['max_rss_mib']:,.0f} |")
    lines.append(f"| compiled function alone, batch {BATCH}, one call at a time, {report['inprocess']['threads']} "
                 f"intra-op threads (bench/inprocess.py) | {single:,.0f} | {single / at_batch:.0%} | |")
    if layout["rows_per_s"]:
        lines.append(f"| compiled function alone, batch {BATCH}, {layout['calls']} calls in flight, {layout['threads']} "
                     f"intra-op thread(s) each (the job's layout) | {layout['rows_per_s']:,.0f} | "
                     f"{layout['rows_per_s'] / at_batch:.0%} | |")
    if stack:
        lines.append(f"| serving stack, one row per request (make bench, digits) | {stack:,.0f} | {stack / at_batch:.0%} | |")
    lines += ["", f"rows/s: {rate / at_batch:.0%} of the in-process limit at the same batch size, the higher of "
              f"its two measures (goal >= 90%); {rate / single:.0%} of the one-call-at-a-time figure alone"
              + (f"; {rate / stack:.1f}x the serving stack fed the same rows as requests" if stack else
                 "; serving stack: no digits report (run make bench)"),
              f"peak memory: {big['max_rss_mib']:,.0f} MiB for {report['rows']:,} rows, {small['max_rss_mib']:,.0f} MiB "
              f"for {small['rows']:,}: {big['max_rss_mib'] / small['max_rss_mib']:.2f}x (goal: within 10%)",
              f"wall time with start-up (TensorFlow import, model load): {big['wall_s']:.1f} s and {small['wall_s']:.1f} s"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The batch job against its in-process limit and the stack.")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big file (the small: a tenth)")
    parser.add_argument("--quick", action="store_true", help="20,000 rows: check the harness, not the figures")
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "bench-store")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    report = bench(digits_store(args.store), work, 20_000 if args.quick else args.rows, args.quick)
    print(f"# predict-files bench, {time.strftime('%Y-%m-%d %H:%M')}, {machine()}\n\n{table(report)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "report": report}, indent=1))
    log(f"figures written to {args.out}; files in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
