"""KServe's own Python SDK (`kserve` 0.21, `InferenceRESTClient`) against the real stack: v2 health, model
readiness and inference with JSON and binary tensors, and v1 predict.

The SDK reads `{"live": true}` and `{"ready": true}` from the health routes, and sends `model_name` in
every v2 body; it runs from its own virtualenv (`make client-tools`, .venv/clients), since its pins
clash with ours, through tests/clients/kserve_client.py.
"""
import json
import subprocess

import numpy as np
import pytest
import requests

from tests.servers import ROOT

CLIENT_PYTHON = ROOT / ".venv" / "clients" / "bin" / "python"


@pytest.fixture(scope="module")
def seen(stack, digits):
    if not CLIENT_PYTHON.exists():
        pytest.skip("KServe's SDK is not installed: make client-tools (make test installs it)")
    instances = digits[0][:3].tolist()
    done = subprocess.run([str(CLIENT_PYTHON), "tests/clients/kserve_client.py", stack.url, "digits",
                           json.dumps(instances)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = requests.post(stack.url + "/predict", json={"instances": instances}, timeout=10).json()
    return json.loads(done.stdout.strip().splitlines()[-1]), np.array(expected["predictions"])


def test_its_health_checks_see_a_live_ready_server_and_model(seen):
    answers, _ = seen
    assert answers["server_live"] is True
    assert answers["server_ready"] is True
    assert answers["model_ready"] is True


@pytest.mark.parametrize("form", ["json", "binary"])
def test_its_v2_inference_gets_the_predictions(seen, form):
    answers, expected = seen
    output = answers[form]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [3, 10]
    assert output["id"] == "k-1"
    assert np.allclose(output["values"], expected, atol=1e-6)


def test_its_v1_predict_is_tensorflow_servings(seen):
    answers, expected = seen
    assert np.allclose(answers["v1"]["predictions"], expected, atol=1e-6)
