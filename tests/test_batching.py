"""Dynamic batching: concurrent requests share compiled calls, and each gets exactly its own answer.

The batcher is pure Python; most tests drive it with a fake model that doubles its input and records
every call, so what was batched, padded, split or dropped is visible. The last tests run the real
model in a real gunicorn.
"""
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from api.batching import Batcher
from api.http.client import socket_closed
from api.settings import BatchPolicy
from api.errors import DeadlineExceeded, InferenceFailed, Unavailable


class FakeModel:
    """Doubles its input; `gate` holds calls back so tests can pile requests up behind one."""

    def __init__(self, seconds: float = 0.0, poison: float | None = None):
        self.calls: list[int] = []
        self.seconds, self.poison = seconds, poison
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        self.calls.append(len(batch))
        time.sleep(self.seconds)
        if self.poison is not None and (batch == self.poison).any():
            raise ValueError("poisoned row")
        return {"doubled": batch * 2, "sum": batch.reshape(len(batch), -1).sum(axis=1)}


def rows(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


def later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def concurrently(batcher: Batcher, requests_: list[np.ndarray], deadline: float | None = None):
    with ThreadPoolExecutor(len(requests_)) as pool:
        futures = [pool.submit(batcher.run, r, deadline or later()) for r in requests_]
        return [f.result() for f in futures]


def hold(model: FakeModel, batcher: Batcher, batch=None) -> threading.Thread:
    """Occupy the inference thread with one request (one row) so that the next ones queue up behind it."""
    model.gate.clear()
    model.entered.clear()
    blocker = threading.Thread(target=batcher.run, args=(rows(1, 1000) if batch is None else batch, later()))
    blocker.start()
    assert model.entered.wait(5)
    return blocker


def answers_while_held(model, batcher: Batcher, batches: list, queued: int, first=None) -> list[dict]:
    """Send `batches` at once while the model is held on a first request, release it once `queued`
    instances wait (so they must share calls), and return each request's answer, in order."""
    blocker = hold(model, batcher, first)
    with ThreadPoolExecutor(len(batches)) as pool:
        futures = [pool.submit(batcher.run, batch, later()) for batch in batches]
        while batcher.queued < queued:
            time.sleep(0.001)
        model.gate.set()
        answers = [f.result() for f in futures]
    blocker.join()
    return answers


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows():
    model = FakeModel(seconds=0.01)
    batcher = Batcher(model, BatchPolicy(max_batch_size=16))
    sent = [rows(1, start=i) for i in range(40)]
    answers = concurrently(batcher, sent)
    for request, answer in zip(sent, answers):
        np.testing.assert_array_equal(answer["doubled"], request * 2)
        np.testing.assert_array_equal(answer["sum"], request[:, 0])
    assert len(model.calls) < 40, model.calls
    assert max(model.calls) > 1
    assert batcher.stats.requests == 40 and batcher.stats.instances == 40


def test_requests_queued_behind_a_running_call_form_one_batch():
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=64))
    answers = answers_while_held(model, batcher, [rows(2, 10 * i) for i in range(8)], queued=16)
    assert model.calls == [1, 16]
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer["doubled"], rows(2, 10 * i) * 2)


def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order():
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=4))
    answer = batcher.run(rows(10), later())
    np.testing.assert_array_equal(answer["doubled"], rows(10) * 2)
    assert model.calls == [4, 4, 2]


def test_batches_are_padded_to_an_allowed_size_and_the_padding_never_returned():
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=8, allowed_batch_sizes=(1, 4, 8)))
    answer = batcher.run(rows(3), later())
    assert model.calls == [4]
    np.testing.assert_array_equal(answer["doubled"], rows(3) * 2)
    batcher.run(rows(5), later())
    assert model.calls == [4, 8]


def test_batch_timeout_waits_for_requests_that_trickle_in():
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=8, batch_timeout=0.2))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.run, rows(1), later())
        time.sleep(0.05)
        second = pool.submit(batcher.run, rows(1, 1), later())
        first.result(), second.result()
    assert model.calls == [2]


def test_without_a_timeout_a_lone_request_does_not_wait():
    batcher = Batcher(FakeModel(), BatchPolicy(max_batch_size=8, batch_timeout=0.0))
    started = time.monotonic()
    batcher.run(rows(1), later())
    assert time.monotonic() - started < 0.1


def closed_loop(batcher: Batcher, clients: int, rounds: int, think: float = 0.01) -> None:
    """`clients` threads that each send their next request `think` s after their answer (as a load
    generator or a synchronous caller does); the first starts alone, so the others queue behind it."""
    def client(i: int) -> None:
        for _ in range(rounds):
            batcher.run(rows(1, i), later())
            time.sleep(think)
    with ThreadPoolExecutor(clients) as pool:
        first = pool.submit(client, 0)
        time.sleep(0.02)  # inside the first call: the others form a second group
        for f in [first] + [pool.submit(client, i) for i in range(1, clients)]:
            f.result()


def test_without_rejoin_closed_loop_clients_split_into_alternating_batches():
    model = FakeModel(seconds=0.1)
    closed_loop(Batcher(model, BatchPolicy(max_batch_size=16)), clients=4, rounds=4)
    assert max(model.calls) < 4, model.calls  # halves that never meet: what batch_rejoin_fraction mends


def test_rejoin_waits_for_the_requests_just_answered_and_batches_fill():
    model = FakeModel(seconds=0.1)
    closed_loop(Batcher(model, BatchPolicy(max_batch_size=16, rejoin_fraction=0.3)), clients=4, rounds=4)
    # the lone first call, then the first client waited for: every batch holds all four clients
    assert model.calls == [1, 4, 4, 4, 3], model.calls


def test_rejoin_never_delays_a_lone_client():
    model = FakeModel(seconds=0.05)
    batcher = Batcher(model, BatchPolicy(max_batch_size=16, rejoin_fraction=1.0))
    started = time.monotonic()
    for _ in range(4):
        batcher.run(rows(1), later())
    assert time.monotonic() - started < 4 * 0.05 + 0.1  # a wait would cost 0.05 s a request


def test_rejoin_waits_at_most_its_fraction_of_the_call_for_clients_that_do_not_come_back():
    model = FakeModel(seconds=0.1)
    batcher = Batcher(model, BatchPolicy(max_batch_size=16, rejoin_fraction=0.5))
    blocker = hold(model, batcher)  # answered, then never sends again
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(batcher.run, rows(1), later())
        while batcher.queued < 1:
            time.sleep(0.001)
        model.gate.set()
        started = time.monotonic()
        waiting.result()
    blocker.join()
    # the second call starts after at most 0.5 x 0.1 s of waiting for the first's client, then takes 0.1 s
    assert 0.13 < time.monotonic() - started < 0.3
    assert model.calls == [1, 1]


def test_a_full_queue_refuses_at_once_with_retry_after():
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=4, max_enqueued_batches=2))
    blocker = hold(model, batcher)
    with ThreadPoolExecutor(1) as pool:
        queued = pool.submit(batcher.run, rows(8), later())
        while batcher.queued < 8:
            time.sleep(0.001)
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            batcher.run(rows(1), later())
        assert time.monotonic() - started < 0.05
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
        assert "overloaded" in refused.value.message
        model.gate.set()
        queued.result()
    blocker.join()
    assert batcher.stats.refused == 1


def test_a_request_that_would_wait_past_its_queue_limit_is_refused_at_once():
    """Calls take ~50 ms per instance: behind 8 queued instances a request would wait ~0.4 s, past its
    0.2 s limit, so it gets 503 at once; those that got in (1 s limits) but waited past them are refused
    uninferred."""
    model = FakeModel(seconds=0.05)
    batcher = Batcher(model, BatchPolicy(max_batch_size=1))
    batcher.run(rows(1), later())  # the call time per instance, learnt from a batch
    blocker = hold(model, batcher)
    with ThreadPoolExecutor(8) as pool:
        queued = [pool.submit(batcher.run, rows(1, i), later(), None, time.monotonic() + 1.0) for i in range(8)]
        while batcher.queued < 8:
            time.sleep(0.001)
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            batcher.run(rows(1), later(), None, time.monotonic() + 0.2)
        assert time.monotonic() - started < 0.05 and "would wait" in refused.value.message
        time.sleep(1.05)
        model.gate.set()
        outcomes = [f.exception() for f in queued]
    blocker.join()
    assert all(isinstance(e, Unavailable) and e.status == 503 for e in outcomes)
    assert 1000 not in model.calls[2:] and len(model.calls) == 2  # the learning call and the blocker only
    assert batcher.stats.refused == 9


def test_the_call_running_counts_in_the_wait_so_a_request_it_would_keep_past_its_limit_stays_unread():
    """A batch of a slow model (0.4 s) has just started and nothing is queued: a request that must start
    within 0.1 s is not let in to have its body read (the call alone outlasts that) and is refused when
    the 0.1 s pass; one with 1 s is let in at once."""
    model = FakeModel(seconds=0.4)
    batcher = Batcher(model, BatchPolicy(max_batch_size=1))
    batcher.run(rows(1), later())  # the call time per instance, learnt from a batch
    model.entered.clear()
    running = threading.Thread(target=batcher.run, args=(rows(1, 1), later()))
    running.start()
    assert model.entered.wait(5)
    started = time.monotonic()
    assert not batcher.wait_for_room(time.monotonic() + 0.1)
    assert 0.09 < time.monotonic() - started < 0.3
    assert batcher.wait_for_room(time.monotonic() + 1.0)
    assert time.monotonic() - started < 0.3  # at once: the call ends well within 1 s
    running.join()


def test_a_request_past_its_deadline_gets_504_and_is_never_inferred():
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=4))
    blocker = hold(model, batcher)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as late:
        batcher.run(rows(1, 500), time.monotonic() + 0.2)
    assert 0.2 <= time.monotonic() - started < 0.5
    assert late.value.status == 504
    model.gate.set()
    blocker.join()
    batcher.run(rows(1), later())  # the thread moved on: the late request was skipped, not run
    assert model.calls == [1, 1]
    assert batcher.stats.dropped == 1


def test_a_request_whose_client_hung_up_is_dropped_before_inference():
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=4))
    blocker = hold(model, batcher)
    with ThreadPoolExecutor(2) as pool:
        gone = pool.submit(batcher.run, rows(1, 7), later(), lambda: True)
        alive = pool.submit(batcher.run, rows(1, 8), later(), lambda: False)
        while batcher.queued < 2:
            time.sleep(0.001)
        model.gate.set()
        with pytest.raises(DeadlineExceeded, match="client closed"):
            gone.result()
        np.testing.assert_array_equal(alive.result()["doubled"], [[16.0]])
    blocker.join()
    assert model.calls == [1, 1]


def test_a_failing_request_never_fails_its_batch_mates():
    model = FakeModel(poison=-1.0)
    batcher = Batcher(model, BatchPolicy(max_batch_size=64))
    blocker = hold(model, batcher)
    with ThreadPoolExecutor(4) as pool:
        good = [pool.submit(batcher.run, rows(1, i), later()) for i in range(3)]
        bad = pool.submit(batcher.run, np.array([[-1.0]], np.float32), later())
        while batcher.queued < 4:
            time.sleep(0.001)
        model.gate.set()
        for i, future in enumerate(good):
            np.testing.assert_array_equal(future.result()["doubled"], rows(1, i) * 2)
        with pytest.raises(InferenceFailed) as failed:
            bad.result()
    blocker.join()
    assert failed.value.status == 500
    assert "poisoned" not in failed.value.message  # the trace is logged, never sent


def test_an_api_error_from_the_model_call_reaches_its_request_unchanged():
    """The runtime raises the model refusing the values (TensorFlow's InvalidArgumentError) as the
    client's fault, a 400 (api/runtime.py); the batcher passes it on as it is."""
    def refuses(batch):
        raise InferenceFailed("the model refused this input: Input to reshape is a tensor with 3 values",
                              status=400)

    with pytest.raises(InferenceFailed) as refused:
        Batcher(refuses, BatchPolicy()).run(rows(1), later())
    assert refused.value.status == 400
    assert refused.value.message.endswith("Input to reshape is a tensor with 3 values")


def test_allowed_batch_sizes_must_end_with_the_max_batch_size():
    with pytest.raises(ValueError, match="end with max_batch_size"):
        BatchPolicy(max_batch_size=32, allowed_batch_sizes=(1, 8))
    with pytest.raises(ValueError, match="increase"):
        BatchPolicy(max_batch_size=8, allowed_batch_sizes=(4, 1, 8))
    assert BatchPolicy(max_batch_size=8, allowed_batch_sizes=(2, 8)).padded(3) == 8


def test_a_hung_up_peer_is_told_apart_from_a_live_or_pipelining_one():
    ours, theirs = socket.socketpair()
    gone = socket_closed(ours)
    assert not gone()
    theirs.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request: alive, and the bytes stay unread
    assert not gone()
    assert ours.recv(100).startswith(b"GET /next")
    theirs.close()
    assert gone()
    ours.close()
    assert socket_closed(None) is None


# -- several inputs: a request's batch is a dict of arrays ---------------------------------------------

class DictModel(FakeModel):
    """A two-input stand-in: `a` [n, 2] and `b` [n, 3] in, `total` (each row's sum over both) and `a2`
    (`a` doubled) out; records every call's batch (checking its inputs have one row count)."""

    def __init__(self, poison: float | None = None):
        super().__init__(poison=poison)
        self.batches: list[dict[str, np.ndarray]] = []

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        assert set(batch) == {"a", "b"} and len(batch["a"]) == len(batch["b"])
        self.calls.append(len(batch["a"]))
        self.batches.append({name: value.copy() for name, value in batch.items()})
        if self.poison is not None and (batch["a"] == self.poison).any():
            raise ValueError("poisoned row")
        return {"total": batch["a"].sum(axis=1) + batch["b"].sum(axis=1), "a2": batch["a"] * 2}


def pair(n: int, start: int = 0) -> dict[str, np.ndarray]:
    """n instances of two inputs whose rows tell them apart: a = [i, i], b = [-i, -i, 1]."""
    i = np.arange(start, start + n, dtype=np.float32)[:, None]
    return {"a": np.hstack([i, i]), "b": np.hstack([-i, -i, np.ones_like(i)])}


def test_dict_batches_share_calls_and_each_request_gets_its_own_rows():
    model = DictModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=64))
    answers = answers_while_held(model, batcher, [pair(i + 1, 100 * i) for i in range(6)], queued=21,
                                 first=pair(1, 1000))
    assert model.calls == [1, 21]
    joined = model.batches[1]
    assert np.array_equal(joined["a"][:, 0], -joined["b"][:, 0])  # rows of a and b stayed together
    for i, answer in enumerate(answers):
        sent = pair(i + 1, 100 * i)
        np.testing.assert_array_equal(answer["a2"], sent["a"] * 2)
        np.testing.assert_array_equal(answer["total"], np.ones(i + 1))


def test_a_dict_request_larger_than_a_batch_is_split_per_input_and_reassembled():
    model = DictModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=4))
    sent = pair(10)
    answer = batcher.run(sent, later())
    assert model.calls == [4, 4, 2]
    for call, start in zip(model.batches, (0, 4, 8)):
        np.testing.assert_array_equal(call["a"], sent["a"][start:start + 4])
        np.testing.assert_array_equal(call["b"], sent["b"][start:start + 4])
    np.testing.assert_array_equal(answer["a2"], sent["a"] * 2)
    np.testing.assert_array_equal(answer["total"], np.ones(10))


def test_dict_batches_are_padded_per_input_and_the_padding_never_returned():
    model = DictModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=8, allowed_batch_sizes=(1, 4, 8)))
    sent = pair(3, 5)
    answer = batcher.run(sent, later())
    assert model.calls == [4]
    (call,) = model.batches
    assert call["a"].shape == (4, 2) and call["b"].shape == (4, 3)
    assert not call["a"][3].any() and not call["b"][3].any()  # zeros, in each input's own shape and dtype
    assert call["b"].dtype == np.float32
    np.testing.assert_array_equal(answer["a2"], sent["a"] * 2)
    assert answer["total"].shape == (3,)


def test_a_failing_dict_request_never_fails_its_batch_mates():
    model = DictModel(poison=-7.0)
    batcher = Batcher(model, BatchPolicy(max_batch_size=64))
    blocker = hold(model, batcher, pair(1, 1000))
    bad = pair(2)
    bad["a"][1] = -7.0
    with ThreadPoolExecutor(3) as pool:
        good = [pool.submit(batcher.run, pair(2, 10 * (i + 1)), later()) for i in range(2)]
        failing = pool.submit(batcher.run, bad, later())
        while batcher.queued < 6:
            time.sleep(0.001)
        model.gate.set()
        for i, future in enumerate(good):
            np.testing.assert_array_equal(future.result()["a2"], pair(2, 10 * (i + 1))["a"] * 2)
        with pytest.raises(InferenceFailed):
            failing.result()
    blocker.join()
    assert model.calls[1:] == [6, 2, 2, 2]  # the batch, then each request alone


def test_a_dict_whose_inputs_differ_in_length_is_refused():
    batcher = Batcher(DictModel(), BatchPolicy())
    with pytest.raises(ValueError, match="same number of instances"):
        batcher.run({"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 3), np.float32)}, later())
    with pytest.raises(ValueError, match="one or more inputs"):
        batcher.run({}, later())


def test_batch_mates_that_differ_in_an_open_dimension_each_run_alone():
    """A model with a None dimension takes any width, but one per call: requests of two widths queued
    together cannot be joined, so each runs alone and gets its own answer (no 500, no lost request)."""
    model = FakeModel()
    batcher = Batcher(model, BatchPolicy(max_batch_size=64))
    blocker = hold(model, batcher)
    narrow, wide = np.ones((2, 1), np.float32), np.ones((1, 3), np.float32)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(batcher.run, narrow, later()), pool.submit(batcher.run, wide, later())
        while batcher.queued < 3:
            time.sleep(0.001)
        model.gate.set()
        np.testing.assert_array_equal(first.result()["doubled"], narrow * 2)
        np.testing.assert_array_equal(second.result()["doubled"], wide * 2)
    blocker.join()
    assert sorted(model.calls[1:]) == [1, 2]


# -- the real model, in a real gunicorn -----------------------------------------------------------

def test_concurrent_requests_over_http_each_get_their_own_digit(server, digits):
    images, labels = digits
    picks = list(range(64))

    def classify(i):
        answer = requests.post(server.url + "/predict", json={"instances": images[i:i + 1].tolist()}, timeout=30)
        assert answer.status_code == 200, answer.text
        return int(np.argmax(answer.json()["predictions"][0]))

    with ThreadPoolExecutor(32) as pool:
        predicted = list(pool.map(classify, picks * 4))
    # 98% accurate on the held-out split: answers mixed up between requests would drop to ~10%.
    expected = [int(labels[i]) for i in picks * 4]
    agreement = np.mean(np.array(predicted) == np.array(expected))
    assert agreement > 0.95, agreement


def _batching_by_worker(server) -> dict[int, dict]:
    seen = {}
    for _ in range(30):
        runtime = requests.get(server.url + "/v1/models/digits/metadata", timeout=10).json()["runtime"]
        seen[runtime["worker_pid"]] = runtime
    return seen


def test_workers_report_their_batching_and_the_function_never_retraces(server, digits):
    images, _ = digits
    body = {"instances": images[:3].tolist()}
    before = _batching_by_worker(server)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: requests.post(server.url + "/predict", json=body, timeout=30), range(300)))
    after = _batching_by_worker(server)
    for runtime in after.values():
        assert runtime["batching"]["max_batch_size"] == 64 and runtime["batching"]["batch_timeout_micros"] == 0
        assert runtime["traces"] == 1
    both = before.keys() & after.keys()
    instances, batches, served = (sum(after[p]["batching"][key] - before[p]["batching"][key] for p in both)
                                  for key in ("instances", "batches", "requests"))
    # Every request counted with its 3 instances, and calls take whole requests (one or several: how
    # many overlap depends on how fast 16 Python clients send; in-process tests above force overlap).
    assert served and instances == 3 * served and 0 < batches <= served
