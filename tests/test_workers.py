"""gunicorn process model: one model per worker, loaded after the fork, warm before it takes traffic."""
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.servers import ROOT, Gunicorn


def metadata_by_worker(url: str, workers: int) -> dict[int, dict]:
    """Ask on fresh connections until every worker has answered once."""
    seen = {}
    for _ in range(200):
        runtime = requests.get(url + "/v1/models/digits/metadata", timeout=10).json()["runtime"]
        seen[runtime["worker_pid"]] = runtime
        if len(seen) == workers:
            break
    return seen


def test_each_worker_loads_its_model_once_and_never_per_request(server, digits):
    x, _ = digits
    for i in range(100):
        assert requests.post(server.url + "/predict", json={"instances": x[i:i + 1].tolist()}, timeout=10).ok
    seen = metadata_by_worker(server.url, 2)
    assert set(seen) == server.worker_pids()
    for runtime in seen.values():
        assert runtime["model_loads"] == 2  # versions 1 and 2, each once
        assert runtime["traces"] == 1  # traced at load; no request retraced it
    loads = re.findall(r"model loaded name=digits version=(\d) pid=(\d+)", server.log())
    assert sorted(loads) == sorted((v, str(pid)) for pid in seen for v in "12")


def test_tensorflow_is_never_loaded_in_the_gunicorn_master(server):
    def maps(pid: int) -> str:
        return Path(f"/proc/{pid}/maps").read_text()

    assert "libtensorflow" not in maps(server.process.pid)
    assert all("libtensorflow" in maps(pid) for pid in server.worker_pids())


def test_the_master_loads_neither_flask_nor_tensorflow(tmp_path):
    """What gunicorn's master imports: its config file, the worker class, the log formatter and the
    metrics module its child_exit hook uses. Flask and TensorFlow stay in the workers."""
    code = ("import runpy, sys; from gunicorn import util; runpy.run_path('gunicorn.conf.py'); "
            "util.load_class('api.process.workers.GeventWorker'); import api.logs, api.metrics; "
            "print(sorted(m for m in ('flask', 'flask_restful', 'werkzeug', 'tensorflow', 'keras') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SERVE_RUN_DIR": str(tmp_path / "run")}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_the_supervisor_loads_neither_flask_nor_tensorflow():
    """`keras-serving serve` (api/process/stack.py) runs beside nginx and gunicorn for the stack's life."""
    code = ("import sys, api.cli, api.process.stack; print(sorted(m for m in ('flask', 'flask_restful', "
            "'werkzeug', 'tensorflow', 'keras', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_ready_is_503_until_the_model_is_warm(store, tmp_path):
    gunicorn = Gunicorn(tmp_path, model_store=store, workers=1, model_versions="latest")
    try:
        answers = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                ready = requests.get(gunicorn.url + "/ready", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.02)
                continue
            if not answers:  # the first answer: the model cannot be warm yet
                early = requests.post(gunicorn.url + "/predict", json={"instances": [[[[0.0]] * 8] * 8]}, timeout=5)
            answers.append(ready.status_code)
            if ready.status_code == 200:
                break
        assert answers[0] == 503 and answers[-1] == 200
        assert set(answers) == {503, 200}
        assert early.status_code == 503 and early.headers["Retry-After"]
        assert "still loading" in early.json()["error"]
    finally:
        gunicorn.stop()


def test_a_replacement_worker_takes_no_request_before_it_is_warm(store, tmp_path, digits):
    """After a crash, siblings are warm: the new worker loads first, then accepts (see pre_fork)."""
    x, _ = digits
    gunicorn = Gunicorn(tmp_path, model_store=store, workers=2, model_versions="latest")
    try:
        gunicorn.wait_ready()
        gunicorn.wait_all_workers_ready(2)
        victim, survivor = sorted(gunicorn.worker_pids())
        statuses, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    statuses.append(requests.post(gunicorn.url + "/predict", timeout=10,
                                                  json={"instances": x[:1].tolist()}).status_code)
                except requests.ConnectionError:
                    statuses.append("reset")  # only a request in flight on the killed worker

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not gunicorn.worker_pids() - {victim, survivor}:
            time.sleep(0.1)
        (newcomer,) = gunicorn.worker_pids() - {victim, survivor}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and f"version=2 pid={newcomer}" not in gunicorn.log():
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        thread.join()
        log = gunicorn.log()
        loaded_at = log.index(f"version=2 pid={newcomer}")
        first_request = log.find(f'"logger":"api.access","pid":{newcomer}')
        assert first_request == -1 or first_request > loaded_at
        assert statuses.count(503) == 0
        assert statuses.count("reset") <= 1
    finally:
        gunicorn.stop()


def test_answers_without_a_body_still_arrive_whole(server):
    """Responses leave gunicorn in one write (api/lifecycle.py); HEAD, OPTIONS and 204-like answers too."""
    for method in ("HEAD", "OPTIONS"):
        answer = requests.request(method, server.url + "/v2", timeout=3)
        assert answer.status_code == 200
    assert requests.options(server.url + "/predict", timeout=3).headers["Allow"]


def test_a_graceful_stop_closes_connections_idle_between_requests_at_once(store, tmp_path):
    """Three keep-alive connections that asked once and then sit idle, as nginx's upstream connections
    do: at SIGTERM the worker closes them (an orderly close, not a reset) and exits in about a second.
    gunicorn alone waits for them until its graceful time-out (30 s here; gunicorn#3227)."""
    gunicorn = Gunicorn(tmp_path, model_store=store, workers=1, model_versions="latest")
    connections = []
    try:
        gunicorn.wait_ready()
        for _ in range(3):
            connection = http.client.HTTPConnection("127.0.0.1", gunicorn.port, timeout=20)
            connections.append(connection)
            connection.request("GET", "/ready")
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read() and not answer.will_close
        stopped_at = time.monotonic()
        gunicorn.process.send_signal(signal.SIGTERM)
        assert gunicorn.process.wait(25) == 0
        took = time.monotonic() - stopped_at
        assert all(connection.sock.recv(1) == b"" for connection in connections)  # a reset would raise
    finally:
        for connection in connections:
            connection.close()
        gunicorn.stop()
    assert took < 5, f"the stop took {took:.1f} s: it waited for the idle connections"
    assert "closed 3 connection(s) idle between requests" in gunicorn.log()
