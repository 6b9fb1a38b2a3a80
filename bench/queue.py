"""Asynchronous jobs on digits (docs/async.md) against what bounds them.

    python -m bench.queue [--jobs 20000] [--quick] [--store DIR]     (also part of `make bench`)

A local redis-server configured as `make serve-async` runs it (append-only file synced per write), one
digit per job, and reports:
- **broker**: a producer writes `--jobs` jobs to the broker directly (an ETL job's path); then one
  `keras-serving worker` drains them: jobs/s from its ready line to an empty queue, against the in-process
  batched limit (bench/inprocess.py at the worker's batch size);
- **HTTP**: the same jobs through `POST :submit` on `keras-serving serve-async` (nginx, one gunicorn
  worker, one job worker), from 16 client threads: submits/s, and jobs/s until the last is answered;
- **latency**: submit to answer written (the job's record), p50/p95/p99, at a steady half of the drained
  rate for `--seconds`.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.harness import ROOT, ProcessGroup, free_port, http_ok, log, machine, serve_env
from bench.models import digits_store

PULL = 64  # jobs per pull, and the worker's max batch: one digit per job


def _settings(store: Path, run_dir: Path, redis_port: int, **more) -> dict:
    return {"model_store": store, "model_name": "digits", "run_dir": run_dir, "queue_backend": "redis",
            "queue_redis_url": f"redis://127.0.0.1:{redis_port}/0", "queue_pull_jobs": PULL,
            "max_batch_size": PULL, "queue_poll_seconds": 0.2, "log_level": "warning", **more}


def _bodies() -> list[bytes]:
    import orjson
    from api.training import held_out_split
    return [orjson.dumps({"instances": [image.round(4).tolist()]}) for image in held_out_split()[1]]


def _broker(settings: dict):
    from api.queue.broker import open_broker
    from api.settings import Settings
    return open_broker(Settings(**settings))


def _produce(broker, bodies: list[bytes], jobs: int, rate: float | None = None) -> list[str]:
    from api.queue.jobs import Job
    ids, started = [], time.monotonic()
    for i in range(jobs):
        ids.append(broker.submit(Job.create("digits", None, bodies[i % len(bodies)], 3600))[0])
        if rate:
            time.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
    return ids


def _drained(broker, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while True:
        stats = broker.stats()
        if stats.waiting + stats.in_flight == 0:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not drained: {stats}")
        time.sleep(0.02)


def _worker(settings: dict, work: Path, name: str) -> ProcessGroup:
    worker = ProcessGroup([sys.executable, "-m", "api.cli", "worker", "--consumer", name], work / f"{name}.log",
                          {**os.environ, **serve_env({**settings, "log_level": "info"})}, ROOT, name=name)
    worker.wait(lambda: '"worker ready"' in worker.log(), 180)
    return worker


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    return {f"p{p}_ms": round(values[min(len(values) - 1, int(len(values) * p / 100))] * 1e3, 1) for p in (50, 95, 99)}


def broker_and_latency(store: Path, work: Path, jobs: int, seconds: float) -> dict:
    from api.process import redis
    port = free_port()
    with ProcessGroup(redis.command(work / "redis", port), work / "redis.log", name="redis-server") as server:
        settings = _settings(store, work / "run", port)
        broker = _broker(settings)
        server.wait(lambda: _ping(broker), 20)
        bodies = _bodies()
        log(f"[queue] producer: {jobs:,} jobs to the broker")
        started = time.monotonic()
        _produce(broker, bodies, jobs)
        produce_s = time.monotonic() - started
        log("[queue] one worker drains them")
        with _worker(settings, work, "drain") as _:
            began = time.monotonic()
            drain_s = _drained(broker) - began
            rate = jobs / drain_s
            steady = min(rate / 2, 500.0)
            log(f"[queue] latency at a steady {steady:.0f} jobs/s for {seconds:g} s")
            ids = _produce(broker, bodies, int(steady * seconds), steady)
            _drained(broker)
            records = [broker.record(i) for i in ids]
        broker.close()
    latencies = [r.finished - r.submitted for r in records if r and r.state == "succeeded"]
    return {"jobs": jobs, "produce_jobs_per_s": round(jobs / produce_s, 1), "drain_jobs_per_s": round(rate, 1),
            "steady_jobs_per_s": round(steady, 1), "latency": _percentiles(latencies),
            "latency_jobs": len(latencies)}


def through_http(store: Path, work: Path, jobs: int) -> dict:
    port, redis_port = free_port(), free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-async-"))
    settings = _settings(store, run_dir, redis_port, port=port, status_port=free_port(), workers=1, queue_workers=1,
                         client_rate=1_000_000, client_burst=1_000_000, client_connections=65535,
                         log_level="info")  # the worker's ready line is an info line
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **serve_env(settings)}
    with ProcessGroup([sys.executable, "-m", "api.cli", "serve-async"], work / "serve-async.log", env, ROOT,
                      name="serve-async") as stack:
        stack.TERM = "leader"
        stack.wait(lambda: http_ok(url + "/ready") and '"worker ready"' in stack.log(), 180)
        broker = _broker(settings)
        bodies, local = _bodies(), threading.local()

        def submit(i: int) -> int:
            if not hasattr(local, "session"):  # one kept-alive connection per client thread
                local.session = requests.Session()
            return local.session.post(url + "/v1/models/digits:submit", data=bodies[i % len(bodies)],
                                headers={"Content-Type": "application/json"}, timeout=30).status_code

        log(f"[queue] {jobs:,} jobs through POST :submit (16 client threads)")
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(submit, range(jobs)))
        submitted = time.monotonic()
        done = _drained(broker)
        broker.close()
    return {"jobs": jobs, "accepted": statuses.count(202), "submit_per_s": round(jobs / (submitted - started), 1),
            "answered_jobs_per_s": round(jobs / (done - started), 1)}


def _ping(broker) -> bool:
    from api.queue.broker import BrokerUnavailable
    try:
        broker.stats()
        return True
    except BrokerUnavailable:
        return False


def bench(store: Path, work: Path, jobs: int, quick: bool) -> dict:
    from bench.batch import inprocess_limit
    log("[queue] in-process limit (bench/inprocess.py)")
    limit = inprocess_limit(store, 1 if quick else 5)
    report = {"inprocess": limit, "broker": broker_and_latency(store, work, jobs, 5 if quick else 30)}
    report["http"] = through_http(store, work, max(100, jobs // 4))
    return report


def table(report: dict) -> str:
    limit = max(report["inprocess"]["images_per_s"].values())
    b, h = report["broker"], report["http"]
    lines = ["### asynchronous jobs, digits, one job = one digit, one worker (docs/async.md)", "",
             "| path | jobs/s | vs the in-process limit |", "| --- | --- | --- |",
             f"| in-process batched limit | {limit:,.0f} | 1.00 |",
             f"| producer writing to Redis (submit script) | {b['produce_jobs_per_s']:,.0f} | |",
             f"| one worker draining {b['jobs']:,} jobs | {b['drain_jobs_per_s']:,.0f} | {b['drain_jobs_per_s'] / limit:.2f} |",
             f"| POST :submit through nginx (16 threads) | {h['submit_per_s']:,.0f} | |",
             f"| submit to answered, through HTTP ({h['jobs']:,} jobs) | {h['answered_jobs_per_s']:,.0f} | "
             f"{h['answered_jobs_per_s'] / limit:.2f} |", "",
             f"Latency, submit to answer written, at a steady {b['steady_jobs_per_s']:,.0f} jobs/s "
             f"({b['latency_jobs']:,} jobs): p50 {b['latency']['p50_ms']} ms, p95 {b['latency']['p95_ms']} ms, "
             f"p99 {b['latency']['p99_ms']} ms."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="a few hundred jobs: check the harness, not the figures")
    parser.add_argument("--store", type=Path, default=ROOT / "run" / "bench-store")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    report = bench(digits_store(args.store), work, 300 if args.quick else args.jobs, args.quick)
    print(f"{machine()}\n\n{table(report)}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
