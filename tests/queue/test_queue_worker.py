"""The worker loop in-process, on both backends, over the model the app serves (digits, two versions):
answers equal `:predict`'s, many jobs share one compiled call, and each kind of job that must not run
(bad input, expired, poison, unreadable, already answered) ends as it should."""
import time

import orjson
import pytest

from api.http.app import registry_of
from api.queue.jobs import Job
from api.queue.worker import Worker

MAX_DELIVERIES = 2


@pytest.fixture()
def setup(broker_for, app):
    """(broker, worker): the worker serves the app's registry; its lease keeper runs only in `run()`."""
    broker = broker_for(queue_lease_seconds=1, queue_max_deliveries=MAX_DELIVERIES, queue_poll_seconds=1)
    return broker, Worker(broker, registry_of(app), broker.settings, consumer="in-process")


def submit(broker, body: dict | bytes, version=None, ttl: float = 60.0) -> str:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return broker.submit(Job.create("digits", version, data, ttl))[0]


def step_until(worker, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the worker did not get to the job"
        worker.step()


def same_answer(got, expected, tolerance: float = 1e-5) -> bool:
    """Equal but for float rounding: the batch a row is computed in may differ from :predict's."""
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and \
            all(same_answer(got[k], expected[k], tolerance) for k in expected)
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and \
            all(same_answer(g, e, tolerance) for g, e in zip(got, expected))
    if isinstance(expected, float):
        return isinstance(got, (int, float)) and abs(got - expected) <= tolerance * max(1.0, abs(expected))
    return got == expected


def predict(client, body: dict, version=None):
    path = f"/v1/models/digits{f'/versions/{version}' if version else ''}:predict"
    answer = client.post(path, json=body)
    return answer.status_code, answer.get_json()


def test_jobs_share_one_compiled_call_and_answer_as_predict_does(setup, client, digits):
    broker, worker = setup
    x, _ = digits
    bodies = [({"instances": x[i:i + 1 + i % 3].tolist(), **({"top_k": 2} if i % 2 else {})}, 1 + i % 2)
              for i in range(12)]
    ids = [submit(broker, body, version) for body, version in bodies]
    stats = registry_of(client.application).get("digits", 1).batcher.stats, \
        registry_of(client.application).get("digits", 2).batcher.stats
    calls_before = [s.batches for s in stats]
    step_until(worker, lambda: all(broker.record(i).state == "succeeded" for i in ids))
    assert [s.batches - before for s, before in zip(stats, calls_before)] == [1, 1]  # one call per version
    for job_id, (body, version) in zip(ids, bodies):
        record = broker.record(job_id)
        status, expected = predict(client, body, version)
        assert status == 200 and record.status == 200 and record.attempts == 1
        assert same_answer(orjson.loads(record.answer), expected)


@pytest.mark.parametrize("body", [
    {"instances": [[1, 2, 3]]},
    {"instances": [[[["a"]] * 8] * 8]},
    {"inputs": [[0.0] * 8], "instances": [[0.0]]},
    b"{not json",
], ids=["wrong-shape", "string", "both-keys", "not-json"])
def test_bad_input_fails_at_once_with_the_apis_error(setup, client, body):
    broker, worker = setup
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    job_id = submit(broker, raw)
    step_until(worker, lambda: broker.record(job_id).state == "failed")
    record = broker.record(job_id)
    answer = client.post("/v1/models/digits:predict", data=raw, content_type="application/json")
    assert (record.status, orjson.loads(record.answer)) == (answer.status_code, answer.get_json())
    assert 400 <= record.status < 500 and record.attempts == 1
    assert broker.stats().in_flight == 0  # acknowledged: never retried


def test_a_job_past_its_ttl_is_expired_never_run(setup, app):
    broker, worker = setup
    stats = registry_of(app).get("digits").batcher.stats
    job_id = submit(broker, {"instances": [[[[0.0]] * 8] * 8]}, ttl=0.01)
    time.sleep(0.05)
    before = stats.batches
    step_until(worker, lambda: broker.record(job_id).state == "expired")
    assert stats.batches == before
    document = orjson.loads(broker.record(job_id).document())
    assert document["status"] == "expired" and document["status_code"] == 410


def test_a_job_delivered_too_often_is_dead_lettered_and_failed(setup):
    broker, worker = setup
    job_id = submit(broker, {"instances": [[[[0.0]] * 8] * 8]})
    for _ in range(MAX_DELIVERIES):  # each taker dies holding it
        assert broker.receive("doomed", 10, 1)
        time.sleep(1.05)
    step_until(worker, lambda: broker.record(job_id).state == "failed")
    assert "dead-lettered after 2 deliveries" in orjson.loads(broker.record(job_id).answer)["error"]
    assert broker.stats().dead == 1 and broker.receive("after", 10, 0.2) == []


def test_an_unreadable_message_is_dead_lettered_at_once(setup):
    broker, worker = setup
    broker.queue.send(Job("0" * 32, "digits", None, b"{}", time.time(), time.time() + 60))  # a readable one
    if broker.settings.queue_backend == "redis":
        broker.queue.k.redis.xadd(broker.queue.k.stream, {"message": b'{"v": 99}'})
    else:
        broker.queue.sqs.send_message(QueueUrl=broker.queue.url, MessageBody='{"v": 99}')
    step_until(worker, lambda: broker.stats().dead == 1)
    assert "format 99" in str(broker.queue.dead_letters())


def test_a_job_redelivered_after_its_answer_was_written_is_acknowledged_not_run(setup, app):
    broker, worker = setup
    job_id = submit(broker, {"instances": [[[[0.0]] * 8] * 8]})
    [delivery] = broker.receive("crashed", 10, 1)
    record = broker.start([delivery])[0]
    broker.store.finish(record.finish("succeeded", 200, b'{"predictions": "first"}'))  # then the worker died
    time.sleep(1.05)
    stats = registry_of(app).get("digits").batcher.stats
    before = stats.batches
    assert worker.step() == 1
    assert stats.batches == before and broker.stats().in_flight == 0
    assert broker.record(job_id).answer == b'{"predictions": "first"}'
