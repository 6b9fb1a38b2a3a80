"""Slow work and slow clients. An inference that outlasts the request deadline gets a JSON 504 soon
after it, and the worker serves on, never killed by gunicorn's time-out. Hundreds of slowloris and
slow-body connections (Debian's slowhttptest) leave normal traffic at full success and near-normal
latency: nginx holds slow clients and reads whole bodies before a worker sees them.
"""
import csv
import subprocess
import time

import numpy as np
import requests

from tests.load import REPORTS, Load, wait_until
from tests.models import build_heavy_model, convolutions_lasting
from tests.servers import Stack, running

DEADLINE = 2.0  # SERVE_REQUEST_TIMEOUT
GUNICORN_TIMEOUT = 4  # SERVE_TIMEOUT: the hung call must outlast it


def test_an_inference_past_the_deadline_gets_a_json_504_and_the_worker_serves_on(tmp_path, digits):
    """Version 1 of the model takes ~12 s per instance (a hung call); version 2 is quick. One worker.
    TensorFlow runs one op at a time in a worker (inter-op threads 1), so while the call runs the
    worker can only answer 504s; it serves again as soon as the call ends."""
    store = tmp_path / "store"
    build_heavy_model(store, "heavy", 1, convolutions_lasting(3 * GUNICORN_TIMEOUT))
    build_heavy_model(store, "heavy", 2, 0)
    stack = Stack(tmp_path, model_store=store, model_name="heavy", workers=1, threads=4, request_timeout=DEADLINE,
                  timeout=GUNICORN_TIMEOUT, max_batch_size=1, warmup_batches="[1]", max_queue_wait=DEADLINE)
    body = {"instances": digits[0][:1].tolist()}
    hung_url, quick_url = (stack.url + f"/v1/models/heavy/versions/{v}:predict" for v in (1, 2))
    with running(stack, workers=1):
        worker = stack.worker_pids()
        started = time.monotonic()
        hung = requests.post(hung_url, json=body, headers={"X-Request-ID": "hung-call"}, timeout=60)
        answered_after = time.monotonic() - started
        # The call still runs: a second one waits its turn and gets its 504 at its own deadline (from
        # the worker or from nginx, whichever is first), not when the call ends.
        queued_started = time.monotonic()
        queued = requests.post(hung_url, json=body, timeout=60)
        queued_after = time.monotonic() - queued_started
        wait_until(lambda: '"request_id":"hung-call"' in stack.log(), timeout=120, what="the hung call never ended")
        hung_lasted = time.monotonic() - started
        after = requests.post(quick_url, json=body, timeout=60)
        log = stack.log()
        still = stack.worker_pids()
    line = (f"[inference past its {DEADLINE:g} s deadline] answered {hung.status_code} after {answered_after:.2f} s, "
            f"a queued one {queued.status_code} after {queued_after:.2f} s; the call lasted {hung_lasted:.1f} s "
            f"(gunicorn timeout {GUNICORN_TIMEOUT} s); the same worker answered the next request {after.status_code}")
    print(line)
    REPORTS.append(line)
    assert hung.status_code == 504 and f"within {DEADLINE:g} s" in hung.json()["error"]
    assert DEADLINE <= answered_after < DEADLINE + 1.0
    assert queued.status_code == 504 and queued.json()["error"] and queued_after < DEADLINE + 1.0
    assert after.status_code == 200
    assert hung_lasted > GUNICORN_TIMEOUT, "the call must outlast gunicorn's time-out to prove it does not fire"
    assert still == worker and "WORKER TIMEOUT" not in log


def test_slowloris_and_slow_bodies_leave_normal_traffic_untouched(store, tmp_path, digits):
    """300 slow-header and 300 slow-body connections from 127.0.0.1 while 8 clients from 127.0.0.2 send
    normal requests: the per-address connection limit (512) caps the attacker, not the others."""
    stack = Stack(tmp_path, model_store=store, workers=2, threads=4, model_versions="latest")
    body = {"instances": digits[0][:1].tolist()}
    with running(stack):
        with Load(stack.url + "/predict", body, clients=8, source_address="127.0.0.2") as before:
            before.wait_for(1000)
        attacks = [_slowhttptest(stack, tmp_path, mode) for mode in ("-H", "-B")]
        time.sleep(8)  # let both reach their connection count
        with Load(stack.url + "/predict", body, clients=8, source_address="127.0.0.2") as during:
            during.wait_for(1000)
        for attack in attacks:
            attack.wait(60)
        peaks = [_peak_connected(tmp_path / f"slow{mode}.csv") for mode in ("-H", "-B")]
        alive = stack.worker_pids()
    base, hit = _percentiles(before.latencies), _percentiles(during.latencies)
    during.report(f"slowloris {peaks[0]} + slow-body {peaks[1]} connections held: normal traffic p50/p99 "
                  f"{hit[0] * 1e3:.1f}/{hit[1] * 1e3:.1f} ms against {base[0] * 1e3:.1f}/{base[1] * 1e3:.1f} ms before")
    assert before.failed == 0 and during.failed == 0, during.failures[:5]
    assert min(peaks) >= 200, "the attack never held hundreds of connections: it proves nothing"
    assert hit[0] < 2 * base[0] + 0.02 and hit[1] < 3 * base[1] + 0.05, (base, hit)
    assert len(alive) == 2


def _slowhttptest(stack, tmp_path, mode: str) -> subprocess.Popen:
    url = stack.url + ("/predict" if mode == "-B" else "/ready")
    return subprocess.Popen(
        ["slowhttptest", mode, "-c", "300", "-r", "100", "-i", "3", "-l", "25", "-s", "65536", "-x", "16",
         "-p", "3", "-u", url, "-g", "-o", str(tmp_path / f"slow{mode}")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _peak_connected(path) -> int:
    """The most connections slowhttptest held open at once, from its statistics file."""
    with open(path) as stats:
        return max(int(row["Connected"]) for row in csv.DictReader(stats))


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))
