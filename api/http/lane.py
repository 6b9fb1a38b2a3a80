"""The inference routes' common case answered as plain WSGI, in front of Flask (issue 14's hot path).

Flask and Flask-RESTful cost a digits request more than everything else the worker does for it: a
request context, ~30 context-local lookups, URL binding, two `after_request` hooks, content negotiation
and a werkzeug Response (measured in process, model call stubbed: 515 us a request through the app,
117 us through the lane, 147 us for the HTTP ceiling's whole Flask-RESTful resource; docs/performance.md). The lane
answers the requests that need none of it with the same data plane, the same error bodies
(`api/http/app.error_response`), the same headers, the same metrics and the same access line:

- `POST /predict`, `POST /v1/models/<name>[/versions/<v>]:predict` (TensorFlow Serving) and
  `POST /v2/models/<name>[/versions/<v>]/infer` (KServe v2), the routes' own templates in
  `api/http/resources.ROUTES` matched with the converters' own patterns;
- with a `Content-Length` within SERVE_MAX_BODY_BYTES (or no body), no `Content-Encoding` and no `Origin`.

Everything else (labels, compressed or chunked bodies, CORS, too-large bodies, every other route and
method) goes on to Flask unchanged, which answers it as before. The lane is installed as the app's
`wsgi_app` (Flask's documented middleware slot), so the Flask test client and gunicorn both go through it.
"""
import re
import time
from http import HTTPStatus

from api.errors import InvalidInput
from api.http.access import AccessLine, RequestMetrics, access_fields
from api.http.client import discard, socket_closed
from api.http.resources import answered_by
from api.protocols.codecs import dump_json

JSON = "application/json"
_REASONS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def _pattern(template: str, converters: dict) -> re.Pattern:
    """A Flask rule template (`/v1/models/<name:model>:predict`) as one anchored regular expression,
    each `<converter:arg>` replaced by that converter's own pattern."""
    parts, at = [], 0
    for match in re.finditer(r"<(\w+):(\w+)>", template):
        parts += [re.escape(template[at:match.start()]),
                  f"(?P<{match.group(2)}>{converters[match.group(1)].regex})"]
        at = match.end()
    return re.compile("".join(parts) + re.escape(template[at:]) + r"\Z")


class InferenceLane:
    """WSGI middleware: the inference routes' common case here, the rest to `flask_wsgi`.

    `routes`: (template, kind) with kind "tfserving" (the default model when the template names none)
    or "v2", matched with the app's url_map converters; `error_response`: the app's (api/http/app.py),
    exception -> (body, status, headers).
    """

    def __init__(self, app, flask_wsgi, routes: list[tuple[str, str]], error_response):
        self.flask_wsgi = flask_wsgi
        self.error_response = error_response
        self.plane = app.extensions["dataplane"]
        self.limit = self.plane.settings.max_body_bytes
        self.routes = [(_pattern(template, app.url_map.converters), template, kind) for template, kind in routes]
        # browsers.py's answers vary by Origin once CORS is on; a request without one still says so
        self.vary = [("Vary", "Origin")] if self.plane.settings.cors_origins else []
        self.metrics = RequestMetrics()
        self.lines: list[AccessLine] = []  # made at the first request: in the worker, once logging is set up

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or "HTTP_ORIGIN" in environ or "HTTP_CONTENT_ENCODING" in environ:
            return self.flask_wsgi(environ, start_response)
        # no length and no Transfer-Encoding: an empty body (RFC 9112 section 6.3); chunked: Flask's
        length = environ.get("CONTENT_LENGTH") or ("0" if "HTTP_TRANSFER_ENCODING" not in environ else "")
        if not length.isdigit() or int(length) > self.limit:
            return self.flask_wsgi(environ, start_response)
        path = environ.get("PATH_INFO", "")
        for pattern, template, kind in self.routes:
            match = pattern.match(path)
            if match:
                return self.answer(environ, start_response, template, kind, match.groupdict(), int(length))
        return self.flask_wsgi(environ, start_response)

    def answer(self, environ, start_response, template, kind, args, length):
        started = time.perf_counter()
        plane, call, body = self.plane, None, None
        try:
            version = int(args["version"]) if args.get("version") else None
            model = args.get("model") or plane.registry.name
            call = plane.admit(environ.get("HTTP_X_REQUEST_START"), socket_closed(environ.get("gunicorn.socket")),
                               model, version)
            body = environ["wsgi.input"].read(length)
            if len(body) < length:
                raise InvalidInput(f"request body ended after {len(body)} of its {length} bytes")
            if kind == "v2":
                data, headers = plane.infer(model, version, body, environ.get("CONTENT_TYPE"),
                                            environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"), call)
                headers = list(headers.items())
            else:
                data = dump_json(plane.tfserving_predict(model, version, body, environ.get("CONTENT_TYPE"), call))
                headers = [("Content-Type", JSON), *answered_by(call).items()]
            status = 200
        except Exception as exc:  # noqa: BLE001 - every error is answered as Flask's handlers answer it
            data, status, extra = self.error_response(exc)
            headers = list(extra.items())
            if body is None and length:
                discard(environ["wsgi.input"], length)
        headers += [("Content-Length", str(len(data))), ("X-Content-Type-Options", "nosniff"), *self.vary]
        start_response(_REASONS.get(status) or str(status), headers)
        self.account(environ, template, status, time.perf_counter() - started, call)
        return [data]

    def account(self, environ, route: str, status: int, seconds: float, call) -> None:
        """The request's metrics and access line, as api/http/access.py writes them for Flask's routes."""
        self.metrics.observe(route, "POST", status, seconds)
        if not self.lines:
            self.lines.append(AccessLine())
        self.lines[0].write(access_fields(environ.get("HTTP_X_REQUEST_ID", ""), "POST", route,
                                          environ.get("PATH_INFO", ""), status, seconds, call))
