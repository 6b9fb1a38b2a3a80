"""Protocol logic between HTTP and the model: find the runtime, parse, infer, shape the answer.

The HTTP resources call these methods with bytes and headers and send back what they return;
nothing here touches Flask, and nothing in the resources touches numpy or TensorFlow.
"""
import os
import time

from . import tfserving, v2
from .codecs import dump_json, load_json, require_json
from .errors import Unavailable
from .registry import ModelRegistry
from .settings import Settings


class DataPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings):
        self.registry = registry
        self.settings = settings

    # -- inference --------------------------------------------------------------------------------
    def admit(self, queued_since: str | None) -> None:
        """Refuse, fast, a request that already waited too long for a worker thread (load shedding).

        nginx stamps `X-Request-Start: t=<epoch seconds>`; a request served late is worth less than a
        503 its client can retry elsewhere, and answering it would only make the queue longer.
        """
        if not queued_since:
            return
        try:
            waited = time.time() - float(queued_since.removeprefix("t="))
        except ValueError:
            return
        if waited > self.settings.max_queue_wait:
            raise Unavailable(f"server is overloaded: the request waited {waited:.2f} s for a worker "
                              f"(limit {self.settings.max_queue_wait:g} s); retry shortly", retry_after=1)

    def predict(self, name: str, version: int | None, body: bytes, content_type: str | None) -> dict:
        runtime = self.registry.get(name, version)
        require_json(content_type)
        document = load_json(body, self.settings.max_json_depth)
        request = tfserving.parse_predict(document, body, runtime, self.settings)
        outputs = runtime.infer(request.batch)
        return tfserving.predict_response(outputs, request, runtime.version.labels)

    def infer(self, name: str, version: int | None, body: bytes, content_type: str | None,
              header_length: str | None) -> tuple[bytes, dict[str, str]]:
        """A v2 inference: the response body and its headers (binary outputs follow the JSON)."""
        runtime = self.registry.get(name, version)
        length = v2.parse_header_length(header_length, len(body))
        if length is None:
            require_json(content_type)
        request = v2.parse_infer(body, length, runtime, self.settings)
        outputs = runtime.infer(request.batch)
        document, blobs = v2.infer_response(runtime, request, outputs)
        head = dump_json(document)
        if not blobs:
            return head, {"Content-Type": "application/json"}
        return head + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                        v2.HEADER: str(len(head))}

    # -- status and metadata ----------------------------------------------------------------------
    def model_status(self, name: str) -> dict:
        self.registry.get(name)
        return tfserving.model_status(name, self.registry.versions(), self.registry.state)

    def tf_metadata(self, name: str, version: int | None) -> dict:
        metadata = tfserving.model_metadata(self.registry.get(name, version))
        metadata["runtime"].update(worker_pid=os.getpid(), model_loads=self.registry.loads)
        return metadata

    def v2_metadata(self, name: str, version: int | None) -> dict:
        return v2.model_metadata(self.registry.get(name, version), self.registry.versions())

    def server_metadata(self) -> dict:
        from . import __version__
        return {"name": "keras-serving", "version": __version__, "extensions": v2.EXTENSIONS}

    def readiness(self) -> dict:
        """What `/ready` answers when this worker takes traffic; raises 503 otherwise."""
        if self.registry.state == "draining":
            raise Unavailable("server is shutting down", retry_after=1)
        self.registry.get(self.registry.name)  # loading or failed: 503 with the reason
        return {"status": "ready", "model": self.registry.name, "versions": self.registry.versions()}
