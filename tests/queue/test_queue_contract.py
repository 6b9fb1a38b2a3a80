"""One contract, both backends: every test here runs against the real redis-server and against moto's SQS
and S3 (the `backend` fixture), through the Broker interface alone. No model, no TensorFlow."""
import hashlib
import threading
import time

import orjson
import pytest

from api.queue.broker import BrokerUnavailable, IdempotencyConflict, open_broker
from api.queue.jobs import Job, issued_at

BODY = b'{"instances": [[1.0]]}'


def job(ttl: float = 60.0, body: bytes = BODY, version=None) -> Job:
    return Job.create("digits", version, body, ttl)


@pytest.fixture()
def lease(backend) -> float:
    """The shortest lease each backend keeps: Redis counts milliseconds, SQS whole seconds."""
    return 0.5 if backend == "redis" else 1.0


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def take(broker, consumer: str, count: int = 10, wait: float = 0.2, timeout: float = 10.0):
    """Receive until something comes (SQS may answer empty while messages exist), or [] after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = broker.receive(consumer, count, wait)
        if got or time.monotonic() > deadline:
            return got


def test_a_job_goes_from_queued_to_running_to_its_answer(broker_for):
    broker = broker_for()
    submitted = job()
    job_id, created = broker.submit(submitted)
    assert (job_id, created) == (submitted.id, True)
    assert broker.record(job_id).state == "queued"
    assert abs(issued_at(job_id) - submitted.submitted) < 0.002
    [delivery] = take(broker, "w1")
    assert delivery.job == submitted and delivery.deliveries == 1
    [running] = broker.start([delivery])
    assert running.state == "running" and broker.record(job_id).state == "running"
    assert broker.record(job_id).attempts == 1
    answer = b'{"predictions":[[0.5]]}'
    assert broker.complete([(delivery, running.finish("succeeded", 200, answer))]) == [True]
    record = broker.record(job_id)
    assert (record.state, record.status, record.answer) == ("succeeded", 200, answer)
    assert orjson.loads(record.document())["result"] == {"predictions": [[0.5]]}
    assert broker.receive("w2", 10, 0.2) == []


def test_the_first_answer_written_is_the_one_kept(broker_for, lease):
    broker = broker_for(queue_lease_seconds=lease)
    job_id, _ = broker.submit(job())
    [first] = take(broker, "w1")
    [running] = broker.start([first])
    assert broker.store.finish(running.finish("succeeded", 200, b'{"predictions":[1]}'))  # written, ack lost
    time.sleep(lease + 0.1)  # the worker died before acknowledging: the lease runs out
    [again] = take(broker, "w2")
    assert again.job.id == job_id and again.deliveries == 2
    [seen] = broker.start([again])
    assert seen.state == "succeeded"  # the redelivery learns the job already has its answer
    assert broker.complete([(again, seen.finish("succeeded", 200, b'{"predictions":[2]}'))]) == [False]
    assert broker.record(job_id).answer == b'{"predictions":[1]}'
    assert broker.receive("w3", 10, 0.2) == []


def test_a_job_whose_taker_died_is_delivered_again_counting_deliveries(broker_for, lease):
    broker = broker_for(queue_lease_seconds=lease)
    job_id, _ = broker.submit(job())
    counts = []
    for consumer in ("w1", "w2", "w3"):
        [delivery] = take(broker, consumer)
        counts.append(delivery.deliveries)
        assert broker.receive("other", 10, 0.1) == []  # leased: nobody else gets it meanwhile
        time.sleep(lease + 0.05)  # the taker dies: nothing extends, nothing acknowledges
    assert counts == [1, 2, 3]
    [last] = take(broker, "w4")
    broker.dead_letter(last, broker.start([last])[0].finish("failed", 500, b'{"error":"poison"}'), "killed its worker")
    assert broker.record(job_id).state == "failed"
    time.sleep(lease + 0.05)
    assert broker.receive("w5", 10, 0.2) == []
    assert broker.stats().dead == 1


def test_an_extended_lease_keeps_a_long_job_from_every_other_worker(broker_for, lease):
    broker = broker_for(queue_lease_seconds=lease)
    job_id, _ = broker.submit(job())
    [held] = take(broker, "w1")
    others = []
    deadline = time.monotonic() + 3.2 * lease  # over three leases
    while time.monotonic() < deadline:
        assert broker.extend("w1", [held]) == [held]
        others += broker.receive("w2", 10, lease / 3)
    assert others == []
    running = broker.start([held])[0]
    assert broker.complete([(held, running.finish("succeeded", 200, b"{}"))]) == [True]
    time.sleep(lease + 0.05)
    assert broker.receive("w2", 10, 0.2) == []


def test_an_expired_lease_is_not_extended_once_another_worker_took_the_job(broker_for, backend, lease):
    """Redis refuses: the entry's owner is checked. SQS may accept an old receipt handle (AWS documents
    only that the newest one is sure to work), so there both workers may run the job: at least once,
    and the first answer is the one kept (test_the_first_answer_written_is_the_one_kept)."""
    broker = broker_for(queue_lease_seconds=lease)
    broker.submit(job())
    [stale] = take(broker, "w1")
    time.sleep(lease + 0.1)
    [taken] = take(broker, "w2")
    if backend == "redis":
        assert broker.extend("w1", [stale]) == []
    assert broker.extend("w2", [taken]) == [taken]


def test_concurrent_submits_with_one_idempotency_key_make_one_job(broker_for):
    broker = broker_for()
    results, barrier = [], threading.Barrier(10)

    def submit():
        barrier.wait()
        results.append(broker.submit(job(), "order-42", digest(BODY)))

    threads = [threading.Thread(target=submit) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert broker.record(results[0][0]).state == "queued"
    delivered = take(broker, "w1") + broker.receive("w1", 10, 0.5)
    assert [d.job.id for d in delivered] == [results[0][0]]


def test_an_idempotency_key_reused_with_another_body_is_refused(broker_for):
    broker = broker_for()
    first, _ = broker.submit(job(), "key-1", digest(BODY))
    assert broker.submit(job(), "key-1", digest(BODY)) == (first, False)
    other = b'{"instances": [[2.0]]}'
    with pytest.raises(IdempotencyConflict, match=first):
        broker.submit(job(body=other), "key-1", digest(other))
    assert broker.submit(job(body=other), "key-2", digest(other))[1] is True


def test_a_queued_job_past_its_ttl_reads_expired(broker_for):
    broker = broker_for()
    job_id, _ = broker.submit(job(ttl=0.3))
    assert orjson.loads(broker.record(job_id).document())["status"] == "queued"
    time.sleep(0.4)
    document = orjson.loads(broker.record(job_id).document())
    assert document["status"] == "expired" and "time to live" in document["error"]


def test_unknown_jobs_have_no_record(broker_for):
    assert broker_for().record(Job.create("digits", None, BODY, 1).id) is None


def test_queue_stats_count_waiting_in_flight_and_dead(broker_for):
    broker = broker_for(queue_lease_seconds=5)
    for _ in range(3):
        broker.submit(job())
    [first] = take(broker, "w1", count=1)
    stats = broker.stats()
    assert (stats.waiting, stats.in_flight) == (2, 1)
    assert stats.oldest_age is None or 0 <= stats.oldest_age < 30
    broker.dead_letter(first, None, "test")
    assert broker.stats().dead == 1


def test_a_large_body_travels_whole(broker_for):
    broker = broker_for()
    body = orjson.dumps({"instances": [[0.123456789] * 1000] * 40})  # ~500 KB: over an SQS message
    submitted = job(body=body)
    broker.submit(submitted)
    [delivery] = take(broker, "w1")
    assert delivery.job.body == body


def test_an_unreachable_broker_is_broker_unavailable(make_settings, backend):
    from bench.harness import free_port
    dead = f"http://127.0.0.1:{free_port()}"
    settings = make_settings()
    settings = settings.model_copy(update={"queue_redis_url": f"redis://127.0.0.1:{free_port()}/0"}
                                   if backend == "redis" else {"queue_aws_endpoint_url": dead})
    broker = open_broker(settings)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        broker.submit(job())
    assert time.monotonic() - started < 15
