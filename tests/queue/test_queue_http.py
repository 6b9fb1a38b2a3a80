"""The job routes in-process (the app over the session's loaded registry, a broker configured): submit
answers 202 after `:predict`'s checks, fetch answers each state, 410 once expired, 503 while the broker
is down, and one Idempotency-Key makes one job however many submit it at once."""
import threading
import time

import orjson
import pytest

from api.http.app import create_app, registry_of
from api.queue.broker import open_broker
from api.queue.worker import Worker
from bench.harness import free_port
from tests.queue.test_queue_worker import same_answer, step_until

DIGIT = [[[0.0]] * 8] * 8


@pytest.fixture()
def queued_app(make_settings, app):
    """(Flask app with jobs on, its broker, a worker on the same registry)."""
    settings = make_settings(queue_lease_seconds=2, queue_result_ttl=2, queue_poll_seconds=1)
    jobs_app = create_app(settings, registry=registry_of(app))
    broker = open_broker(settings)
    yield jobs_app, broker, Worker(broker, registry_of(app), settings, consumer="http-test")
    broker.close()


def test_a_submitted_job_answers_what_predict_answers(queued_app, digits):
    jobs_app, broker, worker = queued_app
    client = jobs_app.test_client()
    body = {"instances": digits[0][:3].tolist(), "top_k": 2}
    submitted = client.post("/v1/models/digits/versions/2:submit", json=body)
    assert submitted.status_code == 202, submitted.get_json()
    job_id, url = submitted.get_json()["job_id"], submitted.get_json()["status_url"]
    assert submitted.headers["Location"] == url == f"/v1/jobs/{job_id}"
    queued = client.get(url)
    assert queued.status_code == 200 and queued.get_json()["status"] == "queued" and queued.headers["Retry-After"]
    step_until(worker, lambda: client.get(url).get_json()["status"] == "succeeded")
    done = client.get(url).get_json()
    expected = client.post("/v1/models/digits/versions/2:predict", json=body).get_json()
    assert same_answer(done["result"], expected)
    assert done["version"] == 2 and done["attempts"] == 1 and done["finished_at"] >= done["submitted_at"]


BAD = [
    ("/v1/models/digits:submit", b'{"instances": [[1, 2]]}', "application/json"),
    ("/v1/models/digits:submit", b'{"instances": [], "top_k": 1}', "application/json"),
    ("/v1/models/digits:submit", b'{"instance": [[0]]}', "application/json"),
    ("/v1/models/digits:submit", b'{"instances": [[NaN]]}', "application/json"),
    ("/v1/models/digits:submit", b"instances=1", "application/x-www-form-urlencoded"),
    ("/v1/models/other:submit", orjson.dumps({"instances": [DIGIT]}), "application/json"),
    ("/v1/models/digits/versions/9:submit", orjson.dumps({"instances": [DIGIT]}), "application/json"),
]


@pytest.mark.parametrize("path, body, content_type", BAD,
                         ids=["shape", "empty", "unknown-key", "nan", "form", "model", "version"])
def test_bad_input_is_a_4xx_at_submit_with_predicts_error(queued_app, path, body, content_type):
    jobs_app, broker, _ = queued_app
    client = jobs_app.test_client()
    answer = client.post(path, data=body, content_type=content_type)
    expected = client.post(path.replace(":submit", ":predict"), data=body, content_type=content_type)
    assert 400 <= answer.status_code < 500
    assert (answer.status_code, answer.get_json()) == (expected.status_code, expected.get_json())
    assert broker.stats().waiting == 0


def test_a_body_over_the_limit_is_413_at_submit(queued_app):
    jobs_app, _, _ = queued_app
    limit = jobs_app.extensions["settings"].max_body_bytes
    answer = jobs_app.test_client().post("/v1/models/digits:submit", data=b" " * (limit + 1),
                                         content_type="application/json")
    assert answer.status_code == 413


def test_concurrent_submits_with_one_idempotency_key_give_one_job(queued_app):
    jobs_app, broker, _ = queued_app
    answers, barrier = [], threading.Barrier(8)

    def submit():
        barrier.wait()
        answers.append(jobs_app.test_client().post("/v1/models/digits:submit", json={"instances": [DIGIT]},
                                                   headers={"Idempotency-Key": "upload-7"}))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {202}
    assert len({a.get_json()["job_id"] for a in answers}) == 1
    assert broker.stats().waiting == 1
    client = jobs_app.test_client()
    other = client.post("/v1/models/digits:submit", json={"instances": [DIGIT, DIGIT]},
                        headers={"Idempotency-Key": "upload-7"})
    assert other.status_code == 422 and "different request body" in other.get_json()["error"]
    bad_key = client.post("/v1/models/digits:submit", json={"instances": [DIGIT]},
                          headers={"Idempotency-Key": "has space"})
    assert bad_key.status_code == 400 and "Idempotency-Key" in bad_key.get_json()["error"]


def test_an_answer_past_its_ttl_is_410_and_an_unknown_job_404(queued_app):
    jobs_app, _, worker = queued_app
    client = jobs_app.test_client()
    url = client.post("/v1/models/digits:submit", json={"instances": [DIGIT]}).get_json()["status_url"]
    step_until(worker, lambda: client.get(url).get_json()["status"] == "succeeded")
    time.sleep(2.1)  # queue_result_ttl = 2 s
    gone = client.get(url)
    assert gone.status_code == 410 and "expired" in gone.get_json()["error"]
    assert client.get("/v1/jobs/" + "0" * 32).status_code == 410  # issued long ago: whatever it was, gone
    never = client.get(f"/v1/jobs/{int(time.time() * 1000):012x}{'ab' * 10}")
    assert never.status_code == 404
    assert client.get("/v1/jobs/not-a-job").status_code == 404


def test_a_broker_that_is_down_is_503_with_retry_after(make_settings, app, backend):
    dead = {"queue_redis_url": f"redis://127.0.0.1:{free_port()}/0"} if backend == "redis" else \
        {"queue_aws_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    client = create_app(make_settings(**dead), registry=registry_of(app)).test_client()
    answer = client.post("/v1/models/digits:submit", json={"instances": [DIGIT]})
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert "queue is unavailable" in answer.get_json()["error"]
    assert client.get("/v1/jobs/" + "0" * 32).status_code == 503


def test_jobs_are_404_on_a_server_without_a_broker(client):
    answer = client.post("/v1/models/digits:submit", json={"instances": [DIGIT]})
    assert answer.status_code == 404 and "SERVE_QUEUE_BACKEND" in answer.get_json()["error"]
    assert client.get("/v1/jobs/" + "0" * 32).status_code == 404
