"""Fuzzing the running stack: schemathesis' generated requests, valid and invalid, through nginx.

Every check that can apply, many examples per operation, a fixed seed; then zero 5xx three ways: no
check failed, nginx logged no status >= 500, and the same workers are alive with nothing in their log.
The parsers themselves are fuzzed by Hypothesis in tests/faults/test_parsing_fuzz.py.
"""
import re
import subprocess
import sys
import time

import orjson
import pytest
import requests

EXAMPLES = 100  # per operation and phase: about 90 s on two cores (200 took three minutes of CI's 30)
SEED = 7
# Checks left out, each because it cannot apply to this API:
EXCLUDED = {
    # Only tensors of the model's shape can succeed, and the document cannot know every model's shape.
    "positive_data_acceptance": "schema-valid bodies need not fit the model",
    "ignored_auth": "the API has no authentication to ignore",
    "object_level_authorization": "the API has no users and no per-user objects",
    "use_after_free": "the API creates and deletes no resources",
    "ensure_resource_availability": "the API creates no resources",
}
# Instance-only routes: nginx's public port answers 404 to every method (checked in test_nginx.py), so
# their 405-for-an-undocumented-method check cannot apply there; they are fuzzed on the status port.
INSTANCE_ONLY = ["/health", "/metrics"]


def schemathesis(url: str, cwd, *args: str) -> str:
    """`schemathesis run` with every applicable check; its output, after asserting it found nothing."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", url + "/openapi.json",
               "--checks", "all", "--exclude-checks", ",".join(EXCLUDED), "--mode", "all",
               "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(EXAMPLES),
               "--seed", str(SEED), "--generation-database", "none", "--request-timeout", "30",
               "--max-response-time", "10", "--no-color", *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)
    print(run.stdout[-2500:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    return run.stdout


def options(name: str, values: list[str]) -> list[str]:
    return [arg for value in values for arg in (name, value)]


def figures(output: str) -> dict:
    tested = re.search(r"Tested: (\d+)", output)
    generated = re.search(r"(\d+) generated", output)
    assert tested and generated, output[-3000:]
    return {"operations": int(tested.group(1)), "generated": int(generated.group(1))}


def test_schemathesis_through_nginx_finds_no_5xx_and_no_nonconforming_answer(stack, tmp_path):
    pids = stack.worker_pids()
    logged, log_size = len(stack.access_lines()), len(stack.log())
    started = time.monotonic()

    public = schemathesis(stack.url, tmp_path, *options("--exclude-path", INSTANCE_ONLY))
    status = schemathesis(stack.status_url, tmp_path, *options("--include-path", INSTANCE_ONLY))

    seconds = time.monotonic() - started
    public, status = figures(public), figures(status)
    time.sleep(0.5)  # nginx writes its access line after the answer
    lines = stack.access_lines()[logged:]
    server_errors = [line for line in lines if line["status"] >= 500]
    print(f"schemathesis: {public['operations']} + {status['operations']} operations, "
          f"{public['generated']} + {status['generated']} test cases, {len(lines)} requests through nginx, "
          f"{len(server_errors)} 5xx, {seconds:.0f} s")
    # the OpenAPI document's operations less the two instance-only ones (3 of them asynchronous jobs'; the
    # stack here has no broker, so they answer 404 naming SERVE_QUEUE_BACKEND)
    public_operations = 23
    assert public["operations"] == public_operations and status["operations"] == 2
    assert public["generated"] >= public_operations * EXAMPLES
    assert len(lines) >= public["generated"]
    assert not server_errors, server_errors[:5]
    assert stack.worker_pids() == pids
    log = stack.log()[log_size:]
    for sign in ("Traceback", "unhandled error", "WORKER TIMEOUT", "was sent SIG", "RecursionError"):
        assert sign not in log, sign


# What fuzzing found, replayed through the stack: each was a 500 or a non-conforming answer.
JSON = {"Content-Type": "application/json"}
DIGIT_TENSOR = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}


@pytest.mark.parametrize("body, headers, words", [
    ({"inputs": [DIGIT_TENSOR], "outputs": [{"name": []}]}, JSON, "unknown output []"),
    ({"inputs": [DIGIT_TENSOR], "outputs": [{"name": {"a": 1}}]}, JSON, "unknown output"),
    ({"inputs": [{**DIGIT_TENSOR, "shape": [1] * 65, "data": [0.0]}]}, JSON, "instances of shape"),
    ({"inputs": [DIGIT_TENSOR]}, {**JSON, "Inference-Header-Content-Length": "9" * 5000},
     "Inference-Header-Content-Length"),
], ids=["output-name-list", "output-name-object", "65-dimensions", "5000-digit-length"])
def test_what_fuzzing_found_is_a_400(stack, body, headers, words):
    answer = requests.post(stack.url + "/v2/models/digits/infer", data=orjson.dumps(body), headers=headers,
                           timeout=10)
    assert answer.status_code == 400 and answer.headers["Content-Type"] == "application/json"
    assert words in answer.json()["error"]


@pytest.mark.parametrize("path, allowed", [
    ("/predict", "POST, OPTIONS"), ("/v1/models/digits:predict", "POST, OPTIONS"),
    ("/v2/models/digits/infer", "POST, OPTIONS"), ("/v1/models/digits", "GET, HEAD, OPTIONS"),
    ("/ready", "GET, HEAD, OPTIONS")])
def test_trace_which_nginx_refuses_itself_lists_the_allowed_methods(stack, path, allowed):
    """nginx answers TRACE before any location: 405 with Allow, as the app answers any other method."""
    answer = requests.request("TRACE", stack.url + path, timeout=10)
    assert answer.status_code == 405 and answer.headers["Allow"] == allowed
    assert answer.json() == {"error": f"method not allowed: TRACE; allowed: {allowed}"}
    other = requests.request("QUERY", stack.url + path, timeout=10)  # reaches the app
    assert other.status_code == 405 and set(other.headers["Allow"].split(", ")) == set(allowed.split(", "))
