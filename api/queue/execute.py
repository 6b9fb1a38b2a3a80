"""Jobs through the model: the answer each would get from `POST .../:predict`, from one compiled call.

The same steps as DataPlane.tfserving_predict (api/serving/dataplane.py), with the same functions, so a
job's answer and its errors are the synchronous API's, byte for byte: parse and check the body against
the version's signature, run the batcher, refuse non-finite outputs, shape the TF Serving answer. What
differs is that many jobs share one call: their instances are joined (per version), run once, and
split back. A call that fails is rerun job by job, so one job's bad values never fail its batch-mates.
"""
import time
from dataclasses import dataclass

import numpy as np

from api.errors import ApiError
from api.protocols import tfserving
from api.protocols.codecs import check_finite_outputs, dump_json, load_json
from api.queue.jobs import Job
from api.serving.registry import ModelRegistry, ServedVersion
from api.settings import Settings


@dataclass(frozen=True)
class Outcome:
    """What a job came to. `state`: succeeded or failed; `status`: the HTTP status `:predict` would answer;
    `answer`: its body (the predict document, or `{"error": ...}`), bytes of JSON. `retry`: the failure was
    the server's, not the job's (5xx: overload, a deadline, the model raising): leave the job for another
    delivery rather than fail it for good."""
    state: str
    status: int
    answer: bytes
    retry: bool = False


def failed(exc: ApiError) -> Outcome:
    return Outcome("failed", exc.status, dump_json({"error": exc.message}), retry=exc.status >= 500)


def run_jobs(registry: ModelRegistry, settings: Settings, jobs: list[Job], seconds: float) -> list[Outcome]:
    """One Outcome per job, in order; the compiled calls get `seconds` (a deadline) to finish."""
    outcomes: list[Outcome | None] = [None] * len(jobs)
    groups: dict[int, list[tuple[int, ServedVersion, tfserving.PredictRequest]]] = {}
    for index, job in enumerate(jobs):
        try:
            served = registry.get(job.model, job.version)
            document = load_json(job.body, settings.max_json_depth, tensors=True)
            request = tfserving.parse_predict(document, job.body, served.signature, settings)
        except ApiError as exc:
            outcomes[index] = failed(exc)
            continue
        groups.setdefault(id(served), []).append((index, served, request))
    deadline = time.monotonic() + seconds
    for group in groups.values():
        for index, outcome in _run_group(group, deadline):
            outcomes[index] = outcome
    return outcomes


def _run_group(group: list, deadline: float) -> list[tuple[int, Outcome]]:
    """Jobs for one version: one joined call, or job by job when it fails."""
    served = group[0][1]
    try:
        outputs = served.batcher.run(_join([request.inputs for _, _, request in group]), deadline)
    except ApiError as exc:
        if len(group) == 1:
            return [(group[0][0], failed(exc))]
        return [pair for item in group for pair in _run_group([item], deadline)]
    results, offset = [], 0
    for index, _, request in group:
        mine = {name: value[offset:offset + request.instances] for name, value in outputs.items()}
        offset += request.instances
        results.append((index, _answer(mine, request, served)))
    return results


def _answer(outputs: dict, request: tfserving.PredictRequest, served: ServedVersion) -> Outcome:
    try:
        check_finite_outputs(outputs)
        return Outcome("succeeded", 200, dump_json(tfserving.predict_response(outputs, request, served.signature)))
    except ApiError as exc:
        return failed(exc)


def _join(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
