"""The demo page (docs/demo.md): `GET /` and its own files, served by the HTTP front's app.

One HTML template, one script, one style sheet, all from this package: no framework, nothing fetched from
another origin (pages that load fonts and scripts from CDNs go blank offline), and a Content-Security-Policy
that allows no inline script. The page calls `POST /predict` as any client does. Its example images are
the model's own: `<store>/<name>/<version>/examples/*.png` (api/training.py writes one per digit).

Files are answered from memory, never with werkzeug's `send_file`: its file wrapper would let gunicorn
`sendfile` the body around api/process/worker.py's one-write responses.
"""
import hashlib
import re
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, request

from api.errors import NotFound
from api.model.store import StoreError, list_versions, select_versions

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"demo.js": "text/javascript; charset=utf-8", "demo.css": "text/css; charset=utf-8"}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
EXAMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.(png|jpe?g)")

# Only this origin's own script, style and images; previews are blob: URLs of the chosen file; no
# <form> posts, no <base>, no framing by another origin (the X-Frame-Options below says the same to
# browsers that predate frame-ancestors).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "SAMEORIGIN",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
IMMUTABLE = "public, max-age=31536000, immutable"  # an asset asked for by its content hash
EXAMPLE_CACHE = "public, max-age=86400"  # a version's files do not change; its examples are a day's cache

blueprint = Blueprint("web", __name__, template_folder="templates")


@cache
def assets() -> dict[str, bytes]:
    """The script and style sheet, read once: name -> bytes."""
    return {name: (STATIC / name).read_bytes() for name in ASSETS}


@cache
def assets_version() -> str:
    """A hash of the assets' contents: the page asks for `demo.js?v=<it>`, so a cached copy is never stale."""
    digest = hashlib.sha256()
    for name, data in sorted(assets().items()):
        digest.update(name.encode() + b"\0" + data)
    return digest.hexdigest()[:16]


def example_folder() -> tuple[int, Path] | None:
    """The version the default model answers with (the newest one SERVE_MODEL_VERSIONS selects) and its
    `examples/` folder; None when the store has no such version or the version has no examples."""
    settings = current_app.extensions["settings"]
    try:
        versions = select_versions(list_versions(settings.model_store, settings.model_name),
                                   settings.model_versions)
    except (StoreError, OSError):
        return None
    if not versions:
        return None
    folder = settings.model_store / settings.model_name / str(max(versions)) / "examples"
    return (max(versions), folder) if folder.is_dir() else None


def examples() -> list[dict]:
    """The example images the page offers, in name order:
    [{"name": "digit-0", "url": "/demo/examples/1/digit-0.png"}, ...]."""
    found = example_folder()
    if found is None:
        return []
    version, folder = found
    return [{"name": path.stem, "url": f"/demo/examples/{version}/{path.name}"}
            for path in sorted(folder.iterdir()) if EXAMPLE_NAME.fullmatch(path.name)]


@blueprint.get("/")
def page():
    """The page: text/html, with the headers that keep it to its own origin."""
    html = render_template("demo.html", version=assets_version(), examples=examples())
    return Response(html, 200, PAGE_HEADERS, mimetype="text/html")


@blueprint.get("/demo/static/<name>")
def asset(name: str):
    """`demo.js` or `demo.css`; cached for a year when asked for by the current hash (`?v=`), else
    revalidated. Any other name: 404."""
    if name not in ASSETS:
        raise NotFound(f"no such file: {request.path}")
    cache_control = IMMUTABLE if request.args.get("v") == assets_version() else "no-cache"
    return _file(assets()[name], ASSETS[name], cache_control)


@blueprint.get("/demo/examples/<int:version>/<name>")
def example(version: int, name: str):
    """One of a version's example images (PNG or JPEG bytes, as stored); 404 for any other name."""
    settings = current_app.extensions["settings"]
    path = settings.model_store / settings.model_name / str(version) / "examples" / name
    if not EXAMPLE_NAME.fullmatch(name) or not path.is_file():
        raise NotFound(f"no such example: {request.path}")
    return _file(path.read_bytes(), IMAGE_TYPES[path.suffix.lower()], EXAMPLE_CACHE)


def _file(data: bytes, content_type: str, cache_control: str) -> Response:
    """`data` with an ETag, so a revalidation is answered 304 without the body."""
    response = Response(data, 200, {"Cache-Control": cache_control}, content_type=content_type)
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    return response.make_conditional(request)
