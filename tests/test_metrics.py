"""Observability: one Prometheus scrape sums every worker (checked by a real Prometheus server), the
exposition passes promtool, a killed worker's samples neither vanish nor double, logs join on request ids."""
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from api.logs import JsonFormatter
from api.metrics import gpu_exposition
from tests.servers import Stack, free_port, running

PREDICT = 'keras_serving_requests_total{route="/predict"}'


@pytest.fixture(scope="module")
def observed(store, tmp_path_factory):
    """A stack of its own: the last test here kills one of its workers."""
    with running(Stack(tmp_path_factory.mktemp("observed"), model_store=store, workers=2, threads=4)) as served:
        yield served


def scrape(stack) -> str:
    answer = requests.get(stack.status_url + "/metrics", timeout=5)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    return answer.text


def total(text: str, name: str, **labels) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def predict(stack, digits, request_id: str) -> requests.Response:
    return requests.post(stack.url + "/predict", json={"instances": digits[0][:1].tolist()},
                         headers={"X-Request-ID": request_id}, timeout=10)


def app_access_lines(stack) -> list[dict]:
    lines = (json.loads(line) for line in stack.log().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("logger") == "api.access"]


@pytest.fixture()
def prometheus(observed, tmp_path):
    """A real Prometheus server scraping the stack's instance-only /metrics every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `make system-deps`")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: keras-serving
    static_configs: [{{targets: ["127.0.0.1:{observed.status_port}"]}}]
""")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "prometheus did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def query(prometheus: str, expression: str) -> float | None:
    answer = requests.get(prometheus + "/api/v1/query", params={"query": expression}, timeout=5).json()
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_counts_every_request_of_every_worker(observed, prometheus, digits):
    sent = 60
    before = total(scrape(observed), "keras_serving_requests_total", route="/predict")
    ids = [f"count-{uuid.uuid4()}" for _ in range(sent)]
    with ThreadPoolExecutor(8) as pool:  # concurrent connections: nginx spreads them over both workers
        statuses = list(pool.map(lambda request_id: predict(observed, digits, request_id).status_code, ids))
    assert statuses == [200] * sent
    expected = before + sent
    deadline, seen = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        seen = query(prometheus, f'sum({PREDICT})')
        if seen == expected:
            break
        time.sleep(0.5)
    assert seen == expected
    assert query(prometheus, 'up{job="keras-serving"}') == 1
    assert query(prometheus, "sum(keras_serving_inferred_instances_total)") >= sent
    assert query(prometheus, "sum(keras_serving_workers_ready)") == 2
    served_by = {line["pid"] for line in app_access_lines(observed) if line["request_id"] in set(ids)}
    assert served_by == observed.worker_pids()


def test_metrics_pass_promtool_and_only_the_instance_port_serves_them(observed, digits, tmp_path):
    assert predict(observed, digits, "lint").status_code == 200
    text = scrape(observed)
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the prometheus package: run `make system-deps`"
    sample_gpu = gpu_exposition("0, 1024, 81559, 37\n1, 0, 81559, 0\n")
    for body in (text, sample_gpu):
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert total(text, "keras_serving_model_info", model="digits", version="2") == 1
    assert requests.get(observed.url + "/metrics", timeout=5).status_code == 404
    if shutil.which("nvidia-smi") is None:  # a CPU host exports no GPU series at all
        assert "keras_serving_gpu_" not in text


def test_nvidia_smi_rows_become_gpu_gauges_in_base_units():
    text = gpu_exposition("0, 1024, 81559, 37\n")
    assert total(text, "keras_serving_gpu_memory_used_bytes", gpu="0") == 1024 * 2 ** 20
    assert total(text, "keras_serving_gpu_utilization_ratio", gpu="0") == pytest.approx(0.37)
    assert gpu_exposition("[N/A], [N/A], [N/A], [N/A]\n") == ""


def test_one_request_has_one_id_in_the_nginx_and_app_access_logs(observed, digits):
    request_id = f"join-{uuid.uuid4()}"
    assert predict(observed, digits, request_id).status_code == 200
    time.sleep(0.3)  # both logs are written after the answer
    (edge,) = [line for line in observed.access_lines() if line["request_id"] == request_id]
    (app,) = [line for line in app_access_lines(observed) if line["request_id"] == request_id]
    assert edge["status"] == app["status"] == 200
    assert app["route"] == "/predict" and app["model"] == "digits" and app["version"] == 2
    assert app["instances"] == 1 and 0 < app["duration_ms"] <= float(edge["request_time"]) * 1e3 + 1


def test_a_500_logs_its_trace_and_answers_a_generic_error(app, client, caplog, monkeypatch):
    def broken():
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app.extensions["dataplane"], "server_metadata", broken)
    with caplog.at_level(logging.ERROR, logger="api"):
        answer = client.get("/v2")
    assert answer.status_code == 500 and answer.get_json() == {"error": "internal server error"}
    (record,) = [r for r in caplog.records if r.exc_info]
    line = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: secret detail" in line["traceback"] and "\n" not in JsonFormatter().format(record)


def test_a_killed_worker_keeps_its_counts_and_loses_its_live_gauges(observed):
    """Runs last in this module: it kills a worker. mark_process_dead drops the dead pid's live gauges;
    its counters stay in the sums, once."""
    before = scrape(observed)
    assert total(before, "keras_serving_workers_ready") == 2
    victim = min(observed.worker_pids())
    os.kill(victim, signal.SIGKILL)
    deadline, after = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        pids = observed.ready_pids()
        if victim not in pids and len(pids) == 2:
            after = scrape(observed)
            if total(after, "keras_serving_workers_ready") == 2:
                break
        time.sleep(0.2)
    assert total(after, "keras_serving_workers_ready") == 2  # not 3: the dead pid's gauge went with it
    assert total(after, "keras_serving_worker_exits_total") == 1
    assert total(after, "keras_serving_requests_total", route="/predict") == \
        total(before, "keras_serving_requests_total", route="/predict")
    assert total(after, "keras_serving_model_info", model="digits", version="2") == 1


def test_dashboard_and_alerts_use_only_exported_metrics():
    from api import metrics
    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    exported |= {metrics.PREFIX + name for name in ("gpu_memory_used_bytes", "gpu_memory_total_bytes",
                                                    "gpu_utilization_ratio")}
    root = Path(__file__).resolve().parent.parent / "deploy" / "observability"
    used = set()
    for name in ("grafana-dashboard.json", "alerts.yml"):
        used |= set(re.findall(r"keras_serving_[a-z_]+", (root / name).read_text()))
    stripped = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert stripped and stripped <= exported, stripped - exported
    check = subprocess.run([shutil.which("promtool") or "promtool", "check", "rules", str(root / "alerts.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
