"""KServe / Open Inference Protocol v2, proven with Triton's own client (tritonclient[http])."""
import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


def test_health_and_server_metadata(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits")
    assert triton_client.is_model_ready("digits", "1")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]


def test_model_metadata(triton_client):
    meta = triton_client.get_model_metadata("digits")
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False, None], ids=["binary-out", "json-out", "default-out"])
def test_tritonclient_round_trip_matches_predict(triton_client, server, digits, binary_in, binary_out):
    x, y = digits
    batch = x[:16].astype(np.float32)
    tensor = triton.InferInput("image", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary_in)
    outputs = None if binary_out is None else [triton.InferRequestedOutput("probabilities", binary_data=binary_out)]
    result = triton_client.infer("digits", [tensor], outputs=outputs, request_id="r-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (16, 10) and probabilities.dtype == np.float32
    expected = requests.post(server.url + "/predict", json={"instances": batch.tolist()}, timeout=10).json()
    assert np.allclose(probabilities, expected["predictions"], atol=1e-6)
    assert (probabilities.argmax(axis=1) == y[:16]).mean() >= 0.9
    response = result.get_response()
    assert response["model_name"] == "digits" and response["model_version"] == "2" and response["id"] == "r-1"


def test_tritonclient_can_pin_a_version(triton_client, digits):
    x, _ = digits
    tensor = triton.InferInput("image", [1, 8, 8, 1], "FP32")
    tensor.set_data_from_numpy(x[:1].astype(np.float32))
    assert triton_client.infer("digits", [tensor], model_version="1").get_response()["model_version"] == "1"


def test_tritonclient_sees_errors_as_exceptions_with_our_message(triton_client):
    tensor = triton.InferInput("image", [1, 8, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 8, 8), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        triton_client.infer("digits", [tensor])
    with pytest.raises(InferenceServerException, match="not served here"):
        triton_client.get_model_metadata("nope")


def test_binary_extension_on_the_wire(server, digits):
    """What tritonclient sends, by hand: JSON header, then little-endian tensor bytes, both ways."""
    import orjson
    x, _ = digits
    batch = np.ascontiguousarray(x[:3], dtype="<f4")
    head = orjson.dumps({"inputs": [{"name": "image", "shape": [3, 8, 8, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": batch.nbytes}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]})
    answer = requests.post(server.url + "/v2/models/digits/infer", data=head + batch.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(head))}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/octet-stream"
    length = int(answer.headers["Inference-Header-Content-Length"])
    document = orjson.loads(answer.content[:length])
    (output,) = document["outputs"]
    assert output["parameters"]["binary_data_size"] == 3 * 10 * 4 == len(answer.content) - length
    probabilities = np.frombuffer(answer.content[length:], dtype="<f4").reshape(output["shape"])
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_non_finite_answer_is_an_exception_naming_the_instance_binary_or_not(triton_client):
    """Finite inputs that drive the model to NaN: a 422 tritonclient raises, never NaN in a 200."""
    wild = np.where(np.indices((8, 8, 1)).sum(axis=0) % 2, 3.0e38, -3.0e38).astype(np.float32)
    batch = np.stack([np.zeros((8, 8, 1), np.float32), wild])
    for binary in (True, False):
        tensor = triton.InferInput("image", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        output = triton.InferRequestedOutput("probabilities", binary_data=binary)
        with pytest.raises(InferenceServerException, match=r"instances \[1\] gave non-finite values") as raised:
            triton_client.infer("digits", [tensor], outputs=[output])
        assert raised.value.status() == "422"
