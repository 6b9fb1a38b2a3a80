"""The errors a request can end in, each with its HTTP status, always answered as `{"error": "..."}`.

The status mapping follows TensorFlow Serving's (invalid argument 400, not found 404, resource
exhausted 429, unavailable 503, deadline exceeded 504) plus 413 and 415 for the body itself, and 422
for a finite request the model answered with NaN or infinity (NonFiniteOutput), or whose string output
cannot be written as the request asked (UnrepresentableOutput: bytes that are not UTF-8, as JSON).
"""


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class NonFiniteOutput(ApiError):
    """422 Unprocessable Content: the request was valid, but the model computed NaN or infinity for some of
    its instances (values that drive it out of range). JSON cannot carry them (they would go out as
    `null`), so no route answers 200 with them; the message names the instances and the outputs."""
    status = 422


class UnrepresentableOutput(ApiError):
    """422 Unprocessable Content: the request was valid, but an output it asked for cannot be written in the
    form it asked for: a string output holding bytes that are not valid UTF-8, asked for as v2 JSON (JSON
    strings are Unicode). The message names the output and says how to ask for it (binary)."""
    status = 422


class Unavailable(ApiError):
    status = 503

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, {"Retry-After": str(retry_after)})


class DeadlineExceeded(ApiError):
    status = 504


class InferenceFailed(ApiError):
    """The model raised: 400 when it refused the values (TensorFlow's invalid argument), else 500."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status
