"""`make bench` (python -m bench): every figure of docs/performance.md, side by side, in one run.

For each model (digits; ResNet50 with random weights, made locally):
  1. the in-process limit: the compiled function the workers serve, at its best batch size, in the
     higher of its two layouts (one call on every core; one call per worker side by side);
  2. the full stack (nginx + gunicorn + batcher, as `make serve`) under wrk at several connection
     counts: req/s, p50, p99, errors, and the ratio to the limit; then 4x the peak's connections,
     between two more runs at the peak's, against the higher of those two;
  3. the peers from ../shared/peers (hand-written tf.function worker, the HTTP ceiling, Ray Serve in its
     high-throughput mode from a venv of its own, see bench/ray_peer.py) under the same load, and our
     ratio to each;
  4. cold start to /ready and resident memory per worker;
then, on digits, the batch job over a million rows (bench/batch.py): against the in-process limit, the
stack's figures above, and its own peak memory on a file ten times smaller; and asynchronous jobs
(bench/queue.py): jobs/s from a producer writing to Redis and through POST :submit, against the
in-process limit, and job latency percentiles at a steady rate.
One server runs at a time: on two cores, two servers measured at once measure nothing.
"""
import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from api.settings import Settings
from bench import batch, inprocess, queue, ray_peer, wrk
from bench.harness import ROOT, log, machine
from bench.models import digits_body, digits_store, resnet_jpeg_body, resnet_json_body, resnet_store
from bench.servers import OurStack, Peer, RayServe

DEFAULT_PEERS = ROOT.parent / "shared" / "peers"
PLANS = {
    # connections, seconds per run; the stack's settings for the model (chosen by short runs, see docs);
    # Ray Serve's, as run_real_peers.sh sets them
    "digits": {"connections": [8, 32, 64], "seconds": 10, "ours": {},
               "inprocess_batches": "1,32,64,128",
               "ray": {"RAY_REPLICAS": "2", "TF_THREADS": "1", "MAX_BATCH": "64", "BATCH_WAIT_S": "0.002"}},
    "resnet50": {"connections": [4, 16], "seconds": 20, "warm": 20,
                 # two workers of one core each (two calls side by side beat one on both cores for
                 # ResNet50 here); batches of one: a frozen graph does about as much per image at 1 as at
                 # 32 on this CPU, and with one instance a call the requests a worker holds alternate,
                 # each parsed and answered while another runs, where a batch of all of them left the
                 # core idle while they came back (batches of 4 until 2026-12-01: the same req/s within
                 # noise, a p99 at 4 connections 1.5-2x as high); the queue bound kept at 64 instances;
                 # a queue wait of 3 s (docs/performance.md, "Batches of one for ResNet50")
                 "ours": {"workers": 2, "intra_op_threads": 1, "max_batch_size": 1, "max_enqueued_batches": 64,
                          "max_queue_wait": 3, "warmup_batches": "[1]", "timeout": 300},
                 "inprocess_batches": "1,4,8,16,32",
                 "ray": {"RAY_REPLICAS": "2", "TF_THREADS": "1", "MAX_BATCH": "32", "BATCH_WAIT_S": "0.01"}},
}


def inprocess_limit(store: Path, model: str, batches: dict[int, str], seconds: float) -> dict:
    """The in-process batched limit: the compiled function alone, in the higher of the ways the stack can
    run it (bench/inprocess.py), `batches` giving each layout (calls side by side, cores // calls intra-op
    threads each) the batch sizes to try: one call at a time on every core, and one call per worker (the
    stack's layout). Judging a stack of two single-threaded workers against one call on both cores alone
    would flatter it where two calls side by side do more (ResNet50 at small batches here)."""
    readings = [inprocess.run(store, model, sizes, seconds, calls) for calls, sizes in batches.items()]
    best = max(readings, key=lambda r: r["best_images_per_s"])
    return {**best, "layouts": {r["calls"]: {"threads": r["threads"], "best_batch": r["best_batch"],
                                             "images_per_s": r["best_images_per_s"]} for r in readings}}


def load(server, body: Path, connections: list[int], seconds: float, warm: float, content_type="application/json"):
    wrk.run(server.url, body, max(connections), warm, content_type)  # warm: caches, connections, allocator
    results = []
    for conns in connections:
        result = wrk.run(server.url, body, conns, seconds, content_type)
        log(f"    {conns:>4} conns: {result.ok_rps:8.1f} ok/s  p50 {result.p50_ms:7.1f} ms  "
            f"p99 {result.p99_ms:7.1f} ms  errors {result.errors}  refused {result.refused}")
        results.append(result)
    return results


def bench_model(model: str, store: Path, work: Path, peers: Path | None, quick: bool,
                ray_python: Path | None = None) -> dict:
    plan = PLANS[model]
    seconds = 3 if quick else plan["seconds"]
    warm = 2 if quick else plan.get("warm", 5)
    report: dict = {"model": model}
    workers = int(plan["ours"].get("workers", Settings().workers))
    log(f"[{model}] in-process limit")
    report["inprocess"] = inprocess_limit(store, model, dict.fromkeys(sorted({1, workers}), plan["inprocess_batches"]),
                                          2 if quick else 5)
    log(f"    {report['inprocess']['images_per_s']} ({report['inprocess']['layouts']})")

    def bracket(label: str) -> float:
        # This VM's speed drifts by the minute: each run of ours is judged against the limit read just
        # before and just after it (the higher of the two), not against a reading minutes away. Each
        # layout is read at the batch it did best at in the first reading.
        at_best = {calls: str(layout["best_batch"]) for calls, layout in report["inprocess"]["layouts"].items()}
        rate = inprocess_limit(store, model, at_best, 2 if quick else 5)["best_images_per_s"]
        log(f"    in-process limit, {label}: {rate:,.1f} images/s")
        return rate
    # the first reading, at every batch size, is the one just before run A
    report["limit_readings"] = {"before run A": report["inprocess"]["best_images_per_s"]}

    bodies = {"json": (digits_body if model == "digits" else resnet_json_body)(work / f"{model}.json")}
    if model != "digits":
        bodies["b64 jpeg"] = resnet_jpeg_body(work / f"{model}-jpeg.json")

    log(f"[{model}] our stack {plan['ours']}, before the peers (run A)")
    with OurStack(store, model, work, **plan["ours"]) as ours:
        report["cold_start_s"] = ours.wait(ours.ready)
        report["ours"] = {}
        for kind, body in bodies.items():
            log(f"  {kind} body ({body.stat().st_size} bytes)")
            report["ours"][kind] = [asdict(r) for r in load(ours, body, plan["connections"], seconds, warm)]
        peak = max(report["ours"]["json"], key=lambda r: r["ok_rps"])["connections"]
        # The peak's connections read again just before and just after 4x of them, back to back: the
        # VM's speed drifts by minutes, and the peak above was read minutes earlier.
        log(f"  saturation: {peak}, 4x {peak}, {peak} connections")
        bracketing = [wrk.run(ours.url, bodies["json"], peak, seconds)]
        report["saturation"] = asdict(wrk.run(ours.url, bodies["json"], 4 * peak, seconds))
        bracketing.append(wrk.run(ours.url, bodies["json"], peak, seconds))
        report["saturation_peaks"] = [asdict(r) for r in bracketing]
        log(f"    {peak} / {4 * peak} / {peak} conns: "
            + " / ".join(f"{r['ok_rps']:.1f}" for r in (report["saturation_peaks"][0], report["saturation"],
                                                         report["saturation_peaks"][1])) + " ok/s")
        report["worker_rss_mib"] = ours.worker_rss_mib()
        report["settings"] = plan["ours"]
    report["limit_readings"]["after run A"] = bracket("after run A")

    report["peers"] = {}
    if peers and peers.exists():
        model_file = store / model / "1" / "model.keras"
        runs = [("tf_function_flask", "tf_function_flask:app", {"MODEL": str(model_file)})]
        if model == "digits":
            runs.append(("http_ceiling", "hello_restful:app", {}))
        for label, app, env in runs:
            log(f"[{model}] peer {label} (gunicorn -w 2)")
            with Peer(peers, app, work, ["-w", "2", "--timeout", "300"], env) as peer:
                peer.wait(peer.ready_with(bodies["json"].read_bytes()))
                results = load(peer, bodies["json"], plan["connections"], seconds, warm)
                report["peers"][label] = {"results": [asdict(r) for r in results],
                                          "cold_start_s": peer.cold_start_s,
                                          "worker_rss_mib": peer.worker_rss_mib()}
        if ray_python:
            log(f"[{model}] peer ray_serve (HAProxy high-throughput mode, {plan['ray']})")
            try:
                with RayServe(ray_python, peers, model_file, work, plan["ray"]) as ray:
                    ray.wait(ray.ready_with(bodies["json"].read_bytes()), timeout=300)
                    log(f"    cold start to the first 200: {ray.cold_start_s:.1f} s")
                    results = load(ray, bodies["json"], plan["connections"], seconds, warm)
                    report["peers"]["ray_serve"] = {"results": [asdict(r) for r in results],
                                                    "cold_start_s": ray.cold_start_s,
                                                    "worker_rss_mib": ray.worker_rss_mib(),
                                                    "settings": {**RayServe.FAST, **plan["ray"]}}
            except (RuntimeError, TimeoutError) as error:  # a peer that cannot start costs its row only
                log(f"[{model}] ray_serve skipped: {str(error).splitlines()[0]} (its log is in {work})")

    # This VM's speed drifts by minutes: our stack again after the peers, and the ratios take the worse run.
    report["limit_readings"]["before run B"] = bracket("before run B")
    log(f"[{model}] our stack again, after the peers (run B)")
    with OurStack(store, model, work, **plan["ours"]) as ours:
        ours.wait(ours.ready)
        report["ours_after"] = {"json": [asdict(r) for r in load(ours, bodies["json"], plan["connections"],
                                                                  seconds, warm)]}
    report["limit_readings"]["after run B"] = bracket("after run B")
    return report


def run_limits(report: dict) -> dict[str, float]:
    """The limit each run of ours is judged against: the higher of the readings just before and after it
    (reports without them: the one reading at the start)."""
    readings = report.get("limit_readings")
    if not readings:
        return dict.fromkeys(("A", "peers", "B"), report["inprocess"]["best_images_per_s"])
    return {"A": max(readings["before run A"], readings["after run A"]),
            "peers": max(readings["after run A"], readings["before run B"]),
            "B": max(readings["before run B"], readings["after run B"])}


def table(report: dict) -> str:
    limit = report["inprocess"]["best_images_per_s"]
    lines = [f"## {report['model']}",
             f"in-process limit: {limit:,.0f} images/s (batch {report['inprocess']['best_batch']}, "
             f"{report['inprocess'].get('calls', 1)} call(s) side by side); "
             f"batch 1: {report['inprocess']['images_per_s'].get('1', 0):,.0f} images/s",
             *(["the limit's layouts (the higher is the limit): " + ", ".join(
                 f"{calls} call(s) x {r['threads']} thread(s) {r['images_per_s']:,.1f} at batch {r['best_batch']}"
                 for calls, r in report["inprocess"]["layouts"].items())] if "layouts" in report["inprocess"] else []),
             *(["the same limit read beside our runs (the first reading is the one before run A): "
                + ", ".join(f"{k} {v:,.1f}" for k, v in report["limit_readings"].items())
                + "; each run of ours is judged against the higher reading beside it (\"of limit\")"]
               if report.get("limit_readings") else []),
             f"cold start to /ready: {report['cold_start_s']:.1f} s; resident memory per worker: "
             + ", ".join(f"{m:.0f} MiB" for m in report["worker_rss_mib"])]
    peers = report["peers"]
    if peers:
        lines.append("peers' cold start to the first 200: "
                     + ", ".join(f"{name} {peer['cold_start_s']:.1f} s" for name, peer in peers.items()))
    lines.append("")
    header = "| server | body | conns | ok req/s | p50 ms | p99 ms | errors | refused | of limit |"
    header += "".join(f" ours / {name} |" for name in peers)
    lines += [header, "|" + " --- |" * (header.count("|") - 1)]

    limits = run_limits(report)

    def row(server, kind, r, compare=True, against=limit):
        cells = [server, kind, r["connections"], f"{r['ok_rps']:,.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                 r["socket_errors"] + r["non2xx"] - r["refused"], r["refused"], f"{r['ok_rps'] / against:.0%}"]
        for name, peer in peers.items():
            match = [p for p in peer["results"] if p["connections"] == r["connections"]]
            cells.append(f"{r['ok_rps'] / match[0]['ok_rps']:.2f}x" if compare and match and match[0]["ok_rps"]
                         else "")
        return "| " + " | ".join(map(str, cells)) + " |"

    for kind, results in report["ours"].items():
        lines += [row("ours (nginx + gunicorn + batcher), run A", kind, r, kind == "json", limits["A"])
                  for r in results]
    for kind, results in report.get("ours_after", {}).items():
        lines += [row("ours, run B (after the peers)", kind, r, kind == "json", limits["B"]) for r in results]
    lines.append(row("ours, 4x peak connections", "json", report["saturation"], False, limits["A"]))
    for name, peer in peers.items():
        lines += [row(name, "json", r, False, limits["peers"]) for r in peer["results"]]
    lines.append("")
    lines.append(saturation_line(report))
    return "\n".join(lines)


def saturation_line(report: dict) -> str:
    """4x the peak's connections against the peak: the higher of the two readings of the peak's connections
    just before and after it (reports without them: the peak of the table, read minutes earlier)."""
    sat, table_peak = report["saturation"], max(r["ok_rps"] for r in report["ours"]["json"])
    peaks = report.get("saturation_peaks")
    if peaks:
        peak = max(r["ok_rps"] for r in peaks)
        where = (f"the higher of {peaks[0]['ok_rps']:,.1f} and {peaks[1]['ok_rps']:,.1f} ok/s at "
                 f"{peaks[0]['connections']} connections just before and after it (the table's peak: {table_peak:,.1f})")
    else:
        peak, where = table_peak, f"the table's peak {table_peak:,.1f}"
    return (f"saturation: {sat['ok_rps']:,.1f} ok/s at {sat['connections']} connections = {sat['ok_rps'] / peak:.0%} "
            f"of {where}; {sat['refused']} refused fast (503), p99 {sat['p99_ms']:.0f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the stack against its limit and its peers.")
    parser.add_argument("--models", default="digits,resnet50", help="comma-separated: digits, resnet50")
    parser.add_argument("--peers", type=Path, default=DEFAULT_PEERS, help="folder of the peers' code")
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "bench-store")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--quick", action="store_true", help="3 s runs: check the harness, not the figures")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Serve peer")
    parser.add_argument("--ray-venv", type=Path, default=ray_peer.DEFAULT_VENV,
                        help="Ray Serve's virtualenv, created with its pinned packages when missing")
    args = parser.parse_args(argv)
    if not wrk.available():
        sys.exit("wrk is missing: apt-get install wrk")
    ray_python = None if args.no_ray else ray_peer.prepare(args.ray_venv, args.peers)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    reports = []
    for model in args.models.split(","):
        store = digits_store(args.store) if model == "digits" else resnet_store(args.store)
        reports.append(bench_model(model, store, work, args.peers, args.quick, ray_python))
    host = machine()
    output = [f"# make bench, {time.strftime('%Y-%m-%d %H:%M')}, {host}", ""]
    output += [table(r) + "\n" for r in reports]
    batch_report = None
    if "digits" in args.models.split(","):  # the batch job on the same rows (bench/batch.py, docs/batch.md)
        digits = next(r for r in reports if r["model"] == "digits")
        batch_report = batch.bench(digits_store(args.store), work, 20_000 if args.quick else 1_000_000, args.quick,
                                   digits)
        output.append(batch.table(batch_report) + "\n")
    queue_report = None
    if "digits" in args.models.split(","):  # asynchronous jobs on digits (bench/queue.py, docs/async.md)
        queue_report = queue.bench(digits_store(args.store), work, 2_000 if args.quick else 20_000, args.quick)
        output.append(queue.table(queue_report) + "\n")
    print("\n".join(output))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": host, "reports": reports, "batch": batch_report,
                                    "queue": queue_report}, indent=1))
    log(f"figures written to {args.out}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
