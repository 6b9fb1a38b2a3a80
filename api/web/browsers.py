"""What every answer tells browsers: `X-Content-Type-Options: nosniff`, and CORS for the origins the
settings allow (SERVE_CORS_ORIGINS), so that a page served elsewhere may call the API.

The preflight (`OPTIONS` with `Access-Control-Request-Method`) is Flask's automatic OPTIONS answer (200,
with `Allow` listing the route's methods) with the CORS headers added here; an origin not allowed gets
the same answer without them, which the browser refuses. nginx adds nosniff and the allowed origin to the
errors it answers itself (nginx/errors.conf.j2), so a page elsewhere can read those too.
"""
from flask import Flask, request

from api.settings import Settings

# Response headers a page on another origin may read: the warm-up wait, the ids to quote in a report,
# the model version that answered, the length of a v2 binary answer's JSON part, a queued job's URL.
EXPOSED = ("Retry-After, X-Request-ID, X-Model-Name, X-Model-Version, Inference-Header-Content-Length, "
           "Location")
# Request headers the API reads besides the CORS-safelisted ones.
ALLOWED_HEADERS = ("Content-Type, Content-Encoding, Inference-Header-Content-Length, X-Request-ID, "
                   "Idempotency-Key")
PREFLIGHT_SECONDS = 600  # how long a browser may reuse a preflight's answer


def init_app(app: Flask, settings: Settings) -> None:
    """Add the browser headers to every answer `app` sends, errors included."""
    origins = frozenset(settings.cors_origins)

    @app.after_request
    def browser_headers(response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        if origins:
            allow_origin(response, request.headers.get("Origin"), origins)
        return response


def allow_origin(response, origin: str | None, origins: frozenset[str]) -> None:
    """The CORS headers for a request from `origin` (None: not from a browser page elsewhere), when
    `origins` (exact `scheme://host[:port]` strings, or `*`) allows it."""
    response.vary.add("Origin")  # the answer differs by origin: shared caches must key on it
    if origin is None or ("*" not in origins and origin not in origins):
        return
    response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSED
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response.headers["Access-Control-Allow-Methods"] = response.headers.get("Allow", "GET, POST, OPTIONS")
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_SECONDS)
