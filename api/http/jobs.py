"""HTTP routes of asynchronous jobs: submit (202 + Location) and fetch. The logic is api/queue/front.py."""
from flask import Response, current_app, request
from flask_restful import Resource

from api.http.resources import request_body
from api.queue.front import JobFront


def jobs() -> JobFront:
    return current_app.extensions["jobs"]


class Submit(Resource):
    """`POST /v1/models/<name>[/versions/<v>]:submit`: TF Serving's predict body, checked now, run later."""

    def post(self, model, version=None):
        document, headers = jobs().submit(model, version, request_body(), request.content_type,
                                          request.headers.get("Idempotency-Key"))
        return document, 202, headers


class JobStatus(Resource):
    """`GET /v1/jobs/<id>`: queued, running, succeeded (with the :predict answer), failed, expired; 410 gone."""

    def get(self, job_id):
        body, headers = jobs().status(job_id)
        return Response(body, 200, headers)


ROUTES = [
    (Submit, ["/v1/models/<name:model>:submit", "/v1/models/<name:model>/versions/<int:version>:submit"]),
    (JobStatus, ["/v1/jobs/<job_id>"]),
]


def init_app(app, api) -> None:
    """The job routes on `api` (the app's JsonApi), and the front they call."""
    app.extensions["jobs"] = JobFront(app.extensions["dataplane"], app.extensions["settings"])
    for resource, urls in ROUTES:
        api.add_resource(resource, *urls)
