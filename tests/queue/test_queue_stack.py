"""`keras-serving serve-async` (what `make serve-async` runs): nginx + gunicorn + a local redis-server + a
job worker as one unit. A job submitted through nginx is answered; the stack's /metrics sums the worker's
job metrics with gunicorn's; one SIGTERM stops everything, Redis and the worker included."""
import sys
import time

import requests
from redis import Redis

from bench.harness import ProcessGroup, descendants, free_port, wait_until
from tests.servers import Stack, _env


class AsyncStack(Stack):
    """tests/servers.Stack's ports, run dir and helpers, running serve-async with a Redis port of its own."""

    def __init__(self, tmp, **settings):
        self.port, self.status_port, redis_port = free_port(), free_port(), free_port()
        self.url, self.status_url = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.status_port}"
        self.run_dir, self.access_log = tmp / f"stack-{self.port}", tmp / f"nginx-{self.port}.log"
        env = _env(settings, SERVE_PORT=str(self.port), SERVE_STATUS_PORT=str(self.status_port),
                   SERVE_RUN_DIR=str(self.run_dir), SERVE_QUEUE_BACKEND="redis",
                   SERVE_QUEUE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env.pop("SERVE_BIND", None)
        ProcessGroup.__init__(self, [sys.executable, "-m", "api.cli", "serve-async", "--access-log",
                                     str(self.access_log)], tmp / f"async-{self.port}.log", env, name="serve-async")


def test_serve_async_answers_a_job_through_nginx_and_stops_as_one(store, tmp_path, digits):
    stack = AsyncStack(tmp_path, model_store=store, workers=1, queue_workers=1, warmup_batches="[1]",
                       queue_poll_seconds=0.5)
    redis = None
    try:
        stack.wait_ready(workers=1, timeout=120)
        redis = Redis.from_url(stack.redis_url)
        x, _ = digits
        body = {"instances": x[:2].tolist()}
        deadline = time.monotonic() + 120
        while True:  # the worker loads its model meanwhile: the job waits in Redis for it
            submitted = requests.post(stack.url + "/v1/models/digits:submit", json=body, timeout=10)
            if submitted.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert submitted.status_code == 202, submitted.text
        url = stack.url + submitted.headers["Location"]
        wait_until(lambda: requests.get(url, timeout=5).json()["status"] == "succeeded", 120, "job not answered")
        expected = requests.post(stack.url + "/v1/models/digits:predict", json=body, timeout=10).json()
        got = requests.get(url, timeout=5).json()["result"]
        assert [max(range(10), key=p.__getitem__) for p in got["predictions"]] == \
            [max(range(10), key=p.__getitem__) for p in expected["predictions"]]
        metrics = requests.get(stack.status_url + "/metrics", timeout=10).text
        assert 'keras_serving_jobs_total{model="digits",outcome="succeeded"} 1.0' in metrics
        assert "keras_serving_job_latency_seconds_count" in metrics
        assert 'keras_serving_requests_total' in metrics  # gunicorn's own, in the same scrape
        # nginx gave the keyless submit its request id as Idempotency-Key, so a retry of it by nginx finds
        # that job; a client's own key passes through: the same key twice is one job
        assert len(list(redis.scan_iter(match="*:idem:*"))) == 1
        keyed = [requests.post(stack.url + "/v1/models/digits:submit", json=body, timeout=10,
                               headers={"Idempotency-Key": "nightly-7"}) for _ in range(2)]
        assert [k.status_code for k in keyed] == [202, 202]
        assert keyed[0].headers["Location"] == keyed[1].headers["Location"]
        assert keyed[0].headers["Location"] != submitted.headers["Location"]
        assert len(list(redis.scan_iter(match="*:idem:*"))) == 2
        children = set(descendants(stack.pid))
        assert any("redis-server" in _cmdline(pid) for pid in children)
    finally:
        if redis is not None:
            redis.close()
        stack.stop()
    assert stack.process.returncode == 0, stack.log()[-3000:]
    assert not [pid for pid in children if _cmdline(pid)], "a process of the stack outlived it"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
