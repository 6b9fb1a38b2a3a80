"""The demo page in a real browser (Debian's chromium, Playwright), against one real stack: nginx in front
of gunicorn, the model loaded by a worker, every request over real HTTP.

One stack serves the whole module, and it starts cold: the first test opens the page while the worker is
still loading its model, so the warm-up path is the stack's own 503 + Retry-After, not a simulation; the
tests after it wait until the stack is ready. Its store serves version 2 of digits with word labels, one
of them HTML, so every answer shows which version ran and that labels are shown as text.
"""
import base64
import http.server
import io
import json
import os
import re
import shutil
import threading

import pytest
import requests
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.pages import watch
from tests.servers import ROOT, Stack

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
HOSTILE = '<img src=x onerror="alert(1)">'  # a label is data from labels.txt, never HTML
LABELS = [HOSTILE if digit == 7 else word for digit, word in enumerate(WORDS)]
SCREENSHOTS = ROOT / "docs" / "img"  # written there only with UPDATE_SCREENSHOTS=1
WAIT_MS = 20_000


# -- the stack and an origin elsewhere -------------------------------------------------------------------

@pytest.fixture(scope="module")
def elsewhere():
    """Another origin's pages, served from http://127.0.0.1:<a port of its own> (its URL is yielded):
    `/` is a blank page, `/frame?src=URL` frames URL. Started before the stack, so that the stack's
    SERVE_CORS_ORIGINS can name it."""
    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            src = self.path.partition("?src=")[2]
            body = f'<!doctype html><title>elsewhere</title><iframe src="{src}"></iframe>' if src else \
                "<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)  # the port stays ours: no race
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def demo_store(store, tmp_path_factory):
    """digits v1 as trained (examples/ included), and v2 the same with LABELS: the version /predict uses."""
    root = tmp_path_factory.mktemp("demo-store")
    shutil.copytree(store / "digits" / "1", root / "digits" / "1")
    shutil.copytree(store / "digits" / "1", root / "digits" / "2")
    (root / "digits" / "2" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root


@pytest.fixture(scope="module")
def cold_stack(demo_store, elsewhere, tmp_path_factory):
    """The stack, started and not waited for: its worker loads the model while the first test runs."""
    stack = Stack(tmp_path_factory.mktemp("demo-stack"), model_store=demo_store, workers=1,
                  cors_origins=json.dumps([elsewhere]))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def stack(cold_stack):
    cold_stack.wait_ready(workers=1)
    return cold_stack


@pytest.fixture()
def page(browser, stack):
    """A fresh page at 1280 x 900 on the demo page, watched (tests/browser/pages.py)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.watched = watch(page, stack.url)
    page.goto(stack.url + "/")
    yield page
    context.close()


# -- helpers -------------------------------------------------------------------------------------------

def predict(stack, image: bytes, k: int = 3) -> list[dict]:
    """What `POST /predict` answers for `image`, as any client would ask: the top k, best first."""
    body = {"instances": [{"b64": base64.b64encode(image).decode()}], "top_k": k}
    answer = requests.post(stack.url + "/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["top_k"][0]


def examples(page) -> list[tuple[str, str]]:
    """The page's example buttons: (aria-label, image URL)."""
    return page.eval_on_selector_all(".example",
                                     "all => all.map(b => [b.getAttribute('aria-label'), b.dataset.src])")


def shown_after(page, action, k: int = 3) -> list[dict]:
    """The classes the page shows after `action()`: label (data and text), score, score text, bar width %."""
    page.evaluate("() => document.getElementById('classes').replaceChildren()")
    action()
    try:
        page.wait_for_function("k => document.querySelectorAll('#classes li').length === k", arg=k)
    except PlaywrightTimeout:
        raise AssertionError(f"no answer shown; the page says: {page.text_content('#status')!r}") from None
    return page.eval_on_selector_all("#classes li", """rows => rows.map(row => ({
        label: row.dataset.label, text: row.querySelector('.label').textContent,
        score: Number(row.dataset.score), shown: row.querySelector('.score').textContent,
        width: parseFloat(row.querySelector('.fill').style.width)}))""")


def assert_same(shown: list[dict], answered: list[dict]) -> None:
    """The page shows the API's answer: same labels in the same order, same scores, bars in proportion."""
    assert [row["label"] for row in shown] == [row["label"] for row in answered]
    assert [row["text"] for row in shown] == [row["label"] for row in answered]
    assert [row["score"] for row in shown] == [row["score"] for row in answered]
    for row in shown:
        assert re.fullmatch(r"\d\.\d{3}", row["shown"])  # 3 decimals, rounded from the score
        assert abs(float(row["shown"]) - row["score"]) <= 0.0005 + 1e-9
        assert row["width"] == pytest.approx(row["score"] * 100, abs=0.01)  # CSS keeps ~6 digits
    assert [row["score"] for row in shown] == sorted((row["score"] for row in shown), reverse=True)


def png(digit_image: bytes, size: int) -> bytes:
    """An example PNG scaled to size x size (nearest): another file of the same digit."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(digit_image)).resize((size, size), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def example_bytes(stack, url: str) -> bytes:
    answer = requests.get(stack.url + url, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
    return answer.content


# -- the tests -------------------------------------------------------------------------------------------

def test_warming_up_is_said_then_the_answer_comes_without_a_reload(cold_stack, browser):
    """First in the module: the page is opened while the stack's worker still loads its model."""
    def loading() -> bool:
        try:
            answer = requests.get(cold_stack.url + "/ready", timeout=2)
        except requests.ConnectionError:
            return False
        return answer.status_code == 503 and "loading" in answer.json()["error"]

    cold_stack.wait(loading, 60, what="the worker never answered 503 'still loading'")
    context = browser.new_context()
    page = context.new_page()
    watched = watch(page, cold_stack.url)
    predicted = []
    page.on("response", lambda r: r.url.endswith("/predict") and predicted.append((r.status, r.headers)))
    page.goto(cold_stack.url + "/")
    page.evaluate("() => { window.sameDocument = true; }")
    page.click(".example >> nth=3")

    retrying = "() => /Retrying in \\d+ s/.test(document.getElementById('status').textContent)"
    try:
        page.wait_for_function(retrying, timeout=WAIT_MS)
    except PlaywrightTimeout:
        status = page.text_content("#status")
        raise AssertionError(f"no warm-up message (was the model ready first?): {status!r}") from None
    assert "still loading" in page.text_content("#status")
    page.wait_for_function("() => document.querySelectorAll('#classes li').length === 3", timeout=120_000)
    assert page.evaluate("() => window.sameDocument") is True  # no reload: the page retried by itself
    refused = [headers for status, headers in predicted if status == 503]
    assert refused and all(int(headers["retry-after"]) > 0 for headers in refused)
    assert predicted[-1][0] == 200 and page.text_content("#status").startswith("Best: ")
    watched.assert_clean(expected_statuses=(503,))
    context.close()


def test_the_page_loads_from_its_own_origin_alone_with_a_strict_csp(stack, page):
    document = requests.get(stack.url + "/", timeout=10)
    csp = dict(part.strip().split(" ", 1) for part in document.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'self'"
    assert not any("unsafe" in value or "*" in value for value in csp.values())
    assert document.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert document.headers["X-Content-Type-Options"] == "nosniff"
    # No inline script or style for the CSP to allow: every script has a src, no on* or style attributes.
    assert page.evaluate("() => [...document.scripts].every(s => s.src)")
    assert page.evaluate("""() => [...document.querySelectorAll('*')].every(e =>
        ![...e.attributes].some(a => a.name.startsWith('on') || a.name === 'style'))""")
    assert page.title() and page.locator("#drop").is_visible()
    page.wait_for_load_state("networkidle")
    assert len(page.watched.requests) >= 3  # the page, its script and style, and the example images
    page.watched.assert_clean()


def test_each_example_gives_the_labels_and_scores_of_predict(stack, page):
    found = examples(page)
    assert [name for name, _ in found] == [f"Example digit-{d}" for d in range(10)]
    right = 0
    for index, (name, url) in enumerate(found):
        shown = shown_after(page, lambda: page.click(f".example >> nth={index}"))
        assert_same(shown, predict(stack, example_bytes(stack, url)))
        right += shown[0]["label"] == LABELS[int(name[-1])]
    assert right >= 9, f"{right} of 10 examples classified right"
    details = page.text_content("#details")
    assert re.fullmatch(r"model digits, version 2 · \d+ ms · request [0-9a-f]{32}", details), details
    page.watched.assert_clean()


def test_a_file_chosen_dropped_or_pasted_gives_the_answer_of_predict(stack, page, tmp_path):
    image = png(example_bytes(stack, examples(page)[4][1]), 64)  # a larger drawing of the digit
    path = tmp_path / "four.png"
    path.write_bytes(image)
    answered = predict(stack, image)
    file_in = "([bytes, name]) => new File([new Uint8Array(bytes)], name, {type: 'image/png'})"

    chosen = shown_after(page, lambda: page.set_input_files("#file", path))
    dropped = shown_after(page, lambda: page.locator("#drop").evaluate(f"""(zone, args) => {{
        const data = new DataTransfer();
        data.items.add(({file_in})(args));
        zone.dispatchEvent(new DragEvent('drop', {{dataTransfer: data, bubbles: true, cancelable: true}}));
    }}""", [list(image), "dropped.png"]))
    pasted = shown_after(page, lambda: page.evaluate(f"""(args) => {{
        const data = new DataTransfer();
        data.items.add(({file_in})(args));
        const paste = new ClipboardEvent('paste', {{clipboardData: data, bubbles: true, cancelable: true}});
        document.dispatchEvent(paste);
    }}""", [list(image), "pasted.png"]))
    for shown in (chosen, dropped, pasted):
        assert_same(shown, answered)
    assert page.locator("#preview").is_visible()
    page.watched.assert_clean()


@pytest.mark.parametrize("name, content", [("notes.png", b"not an image, just text\n"), ("empty.png", b"")],
                         ids=["text", "empty"])
def test_a_file_that_is_no_image_shows_the_apis_own_error_and_the_page_goes_on(stack, page, tmp_path,
                                                                                  name, content):
    (tmp_path / name).write_bytes(content)
    body = {"instances": [{"b64": base64.b64encode(content).decode()}], "top_k": 3}
    refused = requests.post(stack.url + "/predict", json=body, timeout=10)
    assert refused.status_code == 400
    page.set_input_files("#file", tmp_path / name)
    page.wait_for_function("() => document.getElementById('status').classList.contains('error')")
    assert page.text_content("#status") == refused.json()["error"]
    assert page.locator("#classes li").count() == 0
    shown_after(page, lambda: page.click(".example >> nth=0"))  # still usable
    page.watched.assert_clean(expected_statuses=(400,))


def test_keyboard_alone_chooses_a_file_and_the_answer_is_announced(stack, page, tmp_path):
    path = tmp_path / "two.png"
    path.write_bytes(example_bytes(stack, examples(page)[2][1]))
    # Playwright turns file chooser interception on without waiting for the browser to confirm: listening
    # before the first key press, not just around Enter, lets it take effect first (else, under load, the
    # chooser opens unintercepted and no event comes).
    page.on("filechooser", lambda chooser: None)
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "drop"  # first stop: the drop zone
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    shown = shown_after(page, lambda: chooser.value.set_files(path))
    assert shown[0]["label"] == "two"
    live = page.locator("#result")
    assert live.get_attribute("aria-live") == "polite" and live.locator("#status").count() == 1
    assert page.text_content("#status").startswith("Best: two")
    page.keyboard.press("Tab")  # next stops: the examples, each a button that Enter presses
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Example digit-0"
    shown = shown_after(page, lambda: page.keyboard.press("Enter"))
    assert shown[0]["label"] == "zero"
    page.watched.assert_clean()


def test_labels_are_shown_as_text_never_as_html(stack, page):
    page.select_option("#top-k", "10")
    shown = shown_after(page, lambda: page.click(".example >> nth=7"), k=10)
    assert shown[0]["text"] == HOSTILE
    assert page.locator("#classes img").count() == 0 and page.locator("#result img").count() == 0
    page.watched.assert_clean()  # no dialog: alert() never ran


@pytest.mark.parametrize("width", [360, 1280])
def test_screenshots_at_phone_and_desktop_widths_without_horizontal_overflow(stack, browser, width, tmp_path):
    context = browser.new_context(viewport={"width": width, "height": 600})  # full_page: at least this tall
    page = context.new_page()
    watched = watch(page, stack.url)
    page.goto(stack.url + "/")
    shown_after(page, lambda: page.click(".example >> nth=3"))
    page.wait_for_load_state("networkidle")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    shot = tmp_path / f"demo-{width}.png"
    page.screenshot(path=shot, full_page=True)
    with Image.open(shot) as image:
        assert image.width == width
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOTS / shot.name)
    watched.assert_clean()
    context.close()


def test_a_page_on_an_allowed_origin_may_call_the_api_and_no_other_may(stack, browser, elsewhere):
    context = browser.new_context()
    page = context.new_page()
    call = """async ([url, body]) => {
        try {
            const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body});
            return {status: r.status, version: r.headers.get('X-Model-Version'), body: await r.json()};
        } catch (error) { return {error: error.name}; }
    }"""
    body = json.dumps({"instances": [[[[0.0]] * 8] * 8], "top_k": 1})
    page.goto(elsewhere + "/")  # allowed: a preflight (JSON is not a simple request), then the POST
    answer = page.evaluate(call, [stack.url + "/predict", body])
    assert answer["status"] == 200 and answer["version"] == "2" and len(answer["body"]["top_k"][0]) == 1
    page.goto(elsewhere.replace("127.0.0.1", "localhost") + "/")  # the same server, another origin
    assert page.evaluate(call, [stack.url + "/predict", body]) == {"error": "TypeError"}
    context.close()


def test_the_page_cannot_be_framed_by_another_origin(stack, browser, elsewhere):
    context = browser.new_context()
    page = context.new_page()
    framed = []
    page.on("response", lambda r: r.url == stack.url + "/" and framed.append(r.status))
    page.goto(f"{elsewhere}/frame?src={stack.url}/")
    page.wait_for_load_state("load")
    assert framed == [200]  # the browser fetched it, then refused to show it (frame-ancestors)
    child = page.frames[1]
    assert child.url.startswith("chrome-error:") and child.locator("#drop").count() == 0
    context.close()


# -- what browsers elsewhere see, over plain HTTP through nginx ----------------------------------------

def test_a_preflight_from_an_allowed_origin_is_answered_and_others_get_no_cors_headers(stack, elsewhere):
    allowed, other = elsewhere, "http://evil.example"
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    preflight = requests.options(stack.url + "/predict", headers={"Origin": allowed, **ask}, timeout=10)
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert int(preflight.headers["Access-Control-Max-Age"]) > 0 and "Origin" in preflight.headers["Vary"]
    refused = requests.options(stack.url + "/predict", headers={"Origin": other, **ask}, timeout=10)
    assert not any(name.startswith("Access-Control-") for name in refused.headers)

    body = {"instances": [[[[0.0]] * 8] * 8]}
    answer = requests.post(stack.url + "/predict", json=body, headers={"Origin": allowed}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == allowed
    assert "X-Model-Version" in answer.headers["Access-Control-Expose-Headers"]
    # nginx's own errors say the same, so that a page elsewhere can read why it was refused
    too_big = requests.post(stack.url + "/predict", data=b"{" + b" " * (9 * 1024 * 1024), timeout=30,
                            headers={"Content-Type": "application/json", "Origin": allowed})
    assert too_big.status_code == 413 and too_big.headers["Access-Control-Allow-Origin"] == allowed
    assert "Access-Control-Allow-Origin" not in requests.get(stack.url + "/metrics", timeout=5,
                                                             headers={"Origin": other}).headers


def test_every_answer_carries_nosniff(stack):
    answers = {
        "page": requests.get(stack.url + "/", timeout=10),
        "script": requests.get(stack.url + "/demo/static/demo.js", timeout=10),
        "example": requests.get(stack.url + "/demo/examples/2/digit-0.png", timeout=10),
        "predict": requests.post(stack.url + "/predict", json={"instances": [[[[0.0]] * 8] * 8]}, timeout=10),
        "app's 400": requests.post(stack.url + "/predict", data=b"{", timeout=10,
                                   headers={"Content-Type": "application/json"}),
        "app's 404": requests.get(stack.url + "/demo/static/nothing.js", timeout=10),
        "nginx's 404": requests.get(stack.url + "/metrics", timeout=10),
        "nginx's 405": requests.request("TRACE", stack.url + "/predict", timeout=10),
        "nginx's 413": requests.post(stack.url + "/predict", data=b"{" + b" " * (9 * 1024 * 1024), timeout=30,
                                     headers={"Content-Type": "application/json"}),
    }
    assert {name: answer.headers.get("X-Content-Type-Options") for name, answer in answers.items()} == \
        dict.fromkeys(answers, "nosniff")
    assert [answers[name].status_code for name in ("app's 404", "nginx's 404")] == [404, 404]
    assert answers["app's 404"].json() == {"error": "no such file: /demo/static/nothing.js"}


def test_the_page_is_small_and_its_files_cached_and_compressed(stack):
    page = requests.get(stack.url + "/", timeout=10)
    assert page.headers["Cache-Control"] == "no-cache"  # always revalidated: it names the assets' hashes
    assets = re.findall(r'(?:href|src)="(/demo/static/[^"]+)"', page.text)
    assert len(assets) == 2
    total = len(page.content)
    for url in assets:
        answer = requests.get(stack.url + url, headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        total += len(answer.content)
        again = requests.get(stack.url + url, headers={"If-None-Match": answer.headers["ETag"]}, timeout=10)
        assert again.status_code == 304 and not again.content
        unhashed = requests.get(stack.url + url.split("?")[0], timeout=10)  # no hash: revalidate each time
        assert unhashed.headers["Cache-Control"] == "no-cache"
    assert total < 30 * 1024, f"the page and its files weigh {total} bytes"
    example = requests.get(stack.url + "/demo/examples/2/digit-0.png", timeout=10)
    assert example.headers["Cache-Control"].startswith("public, max-age=")
