"""Load tests with locust (loadtest/): the real locust CLI against the real nginx + gunicorn stack, its
SLO gates passing a healthy server and failing a slow one, distributed over a master and two workers;
then the plain parts alone: gates, shapes, payloads, the bad-request corpus, the knee finder.

Locust runs only as a subprocess: it monkey-patches the standard library with gevent on import.
"""
import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests
from PIL import Image
from sklearn.datasets import load_digits

from loadtest import answers, gates, knee, reports, shapes
from loadtest.bad_requests import corpus
from loadtest.mix import MIX, WELL_FORMED
from loadtest.model import from_metadata
from loadtest.payloads import Payloads, png_b64, sample_instances
from tests.models import build_slow_model
from tests.servers import ROOT, Stack, free_port

class LocustRun:
    """`python -m loadtest.run` (what `make loadtest` runs) to completion: exit code, output, CSV report."""

    def __init__(self, host: str, reports: Path, *flags: str, timeout: float = 90):
        self.reports = reports
        command = [sys.executable, "-m", "loadtest.run", "--host", host, "--report-dir", str(reports), *flags]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        self.returncode, self.output = done.returncode, done.stdout + done.stderr

    @property
    def stats(self) -> dict[str, dict]:
        return {row["Name"]: row for row in reports.rows(self.reports / f"{reports.PREFIX}_stats.csv")}

    def gate_line(self, name: str) -> str:
        (line,) = [line for line in self.output.splitlines() if line.strip().startswith(name)]
        return line

    def names_of_user_classes_missing(self) -> list[str]:
        names = [name for name in self.stats if name != "Aggregated"]
        return [user for user, share in MIX.items()
                if not all(any(name.startswith(wanted) for name in names) for wanted in share.requests)]


# -- the real locust against the real stack ---------------------------------------------------------------

def test_a_smoke_run_against_the_stack_passes_the_default_gates_with_every_user_class(stack, tmp_path):
    run = LocustRun(stack.url, tmp_path, "-t", "20s", "-u", "12", "-r", "6")
    assert run.returncode == 0, run.output[-3000:]
    assert "SLO verdict: PASS" in run.output
    assert run.names_of_user_classes_missing() == []
    total = run.stats["Aggregated"]
    assert int(total["Request Count"]) > 150 and int(total["Failure Count"]) == 0, total
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_a_model_the_server_does_not_serve_fails_the_run_with_the_reason(stack, tmp_path):
    run = LocustRun(stack.url, tmp_path, "-t", "2s", "--model", "no-such-model")
    assert run.returncode == 1, run.output[-3000:]
    assert "cannot read the served model's metadata" in run.output
    assert run.gate_line("requests").endswith("FAIL")


def test_every_bad_request_of_the_corpus_is_refused_with_its_status_and_a_json_error(stack):
    model = from_metadata(requests.get(stack.url + "/v2/models/digits", timeout=5).json(),
                          requests.get(stack.url + "/v1/models/digits/metadata", timeout=5).json())
    for bad in corpus(model):
        answer = requests.post(stack.url + bad.path, data=bad.body, timeout=5,
                               headers={"Content-Type": bad.content_type})
        assert answers.check_refused(answer.status_code, answer.content, bad.status) is None, bad.name


def test_every_kind_of_good_body_gets_a_right_answer_from_the_stack(stack):
    model = from_metadata(requests.get(stack.url + "/v2/models/digits", timeout=5).json(),
                          requests.get(stack.url + "/v1/models/digits/metadata", timeout=5).json())
    payloads = Payloads.build(model)
    kinds = [("/predict", payloads.one, "predictions", None),
             ("/predict", payloads.batches, "predictions", None),
             ("/predict", payloads.uploads, "predictions", 3),
             ("/v1/models/digits:predict", payloads.columnar, "outputs", None)]
    for path, bodies, key, top_k in kinds:
        for body in bodies[:8]:
            answer = requests.post(stack.url + path, data=body.data, timeout=5,
                                   headers={"Content-Type": "application/json"})
            assert answers.check_predict(answer.status_code, answer.content, body.rows, key, top_k) is None
    for body in payloads.v2[-8:]:
        answer = requests.post(stack.url + "/v2/models/digits/infer", data=body.data, timeout=5,
                               headers={"Content-Type": "application/json"})
        assert answers.check_v2(answer.status_code, answer.content, body.rows) is None


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory):
    """One worker of two threads serving the slow model (~6 ms of CPU per instance): easy to saturate. It
    takes at most 4 instances a request, so the load's batches of 8 are refused: failures on purpose."""
    tmp = tmp_path_factory.mktemp("slow")
    build_slow_model(tmp / "store")
    served = Stack(tmp, model_store=tmp / "store", model_name="slow", workers=1, threads=2, max_instances=4,
                   warmup_batches="[1,4]")
    try:
        served.wait_ready(workers=1)
        yield served
    finally:
        served.stop()


def test_a_saturated_server_breaks_the_p95_gate_and_the_run_exits_1(slow_stack, tmp_path):
    # the gate well under what 16 users without think time give this server (p95 96 ms in a fresh-clone
    # run with the frozen graph): at a gate near the figure, locust's rounded report and the gate disagree.
    # The well-formed classes only: flat out, BadRequestUser's instant 400s outnumbered the queued
    # predictions on a fast VM and pulled the p95 to 18 ms (a fresh-clone run, 2026-12-01)
    run = LocustRun(slow_stack.url, tmp_path, "-t", "10s", "-u", "16", "-r", "16", "--think-time", "0",
                    "--max-p95-ms", "25", "--max-p99-ms", "600000", "--max-error-rate", "1", *WELL_FORMED)
    assert run.returncode == 1, run.output[-3000:]
    assert run.gate_line("p95 latency").endswith("FAIL")
    assert "SLO verdict: FAIL (p95 latency)" in run.output
    assert float(run.stats["Aggregated"]["95%"]) > 25  # the gate read what the report shows


def test_failed_requests_within_the_error_rate_gate_leave_the_run_passing(slow_stack, tmp_path):
    run = LocustRun(slow_stack.url, tmp_path, "-t", "8s", "-u", "8", "-r", "8", "--max-error-rate", "0.5")
    failures = int(run.stats["Aggregated"]["Failure Count"])
    assert failures > 0 and "HTTP 400" in (tmp_path / "loadtest_failures.csv").read_text()
    assert run.returncode == 0, run.output[-3000:]  # locust alone would exit 1 on any failure
    assert "SLO verdict: PASS" in run.output


def test_a_model_that_takes_no_image_gets_arrays_with_top_k_from_the_image_users(slow_stack, tmp_path):
    model = from_metadata(requests.get(slow_stack.url + "/v2/models/slow", timeout=5).json(),
                          requests.get(slow_stack.url + "/v1/models/slow/metadata", timeout=5).json())
    assert model.takes_digits and model.color_mode is None  # no serving.json: the server would want RGB
    body = Payloads.build(model).uploads[0]
    answer = requests.post(slow_stack.url + "/predict", data=body.data, timeout=5,
                           headers={"Content-Type": "application/json"})
    assert answers.check_predict(answer.status_code, answer.content, 1, top_k=3) is None


def test_a_distributed_run_gates_on_the_master_over_every_workers_requests(stack, tmp_path):
    run = LocustRun(stack.url, tmp_path, "--workers", "2", "--master-port", str(free_port()),
                    "-t", "10s", "-u", "12", "-r", "6")
    assert run.returncode == 0, run.output[-3000:]
    assert "2 workers connected" in run.output
    assert run.output.count(f"loading {stack.url}: ") == 2  # each worker read the model; the master not
    assert run.output.count("SLO verdict: PASS") == 1  # the master's; workers apply no gate
    total = run.stats["Aggregated"]
    assert run.gate_line("requests").split()[1] == total["Request Count"]
    assert run.names_of_user_classes_missing() == []


def test_a_distributed_run_fails_when_a_gate_is_broken(stack, tmp_path):
    run = LocustRun(stack.url, tmp_path, "--workers", "2", "--master-port", str(free_port()),
                    "-t", "3s", "-u", "4", "-r", "4", "--min-rps", "100000")
    assert run.returncode == 1, run.output[-3000:]
    assert run.gate_line("throughput").endswith("FAIL")


# -- SLO gates ------------------------------------------------------------------------------------------

HEALTHY = gates.Figures(requests=1000, failures=5, p95_ms=120, p99_ms=400, rps=50.0)


def test_a_run_within_every_threshold_passes():
    results = gates.evaluate(HEALTHY, gates.Thresholds())
    assert gates.passed(results) and gates.verdict(results).endswith("SLO verdict: PASS")


@pytest.mark.parametrize("threshold, gate", [
    ({"max_error_rate": 0.004}, "error rate"),
    ({"max_p95_ms": 100}, "p95 latency"),
    ({"max_p99_ms": 399}, "p99 latency"),
    ({"min_rps": 50.1}, "throughput"),
])
def test_a_run_past_any_one_threshold_fails_on_that_gate_alone(threshold, gate):
    results = gates.evaluate(HEALTHY, gates.Thresholds(**threshold))
    assert not gates.passed(results)
    assert [result.name for result in results if not result.passed] == [gate]
    assert gates.verdict(results).endswith(f"SLO verdict: FAIL ({gate})")


def test_a_run_that_sent_nothing_fails_though_nothing_failed():
    results = gates.evaluate(gates.Figures(0, 0, 0, 0, 0.0), gates.Thresholds(min_rps=0))
    assert [result.name for result in results if not result.passed] == ["requests"]


def test_each_gate_line_shows_value_threshold_and_outcome():
    lines = gates.verdict(gates.evaluate(HEALTHY, gates.Thresholds(max_p95_ms=100))).splitlines()
    assert lines[2].split() == ["error", "rate", "0.50%", "<=", "1.00%", "pass"]
    assert lines[3].split() == ["p95", "latency", "120", "ms", "<=", "100", "ms", "FAIL"]
    assert lines[5].split() == ["throughput", "50.00", "req/s", ">=", "1.00", "req/s", "pass"]


# -- load shapes ----------------------------------------------------------------------------------------

def test_step_rises_in_equal_steps_of_equal_length_to_the_peak():
    stages = shapes.plan("step", users=80, spawn_rate=10, duration=160, steps=4)
    assert [(stage.until, stage.users) for stage in stages] == [(40, 20), (80, 40), (120, 60), (160, 80)]
    assert shapes.tick(stages, 39.9) == (20, 10) and shapes.tick(stages, 40) == (40, 10)


def test_spike_jumps_from_a_fifth_to_the_peak_at_once_and_back():
    stages = shapes.plan("spike", users=50, spawn_rate=5, duration=100)
    assert [shapes.tick(stages, t) for t in (0, 39, 40, 59, 60, 99)] == [
        (10, 5), (10, 5), (50, 50), (50, 50), (10, 50), (10, 50)]


def test_soak_ramps_over_at_least_a_tenth_of_its_hour():
    (stage,) = shapes.plan("soak", users=60, spawn_rate=100, duration=None)
    assert stage.until == 3600 and stage.users / stage.spawn_rate >= 360


def test_every_shape_ends_the_run_when_its_time_is_up():
    for name in shapes.SHAPES:
        stages = shapes.plan(name, users=10, spawn_rate=1, duration=30)
        assert shapes.tick(stages, 29.9) is not None and shapes.tick(stages, 30) is None, name


def test_an_unknown_shape_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="steady, step, spike, soak"):
        shapes.plan("ramp", users=10, spawn_rate=1, duration=30)


# -- the served model and what is sent to it ------------------------------------------------------------

DIGITS_V2 = {"name": "digits", "versions": ["1"], "platform": "keras",
             "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}],
             "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]}
DIGITS_V1 = {"runtime": {"image": {"color_mode": "L", "resize": "box"}}}


def test_the_digits_model_is_read_from_its_metadata():
    model = from_metadata(DIGITS_V2, DIGITS_V1)
    assert (model.name, model.input_name, model.instance_shape, model.classes, model.color_mode) == (
        "digits", "image", (8, 8, 1), 10, "L")
    assert model.takes_digits


def test_a_vector_model_takes_generated_arrays_and_no_images():
    v2 = {"name": "tabular", "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 20]}],
          "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]}
    model = from_metadata(v2)
    assert (model.instance_shape, model.classes, model.color_mode) == ((20,), None, None)
    assert not model.takes_digits
    rows = sample_instances(model, 5, np.random.default_rng(0))
    assert rows.shape == (5, 20) and rows.dtype.kind == "i"
    payloads = Payloads.build(model)
    assert payloads.top_k is None and b"top_k" not in payloads.uploads[0].data


def test_an_rgb_model_with_free_dimensions_gets_rgb_uploads_of_a_fixed_size():
    v2 = {"name": "photos", "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, -1, -1, 3]}],
          "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1, 5]}]}
    model = from_metadata(v2)
    assert model.instance_shape == (8, 8, 3) and model.color_mode == "RGB" and model.classes == 5
    upload = orjson.loads(Payloads.build(model).uploads[0].data)["instances"][0]["b64"]
    assert Image.open(io.BytesIO(base64.b64decode(upload))).mode == "RGB"


def test_digits_instances_are_the_bundled_set_scaled_as_in_training():
    model = from_metadata(DIGITS_V2, DIGITS_V1)
    rows = sample_instances(model, 32, np.random.default_rng(0))
    scaled = (load_digits().images / 16.0).astype("float32")[..., None]
    assert rows.shape == (32, 8, 8, 1)
    assert all(any(np.array_equal(row, known) for known in scaled) for row in rows)


def test_an_upload_is_the_instance_four_times_larger():
    instance = (load_digits().images[0] / 16.0)[..., None]
    image = Image.open(io.BytesIO(base64.b64decode(png_b64(instance, "L"))))
    assert image.size == (32, 32)
    back = np.asarray(image.resize((8, 8), Image.Resampling.BOX), dtype="float32") / 255
    assert np.abs(back - instance.squeeze()).max() <= 1 / 255 / 2 + 1e-6


def test_every_body_says_how_many_instances_it_holds():
    payloads = Payloads.build(from_metadata(DIGITS_V2, DIGITS_V1))
    for body in payloads.one + payloads.batches:
        assert len(orjson.loads(body.data)["instances"]) == body.rows
    for body in payloads.v2:
        (tensor,) = orjson.loads(body.data)["inputs"]
        assert tensor["shape"] == [body.rows, 8, 8, 1] and len(tensor["data"]) == body.rows * 64
    assert {body.rows for body in payloads.batches} <= {2, 4, 8}


# -- what counts as a right answer -------------------------------------------------------------------------

def test_a_bad_request_counts_as_a_success_only_when_refused_as_expected_with_a_json_error():
    assert answers.check_refused(400, b'{"error": "malformed JSON"}', 400) is None
    assert "expected HTTP 400, got 200" in answers.check_refused(200, b'{"predictions": []}', 400)
    assert "expected HTTP 400, got 500" in answers.check_refused(500, b'{"error": "boom"}', 400)
    assert "JSON" in answers.check_refused(400, b"<html>Bad Request</html>", 400)


def test_a_200_with_the_wrong_number_of_predictions_is_a_failure():
    assert answers.check_predict(200, b'{"predictions": [[0.1], [0.9]]}', rows=2) is None
    assert "expected 3 predictions" in answers.check_predict(200, b'{"predictions": [[0.1], [0.9]]}', rows=3)
    assert "top_k" in answers.check_predict(200, b'{"predictions": [[0.1]], "top_k": [[]]}', rows=1, top_k=3)


# -- the knee of a step run -------------------------------------------------------------------------------

def history(*steps: tuple[int, float, float]) -> list[dict]:
    """Stats history rows: six seconds of each (users, req/s, p95) step, as locust writes them."""
    return [{"Name": "Aggregated", "User Count": str(users), "Requests/s": str(rps), "Failures/s": "0",
             "50%": "5", "95%": str(p95), "99%": str(p95 * 2)} for users, rps, p95 in steps for _ in range(6)]


def test_the_knee_is_the_last_step_before_p95_doubles_from_one_step_to_the_next():
    rows = history((20, 38, 10), (40, 76, 12), (60, 110, 18), (80, 120, 45), (100, 121, 90))
    found = knee.steps(rows)
    assert [step.users for step in found] == [20, 40, 60, 80, 100]
    assert knee.knee(found).users == 60


def test_the_knee_is_before_the_first_step_that_fails_requests():
    rows = history((20, 38, 10), (40, 76, 12), (60, 110, 14))
    rows[-1]["Failures/s"] = "2.5"
    assert knee.knee(knee.steps(rows)).users == 40


def test_a_run_that_never_bends_has_no_knee():
    assert knee.knee(knee.steps(history((20, 38, 10), (40, 76, 12)))) is None


def test_the_ramp_between_steps_is_no_step():
    rows = history((20, 38, 10)) + history((25, 40, 10))[:2] + history((40, 76, 12))
    assert [step.users for step in knee.steps(rows)] == [20, 40]
