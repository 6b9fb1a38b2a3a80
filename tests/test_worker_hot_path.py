"""What a gevent worker saves per request (docs/performance.md, "Less CPU per request in the worker"),
each shown to keep its behaviour: access lines, gunicorn's settings, the Date header, the metrics' pid.

The event-loop cases run in a fresh, monkey-patched interpreter, as a gunicorn gevent worker is."""
import email.utils
import json
import os
import subprocess
import sys
import time

from gunicorn.config import Config

from api.process import worker
from tests.servers import ROOT


def _python(script: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=True)


ACCESS_SETUP = """
from gevent import monkey; monkey.patch_all()
import logging, sys, gevent
from api.logs import JsonFormatter
from api.http.access import AccessLine, access_fields

class Counted:
    writes = []
    def write(self, text): self.writes.append(text)
    def flush(self): pass

stream = Counted()
handler = logging.StreamHandler(stream)
handler.setFormatter(JsonFormatter())
logger = logging.getLogger("api.access")
logger.addHandler(handler); logger.setLevel("INFO"); logger.propagate = False
line = AccessLine()
"""


def test_the_access_lines_of_one_loop_turn_go_out_in_one_write():
    out = _python(ACCESS_SETUP + """
for n in range(5):
    line.write(access_fields(f"id-{n}", "POST", "/predict", "/predict", 200, 0.001))
held = len(stream.writes)
gevent.sleep(0)  # the loop's turn ends: its callbacks run
print(held, len(stream.writes), stream.writes[0] if stream.writes else "")
""").stdout.split(" ", 2)
    held, writes, text = int(out[0]), int(out[1]), out[2]
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert (held, writes) == (0, 1), "five lines of one turn: nothing before its end, then one write"
    assert [line["request_id"] for line in lines] == [f"id-{n}" for n in range(5)]
    assert all(line["logger"] == "api.access" and line["status"] == 200 for line in lines)


def test_access_lines_still_held_when_the_worker_exits_are_written():
    out = _python(ACCESS_SETUP.replace("stream = Counted()", "stream = sys.stdout") + """
line.write(access_fields("the-last", "POST", "/predict", "/predict", 200, 0.001))
sys.exit(0)  # before the loop ever turns
""").stdout
    (last,) = [json.loads(text) for text in out.splitlines()]
    assert last["request_id"] == "the-last"


def test_outside_an_event_loop_each_line_is_written_at_once():
    out = _python(ACCESS_SETUP.replace("from gevent import monkey; monkey.patch_all()", "") + """
line.write(access_fields("now", "POST", "/predict", "/predict", 200, 0.001))
print(len(stream.writes))
""").stdout
    assert out.strip() == "1"


def test_a_worker_reads_each_gunicorn_setting_once_with_the_same_values():
    cfg = Config()
    cfg.set("keepalive", 7)
    before = {name: getattr(cfg, name) for name in cfg.settings}
    worker.settle_config(cfg)
    assert {name: getattr(cfg, name) for name in cfg.settings} == before
    plain = [name for name in cfg.settings if not hasattr(type(cfg), name)]  # not Config's own properties
    assert plain and all(name in cfg.__dict__ for name in plain)  # read without __getattr__ now
    assert cfg.keepalive == 7 and cfg.limit_request_line == before["limit_request_line"]
    assert not cfg.is_ssl and cfg.worker_class_str == "sync"  # Config's own properties still answer


def test_the_date_header_is_formatted_once_a_second_and_stays_correct():
    from gunicorn import util

    original = util.http_date
    try:
        worker.cached_date_header()
        for _ in range(3):  # a second may turn between the two reads: try again
            now = int(time.time())
            first, second = util.http_date(), util.http_date()
            if int(time.time()) == now:
                break
        assert first is second, "the same second: the same formatted string, not a new one"
        assert first == email.utils.formatdate(now, usegmt=True)
        assert util.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"  # a given time is formatted as before
    finally:
        util.http_date = original


def test_a_forked_worker_writes_its_metrics_under_its_own_pid(tmp_path):
    out = _python("""
import os
from api import metrics
from prometheus_client import CollectorRegistry, multiprocess
child = os.fork()
if child == 0:
    metrics.REQUESTS.labels("/predict", "POST", "200").inc()
    metrics.REQUESTS.labels("/predict", "POST", "200").inc()
    os._exit(0)
os.waitpid(child, 0)
metrics.REQUESTS.labels("/predict", "POST", "200").inc()
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
total = registry.get_sample_value("keras_serving_requests_total", {"route": "/predict", "method": "POST", "status": "200"})
print(child, os.getpid(), total)
""", {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}).stdout.split()
    child, parent, total = int(out[0]), int(out[1]), float(out[2])
    assert total == 3.0
    files = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("counter_"))
    assert files == sorted([f"counter_{child}.db", f"counter_{parent}.db"]), files
