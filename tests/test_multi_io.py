"""Models with several inputs and several outputs, through both protocols, in-process (the Flask test
client): Keras archives and SavedModels, TensorFlow Serving's row and columnar formats, v2 JSON and
binary, output selection, metadata, name errors, top_k on a named output, and non-finite outputs (422).

Three small models, built here with Keras and saved into a temporary store as a user would:

- `pair`: inputs `a` [None, 4] and `b` [None, 3], concatenated, one softmax output `probabilities` [None, 5];
- `split`: one input `x` [None, 4] and a dict of two outputs, `y1` [None, 2] (tiny weights: always finite)
  and `y2` [None, 3] (softmax over large positive weights: x = 3e38 overflows it to NaN);
- `mixed`: an image `image` [None, 8, 8, 1] and a vector `meta` [None, 2] (an image input among others).
"""
import base64
import io
import shutil
import threading

import keras
import numpy as np
import orjson
import pytest
from PIL import Image

from api.http.app import registry_of
from tests.models import save_model, serve

HUGE = 3.0e38  # finite in float32; the split model's y2 overflows on it


def build_pair(store):
    keras.utils.set_random_seed(0)
    a, b = keras.Input(shape=(4,), name="a"), keras.Input(shape=(3,), name="b")
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    probabilities = keras.layers.Dense(5, activation="softmax", name="probabilities")(hidden)
    return save_model(keras.Model([a, b], probabilities), store, "pair")


def build_split(store):
    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(4,), name="x")
    d1 = keras.layers.Dense(2, name="d1")
    d2 = keras.layers.Dense(3, activation="softmax", name="d2")
    model = keras.Model(x, {"y1": d1(x), "y2": d2(x)})
    rng = np.random.default_rng(0)
    d1.set_weights([rng.uniform(-1e-3, 1e-3, (4, 2)).astype("float32"), np.zeros(2, "float32")])
    d2.set_weights([rng.uniform(0.5, 1.5, (4, 3)).astype("float32"), np.zeros(3, "float32")])
    return save_model(model, store, "split")


def build_mixed(store):
    keras.utils.set_random_seed(0)
    image, meta = keras.Input(shape=(8, 8, 1), name="image"), keras.Input(shape=(2,), name="meta")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), meta])
    model = save_model(keras.Model([image, meta], keras.layers.Dense(3, name="scores")(joined)), store, "mixed")
    (store / "mixed" / "1" / "serving.json").write_text('{"image": {"color_mode": "L", "resize": "box"}}')
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    store = tmp_path_factory.mktemp("multi_store")
    return store, {"pair": build_pair(store), "split": build_split(store), "mixed": build_mixed(store)}


@pytest.fixture(scope="module")
def pair(models, tmp_path_factory):
    # padded batches: every input is padded, and the padding never comes back
    return serve(models[0], tmp_path_factory, "pair", max_batch_size=8, allowed_batch_sizes=(2, 8))


@pytest.fixture(scope="module")
def split(models, tmp_path_factory):
    # a batch waits up to 0.4 s for company, so that concurrent requests share one call
    return serve(models[0], tmp_path_factory, "split", batch_timeout_micros=400_000)


@pytest.fixture(scope="module")
def mixed(models, tmp_path_factory):
    return serve(models[0], tmp_path_factory, "mixed")


def rng_rows(n: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, width), dtype=np.float32)


def own(model, inputs) -> dict[str, np.ndarray]:
    """The model's own answer, in this process, by output name (a single output as 'probabilities')."""
    result = model(inputs, training=False)
    if isinstance(result, dict):
        return {name: np.asarray(value) for name, value in result.items()}
    return {"probabilities": np.asarray(result)}


def post(app, path: str, document=None, body: bytes | None = None, headers=None):
    if document is not None:
        body, headers = orjson.dumps(document), {"Content-Type": "application/json"}
    return app.test_client().post(path, data=body, headers=headers or {})


def error_of(answer, status: int) -> str:
    assert answer.status_code == status, answer.get_data()[:400]
    document = answer.get_json()
    assert set(document) == {"error"}
    return document["error"]


# -- the runtime: signatures ------------------------------------------------------------------------
def test_signatures_list_every_input_and_output_in_the_models_order(pair, split, mixed):
    signature = registry_of(pair).get("pair").signature
    assert [(i.name, i.dtype.name, i.shape) for i in signature.inputs.values()] == [
        ("a", "float32", (None, 4)), ("b", "float32", (None, 3))]
    assert [(o.name, o.shape) for o in signature.outputs.values()] == [("probabilities", (None, 5))]
    signature = registry_of(split).get("split").signature
    assert list(signature.inputs) == ["x"]
    assert [(o.name, o.shape) for o in signature.outputs.values()] == [("y1", (None, 2)), ("y2", (None, 3))]
    assert list(registry_of(mixed).get("mixed").signature.inputs) == ["image", "meta"]
    assert registry_of(pair).get("pair").runtime.traces == 1


def test_the_runtime_takes_a_dict_and_answers_a_dict(models, pair, split):
    _, built = models
    a, b = rng_rows(3, 4, 1), rng_rows(3, 3, 2)
    runtime = registry_of(pair).get("pair").runtime
    answer = runtime.infer({"a": a, "b": b})
    assert list(answer) == ["probabilities"] and answer["probabilities"].shape == (3, 5)
    assert np.allclose(answer["probabilities"], own(built["pair"], {"a": a, "b": b})["probabilities"], atol=1e-6)
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        runtime.infer({"a": a})
    x = rng_rows(2, 4, 3)
    answer = registry_of(split).get("split").runtime.infer({"x": x})
    expected = own(built["split"], x)
    assert list(answer) == ["y1", "y2"]
    assert all(np.allclose(answer[name], expected[name], atol=1e-6) for name in ("y1", "y2"))


# -- TensorFlow Serving: two inputs -----------------------------------------------------------------
def test_row_format_takes_objects_keyed_by_input_name(models, pair):
    _, built = models
    a, b = rng_rows(5, 4, 10), rng_rows(5, 3, 11)
    answer = post(pair, "/v1/models/pair:predict",
                  {"instances": [{"a": ra.tolist(), "b": rb.tolist()} for ra, rb in zip(a, b)]})
    assert answer.status_code == 200, answer.get_data()
    predictions = np.asarray(answer.get_json()["predictions"])
    expected = own(built["pair"], {"a": a, "b": b})["probabilities"]
    assert predictions.shape == (5, 5) and np.allclose(predictions, expected, atol=1e-6)
    assert not np.allclose(predictions[0], predictions[1])  # each instance its own answer


def test_columnar_format_takes_named_tensors(models, pair):
    _, built = models
    a, b = rng_rows(3, 4, 20), rng_rows(3, 3, 21)
    answer = post(pair, "/v1/models/pair:predict", {"inputs": {"b": b.tolist(), "a": a.tolist()}})
    assert answer.status_code == 200, answer.get_data()
    assert set(answer.get_json()) == {"outputs"}
    expected = own(built["pair"], {"a": a, "b": b})["probabilities"]
    assert np.allclose(answer.get_json()["outputs"], expected, atol=1e-6)


def test_a_request_larger_than_a_batch_is_split_per_input_and_reassembled(models, pair):
    """max_batch_size 8, padded to 2 or 8: 11 instances run as 8 + 3 (padded to 8), every input alike."""
    _, built = models
    a, b = rng_rows(11, 4, 30), rng_rows(11, 3, 31)
    stats = registry_of(pair).get("pair").batcher.stats
    before = (stats.batches, stats.padded, stats.instances)
    answer = post(pair, "/v1/models/pair:predict", {"inputs": {"a": a.tolist(), "b": b.tolist()}})
    assert answer.status_code == 200, answer.get_data()
    expected = own(built["pair"], {"a": a, "b": b})["probabilities"]
    assert np.allclose(answer.get_json()["outputs"], expected, atol=1e-6)
    assert (stats.batches, stats.padded, stats.instances) == (before[0] + 2, before[1] + 16, before[2] + 11)


@pytest.mark.parametrize("document, words", [
    ({"instances": [{"a": [0.0] * 4}]}, "instances[0]: missing input(s) ['b']"),
    ({"instances": [{"a": [0.0] * 4, "b": [0.0] * 3}, {"a": [0.0] * 4, "b": [0.0] * 3, "c": [1]}]},
     "instances[1]: unknown input name(s) ['c']"),
    ({"instances": [{"a": [0.0] * 4, "c": [0.0] * 3}]}, "missing input(s) ['b'] and unknown input name(s) ['c']"),
    ({"inputs": {"a": [[0.0] * 4]}}, "'inputs': missing input(s) ['b']; this model's inputs are ['a', 'b']"),
    ({"inputs": {"a": [[0.0] * 4], "b": [[0.0] * 3], "z": [[1.0]]}}, "unknown input name(s) ['z']"),
    ({"instances": [[0.0] * 4]}, "instances[0] must be an object keyed by input name"),
    ({"inputs": [[0.0] * 4]}, "instances[0] must be an object keyed by input name".replace("instances", "inputs")),
    ({"inputs": {"a": [[0.0] * 4] * 2, "b": [[0.0] * 3]}}, "same number of instances, got {'a': 2, 'b': 1}"),
    ({"inputs": {"a": [[0.0] * 4], "b": [[0.0] * 4]}}, "'inputs.b' has instances of shape [4]; the model takes [3]"),
    ({"instances": [{"a": [0.0] * 4, "b": [0.0] * 2}]}, "'instances.b' has instances of shape [2]"),
    ({"instances": [{"a": [0.0] * 4, "b": {"b64": "AAAA"}}]},
     "instances[0].b: this model's input [3] cannot be fed from a RGB image"),
])
def test_missing_unknown_and_misshapen_inputs_are_a_400_naming_them(pair, document, words):
    assert words in error_of(post(pair, "/v1/models/pair:predict", document), 400)


# -- TensorFlow Serving: two outputs ----------------------------------------------------------------
def test_several_outputs_answer_objects_per_instance_and_named_tensors(models, split):
    _, built = models
    x = rng_rows(4, 4, 40)
    expected = own(built["split"], x)
    rows = post(split, "/v1/models/split:predict", {"instances": x.tolist()})
    assert rows.status_code == 200, rows.get_data()
    predictions = rows.get_json()["predictions"]
    assert len(predictions) == 4 and all(set(p) == {"y1", "y2"} for p in predictions)
    for name in ("y1", "y2"):
        assert np.allclose([p[name] for p in predictions], expected[name], atol=1e-6)
    columns = post(split, "/v1/models/split:predict", {"inputs": {"x": x.tolist()}})
    assert columns.status_code == 200, columns.get_data()
    outputs = columns.get_json()["outputs"]
    assert set(outputs) == {"y1", "y2"}
    assert all(np.allclose(outputs[name], expected[name], atol=1e-6) for name in ("y1", "y2"))


def test_top_k_ranks_the_first_output_or_the_one_named(models, split):
    _, built = models
    x = rng_rows(3, 4, 50)
    expected = own(built["split"], x)
    first = post(split, "/predict", {"instances": x.tolist(), "top_k": 2}).get_json()["top_k"]
    assert [[int(e["label"]) for e in row] for row in first] == np.argsort(-expected["y1"], axis=1)[:, :2].tolist()
    named = post(split, "/predict", {"instances": x.tolist(), "top_k": {"k": 3, "output": "y2"}})
    assert named.status_code == 200, named.get_data()
    for row, scores in zip(named.get_json()["top_k"], expected["y2"]):
        assert [int(e["label"]) for e in row] == np.argsort(-scores, kind="stable").tolist()
        assert np.allclose([e["score"] for e in row], np.sort(scores)[::-1], atol=1e-6)
    assert "unknown output 'y3'" in error_of(post(split, "/predict", {"instances": x.tolist(),
                                                                     "top_k": {"k": 1, "output": "y3"}}), 400)
    assert "the 2 classes of output 'y1'" in error_of(post(split, "/predict", {"instances": x.tolist(),
                                                                              "top_k": 3}), 400)
    assert "top_k must be" in error_of(post(split, "/predict", {"instances": x.tolist(), "top_k": {"n": 1}}), 400)


# -- metadata ---------------------------------------------------------------------------------------
def test_metadata_of_both_protocols_lists_every_input_and_output(pair, split):
    meta = pair.test_client().get("/v1/models/pair/metadata").get_json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert {name: [d["size"] for d in t["tensor_shape"]["dim"]] for name, t in signature["inputs"].items()} == {
        "a": ["-1", "4"], "b": ["-1", "3"]}
    assert {t["dtype"] for t in signature["inputs"].values()} == {"DT_FLOAT"}
    assert list(signature["outputs"]) == ["probabilities"]
    assert meta["runtime"]["top_k_output"] == "probabilities"
    v2 = split.test_client().get("/v2/models/split").get_json()
    assert v2["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert v2["outputs"] == [{"name": "y1", "datatype": "FP32", "shape": [-1, 2]},
                             {"name": "y2", "datatype": "FP32", "shape": [-1, 3]}]
    v2 = pair.test_client().get("/v2/models/pair").get_json()
    assert [(t["name"], t["shape"]) for t in v2["inputs"]] == [("a", [-1, 4]), ("b", [-1, 3])]


# -- v2 ---------------------------------------------------------------------------------------------
def v2_tensor(name: str, array: np.ndarray, binary: bool = False) -> dict:
    tensor = {"name": name, "shape": list(array.shape), "datatype": "FP32"}
    if binary:
        tensor["parameters"] = {"binary_data_size": array.nbytes}
    else:
        tensor["data"] = array.reshape(-1).tolist()
    return tensor


def v2_binary(inputs: dict[str, np.ndarray], outputs=None) -> tuple[bytes, dict]:
    """What tritonclient sends, by hand: the JSON header, then each input's little-endian bytes in order."""
    document = {"inputs": [v2_tensor(name, array, binary=True) for name, array in inputs.items()]}
    if outputs is not None:
        document["outputs"] = outputs
    head = orjson.dumps(document)
    body = head + b"".join(np.ascontiguousarray(array, dtype="<f4").tobytes() for array in inputs.values())
    return body, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def v2_outputs(answer) -> dict[str, np.ndarray]:
    """A v2 answer's outputs by name, JSON data or binary, as arrays of their shapes."""
    assert answer.status_code == 200, answer.get_data()[:400]
    content = answer.get_data()
    length = int(answer.headers.get("Inference-Header-Content-Length", len(content)))
    document, offset, found = orjson.loads(content[:length]), length, {}
    for tensor in document["outputs"]:
        if "data" in tensor:
            found[tensor["name"]] = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        else:
            size = tensor["parameters"]["binary_data_size"]
            found[tensor["name"]] = np.frombuffer(content[offset:offset + size], "<f4").reshape(tensor["shape"])
            offset += size
    assert offset == len(content)
    return found


def test_v2_json_takes_every_input_by_name(models, pair):
    _, built = models
    a, b = rng_rows(3, 4, 60), rng_rows(3, 3, 61)
    answer = post(pair, "/v2/models/pair/infer", {"id": "r-1", "inputs": [v2_tensor("b", b), v2_tensor("a", a)]})
    outputs = v2_outputs(answer)
    assert answer.get_json()["id"] == "r-1"
    assert np.allclose(outputs["probabilities"], own(built["pair"], {"a": a, "b": b})["probabilities"], atol=1e-6)


def test_v2_binary_inputs_take_their_bytes_in_order(models, pair):
    _, built = models
    a, b = rng_rows(4, 4, 70), rng_rows(4, 3, 71)
    body, headers = v2_binary({"b": b, "a": a}, outputs=[{"name": "probabilities",
                                                          "parameters": {"binary_data": True}}])
    answer = post(pair, "/v2/models/pair/infer", body=body, headers=headers)
    assert answer.headers["Content-Type"] == "application/octet-stream"
    outputs = v2_outputs(answer)
    assert np.allclose(outputs["probabilities"], own(built["pair"], {"a": a, "b": b})["probabilities"], atol=1e-6)


def test_v2_outputs_are_selected_by_name_and_an_empty_list_means_all(models, split):
    _, built = models
    x = rng_rows(2, 4, 80)
    expected = own(built["split"], x)
    only = v2_outputs(post(split, "/v2/models/split/infer", {"inputs": [v2_tensor("x", x)],
                                                            "outputs": [{"name": "y2"}]}))
    assert list(only) == ["y2"] and np.allclose(only["y2"], expected["y2"], atol=1e-6)
    body, headers = v2_binary({"x": x}, outputs=[])
    every = v2_outputs(post(split, "/v2/models/split/infer", body=body, headers=headers))
    assert list(every) == ["y1", "y2"]
    assert all(np.allclose(every[name], expected[name], atol=1e-6) for name in ("y1", "y2"))
    body, headers = v2_binary({"x": x}, outputs=[{"name": "y2", "parameters": {"binary_data": True}},
                                                 {"name": "y1"}])
    both = post(split, "/v2/models/split/infer", body=body, headers=headers)
    assert both.headers["Content-Type"] == "application/octet-stream"
    both = v2_outputs(both)
    assert list(both) == ["y2", "y1"] and np.allclose(both["y1"], expected["y1"], atol=1e-6)


@pytest.mark.parametrize("inputs, words", [
    ([("a", (1, 4))], "missing input(s) ['b']; the model's inputs are ['a', 'b']"),
    ([("a", (1, 4)), ("b", (1, 3)), ("c", (1, 1))], "unknown input 'c'; the model's inputs are ['a', 'b']"),
    ([("a", (1, 4)), ("a", (1, 4))], "input 'a' is given twice"),
    ([("a", (2, 4)), ("b", (1, 3))], "same batch dimension, got {'a': 2, 'b': 1}"),
    ([("a", (1, 4)), ("b", (1, 4))], "input 'b' has instances of shape [4]; the model takes [3]"),
])
def test_v2_missing_unknown_and_misshapen_inputs_are_a_400_naming_them(pair, inputs, words):
    document = {"inputs": [v2_tensor(name, np.zeros(shape, np.float32)) for name, shape in inputs]}
    assert words in error_of(post(pair, "/v2/models/pair/infer", document), 400)


def test_v2_binary_checks_each_inputs_dtype_and_size(pair):
    a, b = np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32)
    body, headers = v2_binary({"a": a, "b": b})
    wrong = orjson.loads(body[:int(headers["Inference-Header-Content-Length"])])
    wrong["inputs"][1]["datatype"] = "FP64"
    head = orjson.dumps(wrong)
    answer = post(pair, "/v2/models/pair/infer", body=head + a.tobytes() + b.tobytes(),
                  headers={"Inference-Header-Content-Length": str(len(head))})
    assert "input 'b': datatype 'FP64' does not match the model's FP32" in error_of(answer, 400)
    short = body[:-4]  # b's bytes cut short
    answer = post(pair, "/v2/models/pair/infer", body=short, headers=headers)
    assert "input 'b': binary_data_size 12 is more than the 8 bytes left" in error_of(answer, 400)


# -- an image among other inputs --------------------------------------------------------------------
def png_b64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype("uint8"), mode="L").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_an_image_input_takes_b64_beside_a_numeric_one(models, mixed):
    _, built = models
    pixels = np.random.default_rng(90).integers(0, 256, (2, 8, 8))
    meta = rng_rows(2, 2, 91)
    answer = post(mixed, "/predict", {"instances": [{"image": {"b64": png_b64(p)}, "meta": m.tolist()}
                                                    for p, m in zip(pixels, meta)]})
    assert answer.status_code == 200, answer.get_data()
    images = (pixels / 255.0).astype(np.float32)[..., None]  # serving.json's default: grey, / 255
    expected = np.asarray(built["mixed"]({"image": images, "meta": meta}, training=False))
    assert np.allclose(answer.get_json()["predictions"], expected, atol=1e-5)
    numbers = post(mixed, "/predict", {"inputs": {"image": images.tolist(), "meta": meta.tolist()}})
    assert np.allclose(numbers.get_json()["outputs"], expected, atol=1e-5)
    refused = post(mixed, "/predict", {"instances": [{"image": images[0].tolist(), "meta": {"b64": png_b64(pixels[0])}}]})
    assert "instances[0].meta: this model's input [2] cannot be fed from a L image" in error_of(refused, 400)


# -- non-finite outputs -----------------------------------------------------------------------------
def test_non_finite_outputs_are_a_422_naming_instances_and_outputs(split):
    x = rng_rows(4, 4, 100)
    x[[1, 3]] = HUGE
    message = error_of(post(split, "/v1/models/split:predict", {"instances": x.tolist()}), 422)
    assert message.startswith("instances [1, 3] gave non-finite values (NaN or infinity) in output 'y2'")
    assert "'y1'" not in message  # y1 stays finite
    assert "instances [1, 3]" in error_of(post(split, "/predict", {"inputs": {"x": x.tolist()}}), 422)
    v2_json = post(split, "/v2/models/split/infer", {"inputs": [v2_tensor("x", x)]})
    assert "instances [1, 3] gave non-finite values (NaN or infinity) in output 'y2'" in error_of(v2_json, 422)
    body, headers = v2_binary({"x": x}, outputs=[{"name": "y2", "parameters": {"binary_data": True}}])
    assert "in output 'y2'" in error_of(post(split, "/v2/models/split/infer", body=body, headers=headers), 422)
    # y1 alone is finite: asking for it only is answered
    fine = v2_outputs(post(split, "/v2/models/split/infer", {"inputs": [v2_tensor("x", x)],
                                                            "outputs": [{"name": "y1"}]}))
    assert np.isfinite(fine["y1"]).all() and fine["y1"].shape == (4, 2)


def test_a_non_finite_request_never_harms_its_batch_mates(models, split):
    """Two requests in one compiled call (the batch waits 0.4 s for company): the one whose rows overflow
    gets 422, its batch-mate its own finite answer, equal to the model's."""
    _, built = models
    healthy, sick = rng_rows(2, 4, 110), rng_rows(3, 4, 111)
    sick[2] = HUGE
    stats = registry_of(split).get("split").batcher.stats
    batches, requests = stats.batches, stats.requests
    answers = {}
    start = threading.Barrier(2)

    def send(label, x):
        client = split.test_client()
        start.wait()
        answers[label] = client.post("/v1/models/split:predict", json={"instances": x.tolist()})

    threads = [threading.Thread(target=send, args=("healthy", healthy)), threading.Thread(target=send, args=("sick", sick))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert (stats.batches - batches, stats.requests - requests) == (1, 2)  # one call, both requests
    assert error_of(answers["sick"], 422).startswith("instances [2] gave non-finite values")
    assert answers["healthy"].status_code == 200, answers["healthy"].get_data()
    expected = own(built["split"], healthy)
    predictions = answers["healthy"].get_json()["predictions"]
    assert all(np.allclose([p[name] for p in predictions], expected[name], atol=1e-6) for name in ("y1", "y2"))


def test_digits_driven_out_of_range_is_a_422_not_nulls(client, digits):
    """The issue's case: finite pixels alternating +3e38 and -3e38 make the digits model compute NaN."""
    x, _ = digits
    wild = np.where(np.indices((8, 8, 1)).sum(axis=0) % 2, HUGE, -HUGE).astype(np.float32)
    batch = np.stack([x[0], wild, x[1]])
    answer = client.post("/predict", json={"instances": batch.tolist()})
    assert error_of(answer, 422).startswith("instances [1] gave non-finite values (NaN or infinity) in output "
                                            "'probabilities'")
    v2 = client.post("/v2/models/digits/infer", json={"inputs": [{"name": "image", "shape": [3, 8, 8, 1],
                                                                  "datatype": "FP32",
                                                                  "data": batch.reshape(-1).tolist()}]})
    assert "instances [1]" in error_of(v2, 422)
    assert client.post("/predict", json={"instances": batch[[0, 2]].tolist()}).status_code == 200


# -- SavedModels get the same treatment -------------------------------------------------------------
def test_savedmodel_versions_serve_several_inputs_and_outputs(models, tmp_path_factory):
    store, built = models
    saved = tmp_path_factory.mktemp("saved_store")
    built["pair"].export(str(saved / "pair" / "1"), format="tf_saved_model", verbose=False)
    built["split"].export(str(saved / "split" / "1"), format="tf_saved_model", verbose=False)
    a, b, x = rng_rows(3, 4, 120), rng_rows(3, 3, 121), rng_rows(3, 4, 122)
    app = serve(saved, tmp_path_factory, "pair")
    signature = registry_of(app).get("pair").signature
    assert signature.format == "saved_model" and list(signature.inputs) == ["a", "b"]
    (output,) = signature.outputs
    answer = post(app, "/predict", {"instances": [{"a": ra.tolist(), "b": rb.tolist()} for ra, rb in zip(a, b)]})
    assert answer.status_code == 200, answer.get_data()
    assert np.allclose(answer.get_json()["predictions"], own(built["pair"], {"a": a, "b": b})["probabilities"],
                       atol=1e-6)
    app = serve(saved, tmp_path_factory, "split")
    assert list(registry_of(app).get("split").signature.outputs) == ["y1", "y2"]
    expected = own(built["split"], x)
    outputs = v2_outputs(post(app, "/v2/models/split/infer", {"inputs": [v2_tensor("x", x)]}))
    assert all(np.allclose(outputs[name], expected[name], atol=1e-6) for name in ("y1", "y2"))
    x[0] = HUGE
    assert "instances [0]" in error_of(post(app, "/predict", {"instances": x.tolist()}), 422)
    shutil.rmtree(saved)


# -- in a real gunicorn worker (gevent; the model on the event loop or a native thread) --------------
def test_a_real_worker_serves_both_protocols_with_two_inputs(models, tmp_path_factory):
    import requests
    import tritonclient.http as triton

    from tests.servers import Gunicorn

    store, built = models
    gunicorn = Gunicorn(tmp_path_factory.mktemp("gunicorn_pair"), model_store=store, model_name="pair", workers=1)
    try:
        gunicorn.wait_ready()
        a, b = rng_rows(6, 4, 130), rng_rows(6, 3, 131)
        expected = own(built["pair"], {"a": a, "b": b})["probabilities"]
        rows = requests.post(gunicorn.url + "/v1/models/pair:predict", timeout=30, json={
            "instances": [{"a": ra.tolist(), "b": rb.tolist()} for ra, rb in zip(a, b)]})
        assert rows.status_code == 200, rows.text
        assert np.allclose(rows.json()["predictions"], expected, atol=1e-6)
        with triton.InferenceServerClient(gunicorn.url.removeprefix("http://")) as client:
            tensors = [triton.InferInput("a", list(a.shape), "FP32"),
                       triton.InferInput("b", list(b.shape), "FP32")]
            tensors[0].set_data_from_numpy(a, binary_data=True)
            tensors[1].set_data_from_numpy(b, binary_data=False)
            result = client.infer("pair", tensors)
            assert np.allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
            assert [t["name"] for t in client.get_model_metadata("pair")["inputs"]] == ["a", "b"]
    finally:
        gunicorn.stop()
