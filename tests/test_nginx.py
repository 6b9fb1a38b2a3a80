"""nginx in front: instance-only routes, request ids in both logs, JSON for nginx's own errors,
per-client limits, a dead upstream, and the rendered configuration's invariants."""
import re
import shutil
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from api.settings import Settings
from api.process.nginx import render
from tests.servers import Stack, free_port


def test_public_listener_hides_instance_only_routes(stack):
    for path in ("/health", "/metrics", "/nginx_status"):
        answer = requests.get(stack.url + path, timeout=5)
        assert answer.status_code == 404 and answer.json() == {"error": "no such route"}
    assert requests.get(stack.url + "/ready", timeout=5).status_code == 200  # the load balancer's check


def test_instance_only_listener_serves_health_and_nginx_status(stack):
    assert requests.get(stack.status_url + "/health", timeout=5).json() == {"status": "alive"}
    assert "Active connections" in requests.get(stack.status_url + "/nginx_status", timeout=5).text
    with pytest.raises(requests.ConnectionError):  # bound to 127.0.0.1 alone, not to every address
        requests.get(f"http://127.0.0.2:{stack.status_port}/health", timeout=2)


def test_client_request_id_is_echoed_and_written_in_both_access_logs(stack, digits):
    request_id = f"test-{uuid.uuid4()}"
    answer = requests.post(stack.url + "/predict", json={"instances": digits[0][:1].tolist()},
                           headers={"X-Request-ID": request_id}, timeout=10)
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == request_id
    time.sleep(0.2)  # logs are written after the answer
    (line,) = [entry for entry in stack.access_lines() if entry["request_id"] == request_id]
    assert line["status"] == 200 and line["upstream_status"] == "200"
    assert float(line["upstream_response_time"]) <= float(line["request_time"]) + 0.001  # ms rounding
    assert f'"request_id":"{request_id}"' in stack.log()  # the app's JSON access line


@pytest.mark.parametrize("sent", [None, "has spaces", "x" * 200, 'quote"d'])
def test_a_missing_or_unsafe_request_id_is_replaced_by_nginx(stack, sent):
    headers = {"X-Request-ID": sent} if sent else {}
    answer = requests.get(stack.url + "/ready", headers=headers, timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])


def test_nginx_own_errors_are_json(stack):
    too_big = requests.post(stack.url + "/predict", data=b"{" + b" " * (9 * 1024 * 1024), timeout=30,
                            headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert too_big.json() == {"error": "request body is over the limit of 8388608 bytes"}
    with socket.create_connection(("127.0.0.1", stack.port)) as raw:  # a request line nginx cannot parse
        raw.sendall(b"GARBAGE\r\n\r\n")
        reply = raw.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 400") and reply.rstrip().endswith('{"error": "bad request"}')


def test_errors_the_app_answers_pass_through_unchanged(stack):
    answer = requests.post(stack.url + "/predict", data=b"{", headers={"Content-Type": "application/json"}, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"].startswith("malformed JSON")


def test_per_client_rate_and_connection_limits_answer_429_json(store, tmp_path, digits):
    stack = Stack(tmp_path, model_store=store, workers=1, model_versions="latest", client_rate=5, client_burst=5)
    try:
        stack.wait_ready(workers=1)
        body = {"instances": digits[0][:1].tolist()}
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: requests.post(stack.url + "/predict", json=body, timeout=10),
                                    range(40)))
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) >= 5 and statuses.count(429) >= 20 and set(statuses) == {200, 429}
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["Retry-After"] == "1" and "too many requests" in refused.json()["error"]
    finally:
        stack.stop()


def test_a_dead_upstream_is_a_json_503_with_retry_after(tmp_path):
    """nginx with no gunicorn behind it: every attempt fails to connect, the client gets JSON."""
    port, status_port = free_port(), free_port()
    settings = Settings(port=port, status_port=status_port, run_dir=tmp_path / "run")
    conf = render(settings, tmp_path / "nginx", local=True)
    nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(conf.parent), "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"instances": [1]}, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert answer.json()["error"].startswith("service unavailable")
    finally:
        nginx.terminate()
        nginx.wait(10)


# -- the rendered configuration ------------------------------------------------------------------------

def rendered(tmp_path, **overrides) -> tuple[Settings, str]:
    settings = Settings(run_dir=tmp_path / "run", **overrides)
    conf = render(settings, tmp_path / "nginx", local=True)
    text = "\n".join((conf.parent / name).read_text() for name in ("site.conf", "proxy.conf", "errors.conf"))
    return settings, text


def directive(text: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.M)


def seconds(value: str) -> float:
    return float(value.split()[0].rstrip("s"))


def test_rendered_config_passes_nginx_t(tmp_path):
    settings = Settings(run_dir=tmp_path / "run", trusted_proxies=("10.0.0.0/8",))
    conf = render(settings, tmp_path / "nginx", local=True)
    check = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-t", "-p", str(conf.parent), "-c", str(conf)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_keepalive_timeouts_shrink_from_the_client_inwards(tmp_path):
    """Each hop closes an idle connection before the hop in front of it would reuse it:
    load balancer (60 s) < nginx's client keep-alive; nginx's upstream keep-alive < gunicorn's."""
    settings, text = rendered(tmp_path)
    client_keepalive = [seconds(v) for v in directive(text, "keepalive_timeout")]
    assert min(client_keepalive) == settings.upstream_keepalive and settings.upstream_keepalive < settings.keepalive
    assert max(client_keepalive) == settings.client_keepalive > settings.load_balancer_idle_timeout


def test_proxy_limits_follow_the_app_settings(tmp_path):
    settings, text = rendered(tmp_path, max_body_bytes=1234567, request_timeout=12.5, upstream_tries=4)
    assert directive(text, "client_max_body_size") == ["1234567"]
    assert directive(text, "proxy_read_timeout") == ["12.5s"]
    workers = len(settings.worker_socket_paths)
    assert directive(text, "proxy_next_upstream_tries") == [str(workers + 4)]
    # one peer per worker slot, balanced by in-flight requests, and the shared socket as the fallback,
    # once per attempt left after every worker's own socket failed
    peers = re.findall(r"^\s*server unix:(\S+)(.*);", text, flags=re.M)
    assert [path for path, _ in peers] == [*map(str, settings.worker_socket_paths), *[str(settings.socket_path)] * 4]
    assert all(extra.split() == ["max_fails=0"] for _, extra in peers[:workers])
    assert all(extra.split() == ["backup", "max_fails=0"] for _, extra in peers[workers:])
    assert re.search(r"^\s*least_conn;", text, flags=re.M)
    assert "non_idempotent" in directive(text, "proxy_next_upstream")[0]
    assert directive(text, "proxy_http_version") == ["1.1"] and 'Connection ""' in text
    assert directive(text, "server_tokens") == ["off", "off"]


def test_without_worker_sockets_the_shared_socket_is_listed_once_per_attempt(tmp_path):
    settings, text = rendered(tmp_path, upstream_tries=4, worker_sockets=False)
    assert re.findall(r"^\s*server unix:(\S+)", text, flags=re.M) == [str(settings.socket_path)] * 4
    assert "least_conn" not in text
