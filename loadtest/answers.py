"""What a right answer looks like. Each check returns why an answer is wrong, or None when it is right:
locust marks a request failed with that reason (`catch_response`), so a 200 with a wrong body counts."""
import orjson


def _json(body: bytes) -> dict | None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def check_predict(status: int, body: bytes, rows: int, key: str = "predictions",
                  top_k: int | None = None) -> str | None:
    """TensorFlow Serving: one prediction per instance (`outputs` for the columnar format), top_k if asked."""
    answer = _json(body)
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    if answer is None or _batch_size(answer.get(key)) != rows:
        return f"expected {rows} {key}, got {body[:200]!r}"
    if top_k and [len(best) for best in answer.get("top_k") or []] != [top_k] * rows:
        return f"expected top_k of {top_k} per instance, got {body[:200]!r}"
    return None


def _batch_size(predictions) -> int | None:
    """Rows of a list of predictions, or of each output's list when a columnar answer names them."""
    if isinstance(predictions, dict):
        sizes = {len(value) if isinstance(value, list) else None for value in predictions.values()}
        return sizes.pop() if len(sizes) == 1 else None
    return len(predictions) if isinstance(predictions, list) else None


def check_v2(status: int, body: bytes, rows: int) -> str | None:
    """KServe v2: every output's first dimension is the batch."""
    answer = _json(body)
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    outputs = (answer or {}).get("outputs")
    if not outputs or any(output.get("shape", [None])[0] != rows for output in outputs):
        return f"expected outputs for {rows} instances, got {body[:200]!r}"
    return None


def check_refused(status: int, body: bytes, expected: int) -> str | None:
    """A bad request: the expected 4xx with {"error": "<message>"}, never a 5xx, a 200 or an HTML page."""
    if status != expected:
        return f"expected HTTP {expected}, got {status}: {body[:200]!r}"
    error = (_json(body) or {}).get("error")
    if not isinstance(error, str) or not error:
        return f"expected a JSON {{\"error\": ...}} body, got {body[:200]!r}"
    return None
