"""The demo page's routes and the browser headers in-process (Flask's test client, no model loaded):
the page's switch, its files, its examples, CORS by setting, nginx's config for it. The browser tests
drive the same through nginx."""
import shutil
import subprocess

import pytest
from pydantic import ValidationError

from api.http.app import create_app
from api.process.nginx import render
from api.settings import Settings

PNG = bytes.fromhex("89504e470d0a1a0a")  # a PNG's signature: the routes serve bytes, they do not decode


@pytest.fixture()
def store(tmp_path):
    """digits versions 1 and 3 (3 has examples), and 2 with examples too; no model files: nothing loads."""
    for version in (1, 2, 3):
        (tmp_path / "digits" / str(version)).mkdir(parents=True)
    for version in (2, 3):
        (tmp_path / "digits" / str(version) / "examples").mkdir()
        for name in ("digit-1.png", "digit-0.png", "notes.txt", ".hidden.png"):
            (tmp_path / "digits" / str(version) / "examples" / name).write_bytes(PNG + name.encode())
    return tmp_path


def client(store, tmp_path, **settings):
    return create_app(Settings(model_store=store, run_dir=tmp_path / "run", **settings)).test_client()


def test_the_page_is_served_at_the_root_with_its_policy(store, tmp_path):
    answer = client(store, tmp_path).get("/")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_takes_get_alone_and_says_so_in_json(store, tmp_path):
    answer = client(store, tmp_path).post("/", data=b"x")
    assert answer.status_code == 405
    assert set(answer.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert answer.get_json() == {"error": f"method not allowed: POST /; allowed: {answer.headers['Allow']}"}


def test_serve_demo_page_false_turns_the_page_and_its_files_off(store, tmp_path):
    off = client(store, tmp_path, demo_page=False)
    for path in ("/", "/demo/static/demo.js", "/demo/examples/3/digit-0.png"):
        answer = off.get(path)
        assert answer.status_code == 404 and answer.get_json() == {"error": f"no such route: GET {path}"}
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("versions, shown", [("all", 3), ("1,2", 2), ("1", None)])
def test_examples_are_those_of_the_version_predict_uses(store, tmp_path, versions, shown):
    """The newest version SERVE_MODEL_VERSIONS selects; only image files; none when it has no examples/."""
    html = client(store, tmp_path, model_versions=versions).get("/").get_data(as_text=True)
    if shown is None:
        assert "class=\"example\"" not in html and "Examples" not in html
        return
    assert html.count('class="example"') == 2
    urls = [f"/demo/examples/{shown}/digit-{digit}.png" for digit in (0, 1)]
    assert html.index(urls[0]) < html.index(urls[1])
    assert "notes.txt" not in html and ".hidden" not in html


@pytest.mark.parametrize("path", ["/demo/examples/3/notes.txt", "/demo/examples/3/.hidden.png",
                                  "/demo/examples/3/missing.png", "/demo/examples/9/digit-0.png",
                                  "/demo/examples/3/..%2F..%2Fexamples%2Fdigit-0.png",
                                  "/demo/static/page.py"])
def test_only_example_images_and_the_pages_own_files_are_served(store, tmp_path, path):
    answer = client(store, tmp_path).get(path)
    assert answer.status_code == 404 and set(answer.get_json()) == {"error"}


def test_an_example_is_its_bytes_with_an_etag(store, tmp_path):
    web = client(store, tmp_path)
    answer = web.get("/demo/examples/3/digit-0.png")
    assert answer.status_code == 200 and answer.mimetype == "image/png"
    assert answer.data == PNG + b"digit-0.png"
    again = web.get("/demo/examples/3/digit-0.png", headers={"If-None-Match": answer.headers["ETag"]})
    assert again.status_code == 304


def test_without_cors_origins_no_answer_has_cors_headers(store, tmp_path):
    answer = client(store, tmp_path).open("/predict", method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert answer.status_code == 200 and "POST" in answer.headers["Allow"]
    assert not [name for name in answer.headers.keys() if name.startswith("Access-Control-")]
    assert "Vary" not in answer.headers


def test_a_wildcard_origin_allows_every_page_and_errors_carry_it(store, tmp_path):
    web = client(store, tmp_path, cors_origins=("*",))
    preflight = web.open("/v2/models/digits/infer", method="OPTIONS", headers={
        "Origin": "https://any.example", "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == preflight.headers["Allow"]
    error = web.post("/predict", data=b"{", headers={"Origin": "https://any.example"})  # still loading: 503
    assert error.status_code == 503 and error.headers["Access-Control-Allow-Origin"] == "*"
    assert "Retry-After" in error.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("origin", ["https://app.example/", "app.example", "ftp://app.example",
                                    "https://app.example/path", 'https://a"; evil'])
def test_an_origin_must_be_scheme_host_and_port(origin):
    """Origins go into nginx's config (nginx/site.conf.j2) too: nothing but an origin may get there."""
    with pytest.raises(ValidationError):
        Settings(cors_origins=(origin,))


@pytest.mark.parametrize("origins", [(), ("https://app.example", "http://127.0.0.1:3000"), ("*",)],
                         ids=["none", "two", "any"])
def test_nginx_config_with_cors_origins_passes_nginx_t(tmp_path, origins):
    """nginx adds nosniff, and the allowed origin, to the errors it answers itself (nginx/browsers.j2)."""
    conf = render(Settings(run_dir=tmp_path / "run", cors_origins=origins), tmp_path / "nginx", local=True)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    check = subprocess.run([nginx, "-t", "-p", str(conf.parent), "-c", str(conf)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    site = (conf.parent / "site.conf").read_text()
    errors = (conf.parent / "errors.conf").read_text()
    assert site.count("add_header X-Content-Type-Options nosniff always;") == 2  # both servers
    nosniff = "add_header X-Content-Type-Options nosniff always;"
    assert errors.count(nosniff) == errors.count("add_header X-Request-ID")  # each location with headers
    assert ("$serve_cors_origin" in site) == bool(origins)
    for origin in origins:
        assert (f'"{origin}" $http_origin;' in site) == (origin != "*")
