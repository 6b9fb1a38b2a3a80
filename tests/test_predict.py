"""POST /predict and TensorFlow Serving's routes: formats, versions, images and top_k."""
import numpy as np
import pytest

from tests.conftest import WORDS, png_b64


def accuracy(predictions, labels) -> float:
    return float((np.argmax(np.asarray(predictions), axis=1) == labels).mean())


def test_predict_row_format_classifies_held_out_digits(http, digits):
    x, y = digits
    answer = http.post("/predict", json={"instances": x[:200].tolist()})
    assert answer.status == 200, answer.body
    predictions = answer.json["predictions"]
    assert np.asarray(predictions).shape == (200, 10)
    assert np.allclose(np.sum(predictions, axis=1), 1.0, atol=1e-4)  # softmax rows
    assert accuracy(predictions, y[:200]) >= 0.95


def test_columnar_inputs_answer_outputs_with_the_same_numbers(http, digits):
    x, _ = digits
    rows = http.post("/predict", json={"instances": x[:5].tolist()}).json["predictions"]
    columns = http.post("/predict", json={"inputs": x[:5].tolist()})
    assert columns.status == 200
    assert set(columns.json) == {"outputs"}
    assert np.allclose(columns.json["outputs"], rows, atol=1e-6)


def test_named_input_form_is_accepted(http, digits):
    x, _ = digits
    answer = http.post("/predict", json={"instances": [{"image": x[0].tolist()}], "signature_name": "serving_default"})
    assert answer.status == 200, answer.body


def test_top_k_lists_best_labels_first(http, digits):
    x, y = digits
    answer = http.post("/predict", json={"instances": x[:20].tolist(), "top_k": 3}).json
    assert len(answer["top_k"]) == 20
    for row, best, label in zip(answer["predictions"], answer["top_k"], y[:20]):
        scores = [entry["score"] for entry in best]
        assert scores == sorted(scores, reverse=True) and len(best) == 3
        assert best[0]["label"] == WORDS[int(np.argmax(row))]  # newest version: word labels
        assert scores[0] == pytest.approx(max(row), rel=1e-6)
    assert sum(best[0]["label"] == WORDS[label] for best, label in zip(answer["top_k"], y[:20])) >= 19


@pytest.mark.parametrize("size, fmt, minimum", [(8, "PNG", 0.95), (64, "PNG", 0.95), (64, "JPEG", 0.93)])
def test_digit_images_classify_as_well_as_numbers(http, digits, size, fmt, minimum):
    """The model's serving.json (grey, box resize, /255) turns an image back into the numbers."""
    x, y = digits
    n = 120
    numbers = np.argmax(http.post("/predict", json={"instances": x[:n].tolist()}).json["predictions"], axis=1)
    images = http.post("/predict", json={"instances": [{"b64": png_b64(img, size, fmt)} for img in x[:n]],
                                         "top_k": 1})
    assert images.status == 200, images.body
    from_images = np.argmax(images.json["predictions"], axis=1)
    assert (from_images == y[:n]).mean() >= minimum
    assert (from_images == numbers).mean() >= (1.0 if fmt == "PNG" and size == 8 else 0.95)


def test_image_and_numbers_mix_in_one_request(http, digits):
    x, _ = digits
    answer = http.post("/predict", json={"instances": [{"b64": png_b64(x[0])}, x[1].tolist()]})
    assert answer.status == 200, answer.body
    assert len(answer.json["predictions"]) == 2


def test_tf_serving_route_serves_newest_version_by_default(http, digits):
    x, y = digits
    newest = http.post("/v1/models/digits:predict", json={"instances": x[:1].tolist(), "top_k": 1}).json
    assert newest["top_k"][0][0]["label"] == WORDS[y[0]]  # version 2 has word labels


def test_a_request_may_name_an_older_version(http, digits):
    x, y = digits
    older = http.post("/v1/models/digits/versions/1:predict", json={"instances": x[:1].tolist(), "top_k": 1})
    assert older.status == 200
    assert older.json["top_k"][0][0]["label"] == str(y[0])


def test_model_status_lists_every_loaded_version(http):
    status = http.get("/v1/models/digits").json
    assert status == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in ("1", "2")]}
    assert http.get("/v1/models/digits/versions/1").status == 200


def test_metadata_has_tf_serving_signature_and_runtime(http):
    meta = http.get("/v1/models/digits/metadata").json
    assert meta["model_spec"] == {"name": "digits", "signature_name": "", "version": "2"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["image"]["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert meta["runtime"]["device"] == "/CPU:0"
    assert meta["runtime"]["labels"] == WORDS


def test_health_and_ready(http):
    assert http.get("/v2/health/live").json == {"live": True}  # the Open Inference Protocol's shapes
    assert http.get("/ready").json == {"status": "ready", "model": "digits", "versions": [1, 2]}
    assert http.get("/v2/health/ready").json == {"ready": True}
    assert http.get("/v2/models/digits/ready").json == {"name": "digits", "ready": True}


def test_a_digit_driven_out_of_range_is_a_422_naming_the_instance(http, digits):
    """Finite pixels alternating +3e38 and -3e38 make the model compute NaN: never a 200 with nulls. The
    422 names the instance and the output; the same request without it is answered."""
    x, _ = digits
    wild = np.where(np.indices((8, 8, 1)).sum(axis=0) % 2, 3.0e38, -3.0e38).astype(np.float32)
    batch = np.stack([x[0], x[1], wild])
    for path, body in [("/predict", {"instances": batch.tolist()}),
                       ("/v1/models/digits:predict", {"inputs": batch.tolist(), "top_k": 1}),
                       ("/v2/models/digits/infer", {"inputs": [{"name": "image", "shape": [3, 8, 8, 1],
                                                                "datatype": "FP32",
                                                                "data": batch.reshape(-1).tolist()}]})]:
        answer = http.post(path, json=body)
        assert answer.status == 422, answer.body[:300]
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json["error"].startswith(
            "instances [2] gave non-finite values (NaN or infinity) in output 'probabilities'")
    assert http.post("/predict", json={"instances": batch[:2].tolist()}).status == 200
