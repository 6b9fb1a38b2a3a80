"""Property-based tests (Hypothesis): the parsers answer any JSON with a result or an ApiError, never a crash."""
import json
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from api import tfserving
from api.codecs import json_depth
from api.errors import ApiError
from api.settings import Settings
from api.store import ServingConfig

SCALARS = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=8)
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                         max_leaves=40)


def reference_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


@given(DOCUMENTS)
def test_json_depth_matches_a_recursive_count(document):
    assert json_depth(json.dumps(document).encode()) == reference_depth(document)


RUNTIME = SimpleNamespace(
    input=SimpleNamespace(name="image", dtype=np.dtype("float32"), instance_shape=(2, 2)),
    version=SimpleNamespace(serving=ServingConfig()))
SETTINGS = Settings(max_instances=8)
PREDICT = st.fixed_dictionaries({}, optional={"instances": DOCUMENTS, "inputs": DOCUMENTS, "top_k": DOCUMENTS,
                                              "signature_name": DOCUMENTS})


@hsettings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(PREDICT | st.dictionaries(st.text(max_size=5), DOCUMENTS, max_size=3))
def test_parse_predict_returns_a_batch_or_raises_an_api_error(document):
    body = json.dumps(document).encode()
    try:
        request = tfserving.parse_predict(document, body, RUNTIME, SETTINGS)
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert request.batch.dtype == np.float32 and request.batch.shape[1:] == (2, 2)
    assert np.isfinite(request.batch).all()


@given(st.lists(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2), min_size=2, max_size=2),
                min_size=1, max_size=8))
def test_valid_instances_always_parse_to_the_same_numbers(instances):
    document = {"instances": instances}
    request = tfserving.parse_predict(document, json.dumps(document).encode(), RUNTIME, SETTINGS)
    assert np.allclose(request.batch, np.asarray(instances, dtype=np.float32))
