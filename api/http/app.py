"""The Flask app: routes, JSON errors, the access line. Imported in gunicorn's workers, never its master."""
import logging

from flask import Flask, current_app, has_request_context, request
from flask_restful import Api
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from api.errors import ApiError
from api.http import access, jobs
from api.http.lane import InferenceLane
from api.http.resources import LANE_ROUTES, ROUTES
from api.protocols.codecs import dump_json
from api.serving.dataplane import DataPlane
from api.serving.registry import ModelRegistry
from api.settings import Settings
from api.web import browsers, page

log = logging.getLogger("api")


class ModelNameConverter(BaseConverter):
    """Model names as the store allows them; no ':' so `<name>:predict` splits cleanly."""

    regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


class VersionLabelConverter(BaseConverter):
    """Version labels as the store allows them (api/model/store.LABEL): never a number, no ':'."""

    regex = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"


class JsonApi(Api):
    """Flask-RESTful with every error, its own included, answered as `{"error": "..."}`."""

    def handle_error(self, e):
        return error_response(e)


def error_response(exc: Exception):
    if isinstance(exc, ApiError):
        status, message, headers = exc.status, exc.message, dict(exc.headers)
    elif isinstance(exc, HTTPException):
        status, message = exc.code or 500, _describe(exc)
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    else:  # a bug: log the trace, never send it
        log.exception("unhandled error")
        status, message, headers = 500, "internal server error", {}
    headers["Content-Type"] = "application/json"
    return dump_json({"error": message}), status, headers


def _describe(exc: HTTPException) -> str:
    where = f"{request.method} {request.path}" if has_request_context() else ""
    if isinstance(exc, MethodNotAllowed):
        return f"method not allowed: {where}; allowed: {', '.join(exc.valid_methods or [])}"
    if isinstance(exc, NotFound):
        return f"no such route: {where}"
    if isinstance(exc, RequestEntityTooLarge):
        return f"request body is over the limit of {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    return exc.description or exc.name


def create_app(settings: Settings | None = None, registry=None) -> Flask:
    """Build the app; the model is loaded by whoever hosts it (`registry.load()` or `.start()`)."""
    settings = settings or Settings()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, ERROR_404_HELP=False)
    app.url_map.converters["name"] = ModelNameConverter
    app.url_map.converters["label"] = VersionLabelConverter
    app.extensions["settings"] = settings
    app.extensions["dataplane"] = DataPlane(registry or ModelRegistry(settings), settings)
    api = JsonApi(app, catch_all_404s=True)

    @api.representation("application/json")
    def as_json(data, code, headers):
        response = app.response_class(dump_json(data), code, mimetype="application/json")
        response.headers.extend(headers or {})
        return response

    for resource, urls in ROUTES:
        api.add_resource(resource, *urls)
    jobs.init_app(app, api)  # asynchronous jobs (api/queue/): 404 unless SERVE_QUEUE_BACKEND names a broker
    app.register_error_handler(Exception, error_response)
    access.init_app(app)
    browsers.init_app(app, settings)
    if settings.demo_page:
        app.register_blueprint(page.blueprint)
    if settings.inference_lane:
        app.wsgi_app = InferenceLane(app, app.wsgi_app, LANE_ROUTES, error_response)
    return app


def registry_of(app: Flask):
    return app.extensions["dataplane"].registry
