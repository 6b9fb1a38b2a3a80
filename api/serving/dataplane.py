"""Protocol logic between HTTP and the model: find the served version, parse, infer, shape the answer.

The HTTP resources call these methods with bytes and headers and send back what they return;
nothing here touches Flask, and nothing in the resources touches numpy or TensorFlow.

Every inference route answers a request whose outputs hold NaN or infinity with NonFiniteOutput (422),
never 200: the check runs on the request's own slice of the batch (after `Batcher.run`), so its
batch-mates are answered as usual, and on the outputs the answer carries (all of them for TensorFlow
Serving's routes, those a v2 request asks for). String outputs (tf.string: object arrays of bytes) are never
non-finite; the protocols write them (TensorFlow Serving: strings or {"b64"}; v2: BYTES, and a 422 for
bytes that are not UTF-8 asked for as JSON, UnrepresentableOutput).
"""
import os
import time
from dataclasses import dataclass
from typing import Callable

from api.errors import Unavailable
from api.process.markers import is_draining
from api.protocols import tfserving, v2
from api.protocols.codecs import check_finite_outputs, dump_json, load_json, require_json
from api.serving.registry import ModelRegistry, ServedVersion
from api.settings import Settings
from api.version import __version__


@dataclass(slots=True)
class Call:
    """What the data plane knows of a request beyond its body: when it must be answered by
    (monotonic clock) and how to tell that its client hung up; then what ran, for its access line."""
    deadline: float
    client_gone: Callable[[], bool] | None = None
    start_by: float | None = None  # monotonic: by when the model must start on it (SERVE_MAX_QUEUE_WAIT)
    model: str | None = None
    version: int | None = None
    instances: int | None = None


class DataPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings):
        self.registry = registry
        self.settings = settings

    # -- inference --------------------------------------------------------------------------------
    def admit(self, queued_since: str | None, client_gone=None, name: str | None = None,
              version: int | None = None) -> Call:
        """Refuse, before the body is read, a request that already waited too long, or that the model
        version it names has no room for within that time (load shedding; see Batcher.wait_for_room);
        otherwise its deadline: `request_timeout` after nginx received it, and `max_queue_wait` to start by.

        nginx stamps `X-Request-Start: t=<epoch seconds>`; a request served late is worth less than a
        503 its client can retry elsewhere, and answering it would only make the queue longer. Deciding
        before the body is parsed keeps an overload from spending the worker on bodies it will refuse.
        """
        waited = 0.0
        if queued_since:
            try:
                waited = max(0.0, time.time() - float(queued_since.removeprefix("t=")))
            except ValueError:
                waited = 0.0
        limit = self.settings.max_queue_wait
        if waited > limit:
            raise Unavailable(f"server is overloaded: the request waited {waited:.2f} s for a worker "
                              f"(limit {limit:g} s); retry shortly", retry_after=1)
        now = time.monotonic()
        start_by = now + limit - waited
        if name is not None and self.registry.ready:
            if not self.registry.get(name, version).batcher.wait_for_room(start_by):
                raise Unavailable(f"server is overloaded: the model had no room for the request within "
                                  f"{limit:g} s of its arrival; retry shortly", retry_after=1)
        return Call(now + self.settings.request_timeout - waited, client_gone, start_by)

    def tfserving_predict(self, name: str, version: int | None, body: bytes, content_type: str | None,
                call: Call | None = None) -> dict:
        """A TensorFlow Serving predict: the answer document (api/protocols/tfserving.py has its forms).
        Raises the ApiError the request ends in: 4xx for the request, 422 for non-finite outputs, 503
        and 504 from the batcher."""
        served, request = self.tfserving_request(name, version, body, content_type)
        outputs = self._run(served, request.inputs, call)
        check_finite_outputs(outputs)
        return tfserving.predict_response(outputs, request, served.signature)

    def tfserving_request(self, name: str, version: int | None, body: bytes, content_type: str | None
                          ) -> tuple[ServedVersion, tfserving.PredictRequest]:
        """The version a TensorFlow Serving predict names and its body checked against that version's
        signature, as `tfserving_predict` and a job's submit (api/queue/front.py) both take it. Raises the
        request's ApiError: 404 (model, version), 415 (content type), 400 and 413 (body)."""
        served = self.registry.get(name, version)
        require_json(content_type)
        document = load_json(body, self.settings.max_json_depth, tensors=True)
        return served, tfserving.parse_predict(document, body, served.signature, self.settings)

    def infer(self, name: str, version: int | None, body: bytes, content_type: str | None,
              header_length: str | None, call: Call | None = None) -> tuple[bytes, dict[str, str]]:
        """A v2 inference: the response body and its headers (binary outputs follow the JSON)."""
        served = self.registry.get(name, version)
        length = v2.parse_header_length(header_length, len(body))
        if length is None:
            require_json(content_type)
        request = v2.parse_infer(body, length, served.signature, self.settings)
        outputs = self._run(served, request.inputs, call)
        check_finite_outputs(outputs, request.outputs)
        document, blobs = v2.infer_response(served.signature, request, outputs)
        head = dump_json(document)
        if not blobs:
            return head, {"Content-Type": "application/json"}
        return head + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                        v2.HEADER: str(len(head))}

    def _run(self, served: ServedVersion, inputs: dict, call: Call | None) -> dict:
        """`inputs` (input name -> [n, ...], every input) through the version's batcher: this request's
        outputs, output name -> [n, ...]."""
        call = call or Call(time.monotonic() + self.settings.request_timeout)
        call.model, call.version = served.signature.name, served.signature.version
        call.instances = len(next(iter(inputs.values())))
        return served.batcher.run(inputs, call.deadline, call.client_gone, call.start_by)

    # -- status and metadata ----------------------------------------------------------------------
    def model_status(self, name: str) -> dict:
        self.registry.get(name)
        return tfserving.model_status(name, self.registry.versions(), self.registry.state)

    def tf_metadata(self, name: str, version: int | None) -> dict:
        served = self.registry.get(name, version)
        batcher = served.batcher
        return tfserving.model_metadata(served.signature, {
            **served.runtime.describe(), "worker_pid": os.getpid(), "model_loads": self.registry.loads,
            "batching": {**batcher.policy_dict(), **batcher.stats.as_dict(), "queued_instances": batcher.queued,
                         "inference_on": batcher.mode, "call_ms": round(served.runtime.call_seconds * 1e3, 3)}})

    def v2_metadata(self, name: str, version: int | None) -> dict:
        return v2.model_metadata(self.registry.get(name, version).signature, self.registry.versions())

    def server_metadata(self) -> dict:
        return {"name": "keras-serving", "version": __version__, "extensions": v2.EXTENSIONS}

    def readiness(self) -> dict:
        """What `/ready` answers when this worker takes traffic; raises 503 otherwise."""
        if self.registry.state == "draining" or is_draining(self.settings.run_dir):
            raise Unavailable("server is shutting down", retry_after=1)
        self.registry.get(self.registry.name)  # loading or failed: 503 with the reason
        return {"status": "ready", "model": self.registry.name, "versions": self.registry.versions()}
