"""Fixtures: a model store trained once per run, the app in-process, and a real gunicorn on it."""
import base64
import gc
import io
import shutil

import numpy as np
import pytest
from PIL import Image


from api.http.app import create_app, registry_of
from api.settings import Settings
from api.training import held_out_split, train
from tests.servers import Gunicorn, Stack, running

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module", autouse=True)
def collect_garbage_after_each_module():
    """A socket or file left open fails the module that leaked it, not a later test that happened to be
    running when the garbage collector found it (warnings are errors here: pyproject.toml).

    A client in a reference cycle is freed only by a full collection, which with TensorFlow's millions
    of objects may come minutes later; one collection per module (about 0.2 s) brings it forward.
    """
    yield
    gc.collect()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """digits v1 as trained; v2 the same weights with word labels, so answers show which version ran."""
    root = tmp_path_factory.mktemp("store")
    train(root / "digits" / "1")
    shutil.copytree(root / "digits" / "1", root / "digits" / "2")
    (root / "digits" / "2" / "labels.txt").write_text("\n".join(WORDS) + "\n")
    return root


@pytest.fixture(scope="session")
def digits():
    """The held-out split the model never saw: (images [n, 8, 8, 1] in [0, 1], labels)."""
    _, x_test, _, y_test = held_out_split()
    return x_test, y_test


@pytest.fixture(scope="session")
def settings(store, tmp_path_factory):
    return Settings(model_store=store, run_dir=tmp_path_factory.mktemp("run"), warmup_batches=(1, 8))


@pytest.fixture(scope="session")
def app(settings):
    app = create_app(settings)
    registry_of(app).load()
    assert registry_of(app).ready, registry_of(app).error
    return app


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def server(store, tmp_path_factory):
    """A real gunicorn, two workers, each with its own model, as `make serve` starts it."""
    gunicorn = Gunicorn(tmp_path_factory.mktemp("gunicorn"), model_store=store, workers=2, threads=4)
    try:
        gunicorn.wait_ready()
        gunicorn.wait_all_workers_ready(2)
        yield gunicorn
    finally:
        gunicorn.stop()


@pytest.fixture(scope="session")
def stack(store, tmp_path_factory):
    """The instance's stack, nginx in front of gunicorn (two workers), as `make serve` runs it."""
    with running(Stack(tmp_path_factory.mktemp("stack"), model_store=store, workers=2, threads=4)) as served:
        yield served


def png_b64(image: np.ndarray, size: int = 8, fmt: str = "PNG") -> str:
    """A digit (values in [0, 1]) as an 8-bit grey image file, upscaled to size x size, in base64."""
    grey = Image.fromarray(np.round(image.squeeze() * 255).astype("uint8"), mode="L")
    if size != grey.width:
        grey = grey.resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    grey.save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return base64.b64encode(buffer.getvalue()).decode()


class Answer:
    def __init__(self, status: int, body: bytes, headers):
        self.status, self.body, self.headers = status, body, headers

    @property
    def json(self):
        import orjson
        return orjson.loads(self.body)


class Http:
    """The same calls over real HTTP (requests to gunicorn) or the Flask test client."""

    def __init__(self, base_url: str | None = None, client=None):
        import requests
        self.base_url, self.client, self.session = base_url, client, requests.Session()

    def request(self, method: str, path: str, body: bytes | None = None, headers=None, json=None) -> Answer:
        if json is not None:
            import orjson
            body, headers = orjson.dumps(json), {"Content-Type": "application/json", **(headers or {})}
        if self.client is not None:
            r = self.client.open(path, method=method, data=body, headers=headers or {})
            return Answer(r.status_code, r.get_data(), r.headers)
        r = self.session.request(method, self.base_url + path, data=body, headers=headers or {}, timeout=30)
        return Answer(r.status_code, r.content, r.headers)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)


@pytest.fixture(scope="module")
def triton_client(server):
    """Triton's own KServe v2 client (tritonclient[http]) on `server`, closed after the module."""
    import tritonclient.http as triton

    with triton.InferenceServerClient(server.url.removeprefix("http://")) as client:
        yield client


@pytest.fixture(params=["nginx", "gunicorn", "flask"])
def http(request):
    """Each test using this runs three times: through nginx + gunicorn, gunicorn alone, and in-process."""
    if request.param == "nginx":
        http = Http(base_url=request.getfixturevalue("stack").url)
    elif request.param == "gunicorn":
        http = Http(base_url=request.getfixturevalue("server").url)
    else:
        http = Http(client=request.getfixturevalue("app").test_client())
    with http.session:
        yield http


def pytest_terminal_summary(terminalreporter):
    """The fault counts of every load test, shown whether or not the tests passed."""
    from tests.load import REPORTS
    if REPORTS:
        terminalreporter.section("requests counted under load")
        for line in REPORTS:
            terminalreporter.write_line(line)
