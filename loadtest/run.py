"""Run the load headless against a running server with the SLO gates; exit 1 when a gate is broken.

    python -m loadtest.run [--host URL] [--report-dir DIR] [--workers N] [locust flags...]

Locust flags pass through: `--shape step -u 120 -t 3m`, `--max-p95-ms 250`, `--think-time 0`.
Writes DIR/loadtest_stats.csv (with _stats_history, _failures and _exceptions beside it) and
DIR/report.html. `--workers N` starts one master and N worker processes on this machine, as a run
across machines does (docs/loadtesting.md); the master applies the gates to the stats of them all.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

from loadtest.reports import PREFIX

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "loadtest" / "locust.conf"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
FLAGS_OF_THE_LOAD = """flags of the load (loadtest/locustfile.py; each also read from LOCUST_<NAME>):
  --shape steady|step|spike|soak   -u is its peak, -r its ramp, -t its length (default per shape)
  --steps N                        steps of the step shape
  --think-time S                   mean seconds between a user's requests (0: none)
  --model NAME                     the model to load (default: the one /ready names)
  --max-error-rate F --max-p95-ms MS --max-p99-ms MS --min-rps R   the SLO gates
and any of locust's own: -u/--users, -r/--spawn-rate, -t/--run-time, user class names, ..."""
WORKER_EXIT_WAIT = 15  # seconds: workers quit when the master tells them; this long, then they are stopped


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "--config", str(CONFIG), "-f", str(LOCUSTFILE), *args]


def parse(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=FLAGS_OF_THE_LOAD,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("LOCUST_HOST", "http://127.0.0.1:8080"),
                        help="Base URL of the server or load balancer (default: %(default)s)")
    parser.add_argument("--report-dir", type=Path, default=Path("run/loadtest"),
                        help="Folder for the CSV and HTML reports (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0,
                        help="Worker processes under one master on this machine; 0: one process does it all")
    parser.add_argument("--master-port", type=int, default=5557,
                        help="Port the master listens on for workers (default: %(default)s)")
    return parser.parse_known_args(argv)


def main(argv=None) -> int:
    args, locust_flags = parse(argv)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    # --csv-full-history: without it the history's percentiles are the run's so far, not the last 10 s,
    # and a step run's curve (loadtest/knee.py) flattens.
    command = locust("--host", args.host, "--csv", str(args.report_dir / PREFIX), "--csv-full-history",
                     "--html", str(args.report_dir / "report.html"), *locust_flags)
    if args.workers < 1:
        return subprocess.call(command)
    port = str(args.master_port)
    master = subprocess.Popen([*command, "--master", "--master-bind-host", "127.0.0.1",
                               "--master-bind-port", port, "--expect-workers", str(args.workers),
                               "--expect-workers-max-wait", "60"])
    workers = [subprocess.Popen(locust("--worker", "--master-host", "127.0.0.1", "--master-port", port))
               for _ in range(args.workers)]
    try:
        return master.wait()
    finally:
        for worker in workers:
            try:
                worker.wait(WORKER_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                worker.terminate()
                worker.wait()


if __name__ == "__main__":
    sys.exit(main())
