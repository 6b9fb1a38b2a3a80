"""The user mix: the locustfile's user classes, how many of each (locust's `weight`) and how long each waits
between its requests. Declared once, here, with no locust import: loadtest/locustfile.py gives its classes
these figures, and bench/soak.py paces its load by them (importing the locustfile would monkey-patch the
soak's own process with gevent)."""
from typing import NamedTuple


class Share(NamedTuple):
    weight: int
    """Users of this class for every `weight` users of another class of weight 1."""
    think_factor: float = 1.0
    """Times `--think-time`: the mean seconds this class waits between two requests."""
    requests: tuple[str, ...] = ()
    """The names its requests carry in locust's report (a prefix where a name varies per request)."""


MIX = {
    "PredictUser": Share(4, requests=("predict: one instance", "predict: small batch")),
    "ImageUser": Share(2, requests=("predict: b64 image, top_k",)),
    "TFServingUser": Share(1, requests=("tfserving: predict rows", "tfserving: predict columns")),
    "V2User": Share(1, requests=("v2: infer",)),
    "BadRequestUser": Share(1, think_factor=4.0, requests=("bad: ",)),  # a few percent of requests, not a fifth
}
WELL_FORMED = [name for name in MIX if name != "BadRequestUser"]
"""The classes whose requests a server must answer with a prediction: what real clients get."""
