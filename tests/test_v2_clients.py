"""KServe v2 as Triton's and KServe's clients use it (api/protocols/v2.py): top-level keys the protocol
does not define are ignored, Triton's classification extension answers `"score:index:label"` strings,
and a parameter of an extension we do not implement is a 400 naming it, never silently ignored."""
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import WORDS


def body(instances, **extra) -> dict:
    batch = np.asarray(instances, dtype=np.float32)
    return {"inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32",
                        "data": batch.reshape(-1).tolist()}], **extra}


def probabilities(client, instances) -> np.ndarray:
    answer = client.post("/v2/models/digits/infer", json=body(instances))
    assert answer.status_code == 200, answer.get_json()
    (output,) = answer.get_json()["outputs"]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def test_keys_the_protocol_does_not_define_are_ignored(client, digits):
    """KServe's SDK always sends `model_name`; Triton's own binary-extension example has it too."""
    answer = client.post("/v2/models/digits/infer",
                         json=body(digits[0][:2], model_name="digits", model_version="2", extra={"a": 1}))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["outputs"][0]["shape"] == [2, 10]


def test_the_server_lists_the_classification_extension(client):
    assert client.get("/v2").get_json()["extensions"] == ["binary_tensor_data", "classification"]


def test_classification_answers_the_best_classes_as_score_index_label_best_first(client, digits):
    x = digits[0][:4]
    scores = probabilities(client, x)
    answer = client.post("/v2/models/digits/infer", json=body(
        x, outputs=[{"name": "probabilities", "parameters": {"classification": 3}}]))
    assert answer.status_code == 200, answer.get_json()
    (output,) = answer.get_json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [4, 3]
    rows = np.array(output["data"]).reshape(4, 3)
    for row, expected in zip(rows, scores):
        best = np.argsort(-expected, kind="stable")[:3]
        assert [int(item.split(":")[1]) for item in row] == best.tolist()
        assert [item.split(":")[2] for item in row] == [WORDS[i] for i in best]  # version 2's labels
        assert np.allclose([float(item.split(":")[0]) for item in row], expected[best], atol=1e-6)


@pytest.mark.parametrize("value", [0, 11, "3", True, 2.5])
def test_a_bad_classification_count_is_a_400_naming_the_output(client, digits, value):
    answer = client.post("/v2/models/digits/infer", json=body(
        digits[0][:1], outputs=[{"name": "probabilities", "parameters": {"classification": value}}]))
    assert answer.status_code == 400
    assert "output 'probabilities': classification must be an integer from 1 to its 10 classes" in \
        answer.get_json()["error"]


@pytest.mark.parametrize("where, parameter, extension", [
    ("request", "sequence_id", "sequence"), ("request", "priority", "schedule_policy"),
    ("request", "timeout", "schedule_policy"), ("input", "shared_memory_region", "shared_memory"),
    ("output", "shared_memory_byte_size", "shared_memory"),
])
def test_a_parameter_of_an_extension_we_do_not_implement_is_refused_naming_it(client, digits, where, parameter,
                                                                                extension):
    request = body(digits[0][:1])
    if where == "request":
        request["parameters"] = {parameter: 1}
    elif where == "input":
        request["inputs"][0]["parameters"] = {parameter: "region"}
    else:
        request["outputs"] = [{"name": "probabilities", "parameters": {parameter: 40}}]
    answer = client.post("/v2/models/digits/infer", data=orjson.dumps(request), content_type="application/json")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert f"'{parameter}' belongs to Triton's {extension} extension" in error and "does not implement" in error


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_class_count_through_a_real_server(triton_client, digits, binary):
    x = digits[0][:5].astype(np.float32)
    tensor = triton.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    full = triton_client.infer("digits", [tensor]).as_numpy("probabilities")
    top = triton_client.infer("digits", [tensor], outputs=[
        triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)]).as_numpy("probabilities")
    assert top.shape == (5, 2)
    for row, scores in zip(top, full):
        items = [(item.decode() if isinstance(item, bytes) else item).split(":") for item in row]
        best = np.argsort(-scores, kind="stable")[:2]
        assert [int(index) for _, index, _ in items] == best.tolist()
        assert [label for _, _, label in items] == [WORDS[i] for i in best]


def test_tritonclient_sees_an_unimplemented_extension_refused(triton_client, digits):
    tensor = triton.InferInput("image", [1, 8, 8, 1], "FP32")
    tensor.set_data_from_numpy(digits[0][:1].astype(np.float32))
    with pytest.raises(InferenceServerException, match="sequence extension"):
        triton_client.infer("digits", [tensor], sequence_id=7, sequence_start=True)
