"""Every dtype the protocols carry, strings and bytes included, end to end, in-process (the Flask test
client) and, at the end, through tritonclient against a real gunicorn worker.

Three small Keras models, built here and saved into a temporary store as a user would (each loads in
safe mode, as api/runtime.py loads every archive):

- `words`: one string input `words` [None, 3] -> StringLookup (multi-hot over a fixed vocabulary) ->
  softmax `probabilities` [None, 4]: strings in, numbers out. Served with padded batches (2 or 8), so the
  batcher pads strings with b"".
- `tagger`: a string input `text` [None] (a scalar string per instance) -> TextVectorization (fixed
  vocabulary) -> Embedding -> pooling, beside a float input `weight` [None, 1]; outputs `probs` [None, 3],
  `label` [None] (argmax -> StringLookup(invert=True): a string output, which Keras itself declares int64),
  `echo` [None] (the text as it came: any bytes, UTF-8 or not) and `raw_bytes` [None] (the same, under a
  name ending in `_bytes`: TensorFlow Serving answers such a tensor base64 always).
- `typed`: inputs `ids` int32 [None, 4], `pixels` uint8 [None, 4], `flags` bool [None, 2] -> `scores`
  [None, 3]: integer and boolean inputs, checked against their dtype's range.

Every served answer is compared with the model's own output, in this process, for the same values.
"""
import base64
import json
import shutil
import threading
import time

import keras
import numpy as np
import orjson
import pytest
import tensorflow as tf

from api.batching import Batcher
from api.http.app import registry_of
from api.protocols import codecs
from api.settings import BatchPolicy, Settings
from tests.models import save_model, serve

VOCABULARY = ["cat", "dog", "bird", "fish", "caf\u00e9"]
TEXT_VOCABULARY = ["red", "green", "blue", "cat", "dog", "bird"]
LABELS = ["colour", "animal\u00e9"]


def build_words(store):
    keras.utils.set_random_seed(0)
    words = keras.Input(shape=(3,), dtype="string", name="words")
    hot = keras.layers.StringLookup(vocabulary=VOCABULARY, output_mode="multi_hot", name="lookup")(words)
    probabilities = keras.layers.Dense(4, activation="softmax", name="probabilities")(hot)
    return save_model(keras.Model(words, probabilities), store, "words")


def build_tagger(store):
    keras.utils.set_random_seed(1)
    text = keras.Input(shape=(), dtype="string", name="text")
    weight = keras.Input(shape=(1,), name="weight")
    ids = keras.layers.TextVectorization(vocabulary=TEXT_VOCABULARY, output_mode="int",
                                         output_sequence_length=4, name="vectorize")(text)
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(len(TEXT_VOCABULARY) + 2, 4)(ids))
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(
        keras.layers.Concatenate()([pooled, weight]))
    best = keras.ops.argmax(probs, axis=-1)
    label = keras.layers.StringLookup(vocabulary=LABELS, invert=True, name="label")(best)
    echo = keras.layers.Identity(name="echo")(text)
    raw = keras.layers.Identity(name="raw")(text)
    model = keras.Model({"text": text, "weight": weight},
                        {"probs": probs, "label": label, "echo": echo, "raw_bytes": raw})
    return save_model(model, store, "tagger")


def build_typed(store):
    keras.utils.set_random_seed(2)
    ids = keras.Input(shape=(4,), dtype="int32", name="ids")
    pixels = keras.Input(shape=(4,), dtype="uint8", name="pixels")
    flags = keras.Input(shape=(2,), dtype="bool", name="flags")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(10, 2)(ids))
    scaled = keras.layers.Rescaling(1 / 255)(pixels)
    joined = keras.layers.Concatenate()([embedded, scaled, keras.ops.cast(flags, "float32")])
    model = keras.Model([ids, pixels, flags], keras.layers.Dense(3, name="scores")(joined))
    return save_model(model, store, "typed")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    store = tmp_path_factory.mktemp("strings_store")
    return store, {"words": build_words(store), "tagger": build_tagger(store), "typed": build_typed(store)}


@pytest.fixture(scope="module")
def words(models, tmp_path_factory):
    # padded batches (2 or 8): the padding of a string input is b"", and never comes back
    return serve(models[0], tmp_path_factory, "words", max_batch_size=8, allowed_batch_sizes=(2, 8))


@pytest.fixture(scope="module")
def tagger(models, tmp_path_factory):
    return serve(models[0], tmp_path_factory, "tagger")


@pytest.fixture(scope="module")
def typed(models, tmp_path_factory):
    return serve(models[0], tmp_path_factory, "typed")


def strings(rows) -> np.ndarray:
    """Python strings or bytes as the object array of bytes a tf.string tensor is."""
    array = np.asarray(rows, dtype=object)
    flat = [v.encode() if isinstance(v, str) else v for v in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


def own(model, inputs) -> dict[str, np.ndarray]:
    """The model's own answer in this process, by output name (a single output as 'probabilities')."""
    if isinstance(inputs, dict):
        inputs = {k: tf.constant(v) for k, v in inputs.items()}
    elif isinstance(inputs, list):
        inputs = [tf.constant(v) for v in inputs]
    else:
        inputs = tf.constant(inputs)
    result = model(inputs, training=False)
    if isinstance(result, dict):
        return {name: np.asarray(value) for name, value in result.items()}
    return {"probabilities": np.asarray(result)}


def post(app, path: str, document=None, body: bytes | None = None, headers=None):
    if document is not None:  # json for integers beyond 64 bits, which orjson does not write
        body, headers = json.dumps(document).encode(), {"Content-Type": "application/json"}
    return app.test_client().post(path, data=body, headers=headers or {})


def ok(answer) -> dict:
    assert answer.status_code == 200, answer.get_data()[:600]
    return answer.get_json()


def error_of(answer, status: int) -> str:
    assert answer.status_code == status, answer.get_data()[:600]
    document = answer.get_json()
    assert set(document) == {"error"}
    return document["error"]


def b64(data: bytes, urlsafe: bool = False) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    return text.rstrip("=") if urlsafe else text


ROWS = [["cat", "dog", "fish"], ["bird", "bird", "zebra"], ["caf\u00e9", "", "cat"]]


# -- the runtime and the signature ------------------------------------------------------------------
def test_string_inputs_and_outputs_are_object_arrays_of_bytes(models, words, tagger):
    _, built = models
    served = registry_of(words).get("words")
    (info,) = served.signature.inputs.values()
    assert (info.name, info.dtype, info.shape, info.is_string) == ("words", np.dtype(object), (None, 3), True)
    assert not served.signature.outputs["probabilities"].is_string
    assert served.runtime.traces == 1  # warmed up with b"" and never traced again
    answer = served.runtime.infer(strings(ROWS))
    assert np.allclose(answer["probabilities"], own(built["words"], strings(ROWS))["probabilities"], atol=1e-6)
    signature = registry_of(tagger).get("tagger").signature
    assert [(i.name, i.dtype.kind) for i in signature.inputs.values()] == [("text", "O"), ("weight", "f")]
    # StringLookup(invert=True) says int64 to Keras; the traced graph gives tf.string, and that is served
    assert {name: o.dtype.kind for name, o in signature.outputs.items()} == {
        "echo": "O", "label": "O", "probs": "f", "raw_bytes": "O"}
    text = strings(["red cat", b"\xff\xfe dog", ""])
    weight = np.array([[0.5], [1.0], [-2.0]], np.float32)
    result = registry_of(tagger).get("tagger").runtime.infer({"text": text, "weight": weight})
    expected = own(built["tagger"], {"text": text, "weight": weight})
    assert result["label"].dtype == object and list(result["label"]) == list(expected["label"])
    assert list(result["echo"]) == [b"red cat", b"\xff\xfe dog", b""]


def test_metadata_lists_strings_as_dt_string_and_bytes(words, tagger, typed):
    meta = words.test_client().get("/v1/models/words/metadata").get_json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["words"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in signature["inputs"]["words"]["tensor_shape"]["dim"]] == ["-1", "3"]
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert words.test_client().get("/v2/models/words").get_json()["inputs"] == [
        {"name": "words", "datatype": "BYTES", "shape": [-1, 3]}]
    v2 = tagger.test_client().get("/v2/models/tagger").get_json()
    assert v2["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                            {"name": "weight", "datatype": "FP32", "shape": [-1, 1]}]
    assert {o["name"]: o["datatype"] for o in v2["outputs"]} == {
        "echo": "BYTES", "label": "BYTES", "probs": "FP32", "raw_bytes": "BYTES"}
    meta = tagger.test_client().get("/v1/models/tagger/metadata").get_json()
    outputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert outputs["label"]["dtype"] == "DT_STRING" and outputs["probs"]["dtype"] == "DT_FLOAT"
    meta = typed.test_client().get("/v1/models/typed/metadata").get_json()
    inputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {name: t["dtype"] for name, t in inputs.items()} == {
        "ids": "DT_INT32", "pixels": "DT_UINT8", "flags": "DT_BOOL"}
    assert [t["datatype"] for t in typed.test_client().get("/v2/models/typed").get_json()["inputs"]] == [
        "INT32", "UINT8", "BOOL"]


# -- TensorFlow Serving: strings in -----------------------------------------------------------------
def test_tfserving_rows_and_columns_of_strings_answer_what_the_model_does(models, words):
    _, built = models
    expected = own(built["words"], strings(ROWS))["probabilities"]
    rows = ok(post(words, "/v1/models/words:predict", {"instances": ROWS}))["predictions"]
    assert np.allclose(rows, expected, atol=1e-6)
    assert not np.allclose(rows[0], rows[1])  # each instance its own answer
    columns = ok(post(words, "/v1/models/words:predict", {"inputs": ROWS}))["outputs"]
    assert np.allclose(columns, expected, atol=1e-6)
    named = ok(post(words, "/predict", {"instances": [{"words": row} for row in ROWS]}))["predictions"]
    assert np.allclose(named, expected, atol=1e-6)
    named = ok(post(words, "/predict", {"inputs": {"words": ROWS}}))["outputs"]
    assert np.allclose(named, expected, atol=1e-6)


def test_b64_values_of_a_string_input_are_raw_bytes_not_images(models, words):
    """{"b64"} in the place of a string is its bytes: standard, URL-safe and unpadded base64 alike, UTF-8
    or not (b"\\xff\\xfe" is out of the vocabulary, as the model itself says)."""
    _, built = models
    raw = [[b"cat", b"\xff\xfe", "caf\u00e9".encode()], [b"fish", b"dog", b"\x00"]]
    document = {"instances": [[{"b64": b64(raw[0][0])}, {"b64": b64(raw[0][1], urlsafe=True)},
                               {"b64": b64(raw[0][2], urlsafe=True)}],
                              ["fish", {"b64": b64(b"dog")}, {"b64": "AA"}]]}
    answer = ok(post(words, "/v1/models/words:predict", document))["predictions"]
    assert np.allclose(answer, own(built["words"], strings(raw))["probabilities"], atol=1e-6)
    wrapped = base64.encodebytes(b"cat" * 40).decode()  # line breaks, as GNU base64 writes them
    assert "\n" in wrapped
    answer = ok(post(words, "/predict", {"inputs": [[{"b64": wrapped}, "dog", "dog"]]}))["outputs"]
    assert np.allclose(answer, own(built["words"], strings([[b"cat" * 40, b"dog", b"dog"]]))["probabilities"],
                       atol=1e-6)


def test_string_batches_are_padded_with_empty_strings(models, words):
    """max_batch_size 8, padded to 2 or 8: 11 instances run as 8 + 3 (padded to 8 with b"")."""
    _, built = models
    rows = [[VOCABULARY[(i + j) % 5] for j in range(3)] for i in range(11)]
    stats = registry_of(words).get("words").batcher.stats
    before = (stats.batches, stats.padded, stats.instances)
    answer = ok(post(words, "/predict", {"instances": rows}))["predictions"]
    assert np.allclose(answer, own(built["words"], strings(rows))["probabilities"], atol=1e-6)
    assert (stats.batches, stats.padded, stats.instances) == (before[0] + 2, before[1] + 16, before[2] + 11)


def test_concurrent_string_requests_share_one_call_and_each_gets_its_rows():
    """The batcher joins object arrays as it joins numbers, and pads them with b"" (never the integer 0)."""
    seen = []

    def model(batch):
        seen.append(batch)
        assert batch.dtype == object and all(isinstance(v, bytes) for v in batch.reshape(-1))
        return {"echo": batch}

    batcher = Batcher(model, BatchPolicy(max_batch_size=8, batch_timeout=0.3, allowed_batch_sizes=(4, 8)))
    answers = {}
    start = threading.Barrier(2)

    def send(label, rows):
        start.wait()
        answers[label] = batcher.run(rows, deadline=time.monotonic() + 30)

    a, b = strings([["a", "b"], ["c", "d"]]), strings([["\u00e9", "f"], ["g", "h"], ["i", ""]])
    threads = [threading.Thread(target=send, args=("a", a)), threading.Thread(target=send, args=("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 1 and seen[0].shape == (8, 2)  # 5 rows, padded to 8 in one call
    assert list(seen[0][5:].reshape(-1)) == [b""] * 6
    assert answers["a"]["echo"].tolist() == a.tolist() and answers["b"]["echo"].tolist() == b.tolist()


# -- TensorFlow Serving: strings out, beside other inputs -------------------------------------------
TEXTS = ["red cat", "blue bird dog", "zebra", ""]
WEIGHTS = [[0.5], [1.0], [-2.0], [3.0]]


def tagger_expected(built, texts=TEXTS, weights=WEIGHTS):
    return own(built["tagger"], {"text": strings(texts), "weight": np.asarray(weights, np.float32)})


def test_string_outputs_answer_utf8_strings_and_b64_for_other_bytes(models, tagger):
    _, built = models
    texts = [*TEXTS[:3], b"\xff\xfe dog"]
    expected = tagger_expected(built, texts)
    document = {"instances": [{"text": t if isinstance(t, str) else {"b64": b64(t)}, "weight": w}
                              for t, w in zip(texts, WEIGHTS)]}
    predictions = ok(post(tagger, "/v1/models/tagger:predict", document))["predictions"]
    assert [set(p) for p in predictions] == [{"probs", "label", "echo", "raw_bytes"}] * 4
    assert np.allclose([p["probs"] for p in predictions], expected["probs"], atol=1e-6)
    assert [p["label"] for p in predictions] == [v.decode() for v in expected["label"]]
    assert {p["label"] for p in predictions} <= {*LABELS, "[UNK]"}
    # UTF-8 bytes answer as strings; others as {"b64"}
    assert [p["echo"] for p in predictions] == [*TEXTS[:3], {"b64": b64(b"\xff\xfe dog")}]
    # an output whose name ends in _bytes is binary: always {"b64"}, TensorFlow Serving's rule
    assert [p["raw_bytes"] for p in predictions] == [{"b64": b64(t if isinstance(t, bytes) else t.encode())}
                                                     for t in texts]
    columns = ok(post(tagger, "/predict", {"inputs": {"text": TEXTS, "weight": WEIGHTS}}))["outputs"]
    expected = tagger_expected(built)
    assert set(columns) == {"probs", "label", "echo", "raw_bytes"}
    assert columns["label"] == [v.decode() for v in expected["label"]] and columns["echo"] == TEXTS
    assert np.allclose(columns["probs"], expected["probs"], atol=1e-6)


def test_top_k_of_a_string_output_is_a_400(tagger):
    document = {"inputs": {"text": TEXTS, "weight": WEIGHTS}, "top_k": {"k": 1, "output": "label"}}
    assert "top_k needs a numeric output; output 'label' holds strings" in error_of(
        post(tagger, "/predict", document), 400)
    document["top_k"] = {"k": 2, "output": "probs"}
    answer = ok(post(tagger, "/predict", document))
    assert [len(row) for row in answer["top_k"]] == [2] * 4


# -- v2: BYTES ---------------------------------------------------------------------------------------
def bytes_blob(items) -> bytes:
    """Triton's binary BYTES, by hand: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(len(v).to_bytes(4, "little") + v for v in items)


def read_bytes_blob(blob: bytes) -> list[bytes]:
    items, at = [], 0
    while at < len(blob):
        length = int.from_bytes(blob[at:at + 4], "little")
        items.append(blob[at + 4:at + 4 + length])
        at += 4 + length
    assert at == len(blob)
    return items


def v2_outputs(answer) -> dict[str, list | np.ndarray]:
    """A v2 answer's outputs by name: BYTES as lists of bytes (JSON strings encoded), others as arrays."""
    assert answer.status_code == 200, answer.get_data()[:600]
    content = answer.get_data()
    length = int(answer.headers.get("Inference-Header-Content-Length", len(content)))
    document, offset, found = orjson.loads(content[:length]), length, {}
    for tensor in document["outputs"]:
        if "data" in tensor:
            data = tensor["data"]
            found[tensor["name"]] = ([v.encode() for v in data] if tensor["datatype"] == "BYTES"
                                     else np.asarray(data, np.float32).reshape(tensor["shape"]))
        else:
            size = tensor["parameters"]["binary_data_size"]
            blob = content[offset:offset + size]
            found[tensor["name"]] = (read_bytes_blob(blob) if tensor["datatype"] == "BYTES"
                                     else np.frombuffer(blob, "<f4").reshape(tensor["shape"]))
            offset += size
    assert offset == len(content)
    return found


def test_v2_bytes_json_in_and_out(models, words, tagger):
    _, built = models
    flat = [v for row in ROWS for v in row]
    answer = v2_outputs(post(words, "/v2/models/words/infer", {"inputs": [
        {"name": "words", "shape": [3, 3], "datatype": "BYTES", "data": flat}]}))
    assert np.allclose(answer["probabilities"], own(built["words"], strings(ROWS))["probabilities"], atol=1e-6)
    nested = v2_outputs(post(words, "/v2/models/words/infer", {"inputs": [
        {"name": "words", "shape": [3, 3], "datatype": "BYTES", "data": ROWS}]}))  # nested data: row major
    assert np.allclose(nested["probabilities"], answer["probabilities"])
    expected = tagger_expected(built)
    answer = post(tagger, "/v2/models/tagger/infer", {"id": "s-1", "inputs": [
        {"name": "weight", "shape": [4, 1], "datatype": "FP32", "data": [w[0] for w in WEIGHTS]},
        {"name": "text", "shape": [4], "datatype": "BYTES", "data": TEXTS}]})
    document = ok(answer)
    assert document["id"] == "s-1"
    label = next(t for t in document["outputs"] if t["name"] == "label")
    assert label == {"name": "label", "datatype": "BYTES", "shape": [4],
                     "data": [v.decode() for v in expected["label"]]}
    outputs = v2_outputs(answer)
    assert outputs["echo"] == [t.encode() for t in TEXTS] == outputs["raw_bytes"]
    assert np.allclose(outputs["probs"], expected["probs"], atol=1e-6)


def test_a_large_body_mixing_strings_and_numbers_takes_the_numbers_fast_path_and_answers_right(models, tagger):
    """Over codecs.FAST_TENSOR_BYTES the first numeric tensor is parsed straight to an array; the strings
    beside it take the ordinary path. Both protocols, the same answers as the model's."""
    _, built = models
    texts = [TEXT_VOCABULARY[i % 6] + " " + TEXT_VOCABULARY[(i * 5) % 6] for i in range(200)]
    weights = np.random.default_rng(3).random((200, 1)).round(3).astype(np.float32)
    expected = tagger_expected(built, texts, weights)
    document = {"inputs": [{"name": "weight", "shape": [200, 1], "datatype": "FP32", "data": weights.tolist()},
                           {"name": "text", "shape": [200], "datatype": "BYTES", "data": texts}]}
    assert len(orjson.dumps(document)) > codecs.FAST_TENSOR_BYTES
    outputs = v2_outputs(post(tagger, "/v2/models/tagger/infer", document))
    assert outputs["label"] == list(expected["label"])
    assert np.allclose(outputs["probs"], expected["probs"], atol=1e-6)
    columns = ok(post(tagger, "/predict", {"inputs": {"weight": weights.tolist(), "text": texts}}))["outputs"]
    assert columns["label"] == [v.decode() for v in expected["label"]]
    assert np.allclose(columns["probs"], expected["probs"], atol=1e-6)


def v2_binary_body(tensors: list[tuple[str, str, list[int], bytes]], outputs=None) -> tuple[bytes, dict]:
    """What tritonclient sends, by hand: the JSON header, then each input's bytes in order."""
    document = {"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                            "parameters": {"binary_data_size": len(blob)}}
                           for name, datatype, shape, blob in tensors]}
    if outputs is not None:
        document["outputs"] = outputs
    head = orjson.dumps(document)
    return head + b"".join(t[3] for t in tensors), {"Inference-Header-Content-Length": str(len(head)),
                                                    "Content-Type": "application/octet-stream"}


def test_v2_bytes_binary_in_and_out(models, tagger):
    """Triton's binary BYTES both ways, non-UTF-8 bytes and empty strings included."""
    _, built = models
    texts = [b"red \xff cat", b"", "caf\u00e9 dog".encode(), b"\x00\x01"]
    expected = tagger_expected(built, texts)
    weights = np.asarray(WEIGHTS, "<f4")
    body, headers = v2_binary_body([("text", "BYTES", [4], bytes_blob(texts)),
                                    ("weight", "FP32", [4, 1], weights.tobytes())],
                                   outputs=[{"name": name, "parameters": {"binary_data": True}}
                                            for name in ("echo", "label", "probs")])
    answer = post(tagger, "/v2/models/tagger/infer", body=body, headers=headers)
    assert answer.headers["Content-Type"] == "application/octet-stream"
    document = orjson.loads(answer.get_data()[:int(answer.headers["Inference-Header-Content-Length"])])
    echo = document["outputs"][0]
    assert echo == {"name": "echo", "datatype": "BYTES", "shape": [4],
                    "parameters": {"binary_data_size": sum(4 + len(t) for t in texts)}}
    outputs = v2_outputs(answer)
    assert list(outputs) == ["echo", "label", "probs"]
    assert outputs["echo"] == texts
    assert outputs["label"] == list(expected["label"])
    assert np.allclose(outputs["probs"], expected["probs"], atol=1e-6)


def test_v2_json_cannot_carry_bytes_that_are_not_utf8_a_422_saying_ask_binary(tagger):
    texts = [b"fine", b"\xff", b"also fine", b"\xfe\xfe"]
    body, headers = v2_binary_body([("text", "BYTES", [4], bytes_blob(texts)),
                                    ("weight", "FP32", [4, 1], np.asarray(WEIGHTS, "<f4").tobytes())],
                                   outputs=[{"name": "echo"}])
    message = error_of(post(tagger, "/v2/models/tagger/infer", body=body, headers=headers), 422)
    assert message.startswith("output 'echo' holds bytes that are not valid UTF-8 for instances [1, 3]")
    assert '"binary_data": true' in message
    # the label (always UTF-8) as JSON, the echo in binary: both answered
    body, headers = v2_binary_body([("text", "BYTES", [4], bytes_blob(texts)),
                                    ("weight", "FP32", [4, 1], np.asarray(WEIGHTS, "<f4").tobytes())],
                                   outputs=[{"name": "label"}, {"name": "echo", "parameters": {"binary_data": True}}])
    outputs = v2_outputs(post(tagger, "/v2/models/tagger/infer", body=body, headers=headers))
    assert outputs["echo"] == texts and len(outputs["label"]) == 4


# -- the integer and boolean model ------------------------------------------------------------------
IDS = [[1, 2, 3, 9], [0, 0, 5, 7]]
PIXELS = [[0, 255, 128, 3], [10, 20, 30, 40]]
FLAGS = [[True, False], [False, False]]


def typed_expected(built):
    return own(built["typed"], [np.asarray(IDS, np.int32), np.asarray(PIXELS, np.uint8),
                                np.asarray(FLAGS, bool)])["probabilities"]


def test_integer_and_boolean_inputs_serve_by_both_protocols(models, typed):
    _, built = models
    expected = typed_expected(built)
    rows = ok(post(typed, "/predict", {"instances": [{"ids": i, "pixels": p, "flags": f}
                                                     for i, p, f in zip(IDS, PIXELS, FLAGS)]}))
    assert np.allclose(rows["predictions"], expected, atol=1e-5)
    flags01 = [[int(v) for v in row] for row in FLAGS]  # 0 and 1 mean false and true for a bool input
    columns = ok(post(typed, "/predict", {"inputs": {"ids": IDS, "pixels": PIXELS, "flags": flags01}}))
    assert np.allclose(columns["outputs"], expected, atol=1e-5)
    v2 = post(typed, "/v2/models/typed/infer", {"inputs": [
        {"name": "ids", "shape": [2, 4], "datatype": "INT32", "data": sum(IDS, [])},
        {"name": "pixels", "shape": [2, 4], "datatype": "UINT8", "data": sum(PIXELS, [])},
        {"name": "flags", "shape": [2, 2], "datatype": "BOOL", "data": sum(FLAGS, [])}]})
    assert np.allclose(v2_outputs(v2)["scores"], expected, atol=1e-5)
    body, headers = v2_binary_body([("ids", "INT32", [2, 4], np.asarray(IDS, "<i4").tobytes()),
                                    ("pixels", "UINT8", [2, 4], np.asarray(PIXELS, np.uint8).tobytes()),
                                    ("flags", "BOOL", [2, 2], np.asarray(FLAGS, bool).tobytes())],
                                   outputs=[{"name": "scores", "parameters": {"binary_data": True}}])
    assert np.allclose(v2_outputs(post(typed, "/v2/models/typed/infer", body=body, headers=headers))["scores"],
                       expected, atol=1e-5)


def typed_rows(ids=None, pixels=None, flags=None) -> dict:
    return {"instances": [{"ids": ids or IDS[0], "pixels": pixels or PIXELS[0], "flags": flags or FLAGS[0]}]}


def typed_v2(name: str, datatype: str, data) -> dict:
    tensors = {"ids": ("INT32", [1, 4], IDS[0]), "pixels": ("UINT8", [1, 4], PIXELS[0]),
               "flags": ("BOOL", [1, 2], FLAGS[0])}
    tensors[name] = (datatype, tensors[name][1], data)
    return {"inputs": [{"name": n, "datatype": d, "shape": s, "data": v} for n, (d, s, v) in tensors.items()]}


TF, V2 = "/predict", "/v2/models/typed/infer"
UINT8_RANGE = "holds values out of the range of uint8 [0, 255]"


@pytest.mark.parametrize("path, document, expected", [
    (TF, typed_rows(pixels=[300, 0, 0, 0]), f"'instances.pixels' {UINT8_RANGE}"),
    (TF, typed_rows(pixels=[-1, 0, 0, 0]), f"'instances.pixels' {UINT8_RANGE}"),
    (TF, typed_rows(ids=[2**40, 0, 0, 0]), "'instances.ids' holds values out of the range of int32"),
    (TF, typed_rows(ids=[2**70, 0, 0, 0]), "'instances.ids' holds values out of the range of int32"),
    (TF, typed_rows(ids=[1.5, 0, 0, 0]), "'instances.ids' holds floats but the model takes int32"),
    (TF, typed_rows(ids=["1", "2", "3", "4"]), "'instances.ids' holds strings; expected an array of numbers"),
    (TF, typed_rows(flags=[2, 0]), "'instances.flags' holds values out of the range of bool"),
    (TF, typed_rows(flags=[0.5, 0]), "'instances.flags' holds floats"),
    (TF, {"inputs": {"ids": [IDS[0]], "pixels": [[256, 0, 0, 0]], "flags": [FLAGS[0]]}},
     f"'inputs.pixels' {UINT8_RANGE}"),
    (TF, {"instances": [{"ids": IDS[0], "pixels": PIXELS[0]}]}, "instances[0]: missing input(s) ['flags']"),
    (TF, {"instances": [{**typed_rows()["instances"][0], "extra": [1]}]}, "unknown input name(s) ['extra']"),
    (V2, typed_v2("pixels", "UINT8", [300, 0, 0, 0]), f"input 'pixels' data {UINT8_RANGE}"),
    (V2, typed_v2("pixels", "UINT8", [-1, 0, 0, 0]), f"input 'pixels' data {UINT8_RANGE}"),
    (V2, typed_v2("ids", "INT32", [2**40, 0, 0, 0]), "input 'ids' data holds values out of the range of int32"),
    (V2, typed_v2("ids", "INT32", ["a", "b", "c", "d"]), "input 'ids' data holds strings"),
    (V2, typed_v2("ids", "BYTES", ["a", "b", "c", "d"]), "input 'ids': datatype 'BYTES' does not match the model's INT32"),
    (V2, typed_v2("flags", "BOOL", [3, 0]), "input 'flags' data holds values out of the range of bool"),
])
def test_integer_and_boolean_values_out_of_their_dtype_are_a_400_naming_the_input(typed, path, document, expected):
    assert expected in error_of(post(typed, path, document), 400)


def test_v2_binary_bool_elements_are_bytes_0_or_1(typed):
    body, headers = v2_binary_body([("ids", "INT32", [1, 4], np.asarray(IDS[:1], "<i4").tobytes()),
                                    ("pixels", "UINT8", [1, 4], np.asarray(PIXELS[:1], np.uint8).tobytes()),
                                    ("flags", "BOOL", [1, 2], b"\x01\x02")])
    assert "input 'flags': BOOL elements are one byte each, 0 (false) or 1 (true)" in error_of(
        post(typed, V2, body=body, headers=headers), 400)


# -- strings: what is refused -----------------------------------------------------------------------
LONG = "x" * (Settings().max_string_bytes + 1)
ANY_STRING = 'expected a string or {"b64": "..."}'
WEIGHT = {"name": "weight", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}


def tagger_v2(text: dict | None = None, **extra) -> dict:
    """A v2 request to `tagger`: `text` merged into a valid one-instance text tensor, the weight beside it."""
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"], **(text or {})}
    return {"inputs": [text, WEIGHT], **extra}


@pytest.mark.parametrize("app_name, path, document, status, expected", [
    ("words", "/predict", {"instances": [["cat", 3, "dog"]]}, 400,
     f"instances[0]: {ANY_STRING}, got a number; input 'words' takes strings"),
    ("words", "/predict", {"instances": [["cat", True, "dog"]]}, 400, "got a boolean; input 'words' takes strings"),
    ("words", "/predict", {"instances": [["cat", None, "dog"]]}, 400, "got null; input 'words'"),
    ("words", "/predict", {"instances": [["cat", "dog", "dog"], ["cat", {"x": 1}, "dog"]]}, 400,
     f"instances[1]: {ANY_STRING}, got an object"),
    ("words", "/predict", {"instances": [[0.5, 1.5, 2.5]] * 300}, 400, "300 instances, over the limit"),
    ("words", "/predict", {"instances": [[1.0, 2.0, 3.0]] * 200}, 400,  # the numbers-only fast path too
     "'instances' holds numbers; input 'words' takes strings"),
    ("words", "/predict", {"instances": [["cat", "dog"]]}, 400,
     "'instances' has instances of shape [2]; the model takes [3]"),
    ("words", "/predict", {"instances": [["cat", "dog", "fish"], ["cat"]]}, 400, "'instances' is ragged"),
    ("words", "/predict", {"instances": [["cat", "dog", {"b64": "not base64!"}]]}, 400, "invalid base64"),
    ("words", "/predict", {"instances": [{"words": ["a", "b", "c"], "other": 1}]}, 400,
     "unknown input name(s) ['other']; this model's input is 'words'"),
    ("words", "/predict", {"instances": [{"word": ["a", "b", "c"]}]}, 400,
     "instances[0]: missing input(s) ['words'] and unknown input name(s) ['word']"),
    ("words", "/predict", {"instances": [["cat", "dog", LONG]]}, 413,
     f"a string of {Settings().max_string_bytes + 1} bytes, over the limit of {Settings().max_string_bytes} bytes"),
    ("tagger", "/predict", {"instances": [{"text": 12, "weight": [1.0]}]}, 400,
     f"instances[0].text: {ANY_STRING}, got a number; input 'text' takes strings"),
    ("tagger", "/predict", {"instances": [{"text": "red", "weight": ["heavy"]}]}, 400,
     "'instances.weight' holds strings; expected an array of numbers"),
    ("tagger", "/predict", {"instances": [{"text": "red"}]}, 400, "instances[0]: missing input(s) ['weight']"),
    ("tagger", "/predict", {"inputs": {"text": ["red"], "weight": [[1.0]], "label": ["x"]}}, 400,
     "unknown input name(s) ['label']"),
    ("tagger", "/v2/models/tagger/infer", tagger_v2({"data": [1]}), 400,
     "input 'text' data[0]: expected a string, got a number; input 'text' takes strings"),
    ("tagger", "/v2/models/tagger/infer", tagger_v2({"data": [{"b64": "AA=="}]}), 400,
     "expected a string, got an object"),
    ("tagger", "/v2/models/tagger/infer", tagger_v2({"datatype": "FP32", "data": [1.0]}), 400,
     "input 'text': datatype 'FP32' does not match the model's BYTES"),
    ("tagger", "/v2/models/tagger/infer",
     {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]},
                 {**WEIGHT, "shape": [2, 1], "data": [1.0, 2.0]}]}, 400,
     "input 'text' has 1 values but its shape [2] needs 2"),
    ("tagger", "/v2/models/tagger/infer",
     tagger_v2(outputs=[{"name": "label", "parameters": {"classification": 1}}]), 400,
     "output 'label': classification needs a numeric output"),
    ("tagger", "/v2/models/tagger/infer", tagger_v2({"data": [LONG]}), 413, "over the limit of"),
    ("tagger", "/v2/models/tagger/infer", {"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES",
                                                       "data": ["a"]}]}, 400,
     "unknown input 'txt'; the model's inputs are ['text', 'weight']"),
    ("tagger", "/v2/models/tagger/infer", {"inputs": [WEIGHT]}, 400,
     "missing input(s) ['text']; the model's inputs are ['text', 'weight']"),
])
def test_strings_where_numbers_belong_and_the_reverse_are_a_4xx_naming_the_input(words, tagger, app_name, path,
                                                                                  document, status, expected):
    app = {"words": words, "tagger": tagger}[app_name]
    assert expected in error_of(post(app, path, document), status)


@pytest.mark.parametrize("blob, size, words", [
    (bytes_blob([b"abc"]) + b"\x00", None, "does not match its 1 BYTES elements, which take 7 bytes"),
    ((10).to_bytes(4, "little") + b"abc", None, "element 0 claims 10 bytes, more than the 3 left"),
    (b"\x01\x00", None, "too small for 1 BYTES elements"),
    (bytes_blob([b"abc"]), 100, "binary_data_size 100 is more than the"),
    ((Settings().max_string_bytes + 1).to_bytes(4, "little") + b"x", None, "element 0 is a string of"),
])
def test_v2_binary_bytes_that_do_not_add_up_are_a_4xx(tagger, blob, size, words):
    weight = np.ones((1, 1), "<f4").tobytes()
    document = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                            "parameters": {"binary_data_size": size or len(blob)}},
                           {"name": "weight", "datatype": "FP32", "shape": [1, 1],
                            "parameters": {"binary_data_size": 4}}]}
    head = orjson.dumps(document)
    answer = post(tagger, "/v2/models/tagger/infer", body=head + blob + weight,
                  headers={"Inference-Header-Content-Length": str(len(head))})
    assert words in error_of(answer, 413 if "is a string of" in words else 400)


# -- SavedModels: strings through TensorFlow's own signature ----------------------------------------
def test_a_savedmodel_with_string_inputs_and_outputs_serves(models, tmp_path_factory):
    _, built = models
    saved = tmp_path_factory.mktemp("saved_strings")
    built["tagger"].export(str(saved / "tagger" / "1"), format="tf_saved_model", verbose=False)
    app = serve(saved, tmp_path_factory, "tagger")
    signature = registry_of(app).get("tagger").signature
    assert signature.format == "saved_model" and signature.inputs["text"].is_string
    expected = tagger_expected(built)
    columns = ok(post(app, "/predict", {"inputs": {"text": TEXTS, "weight": WEIGHTS}}))["outputs"]
    assert columns["label"] == [v.decode() for v in expected["label"]] and columns["echo"] == TEXTS
    assert np.allclose(columns["probs"], expected["probs"], atol=1e-6)
    shutil.rmtree(saved)


# -- in a real gunicorn worker, through tritonclient -------------------------------------------------
def test_tritonclient_sends_and_reads_bytes_as_object_arrays(models, tmp_path_factory):
    import requests
    import tritonclient.http as triton

    from tests.servers import Gunicorn

    store, built = models
    gunicorn = Gunicorn(tmp_path_factory.mktemp("gunicorn_tagger"), model_store=store, model_name="tagger",
                        workers=1)
    try:
        gunicorn.wait_ready()
        texts = strings(["red cat", "caf\u00e9 dog", b"\xff bird", ""])
        weights = np.asarray(WEIGHTS, np.float32)
        expected = own(built["tagger"], {"text": texts, "weight": weights})
        with triton.InferenceServerClient(gunicorn.url.removeprefix("http://")) as client:
            assert [(t["name"], t["datatype"]) for t in client.get_model_metadata("tagger")["inputs"]] == [
                ("text", "BYTES"), ("weight", "FP32")]
            for binary in (True, False):
                if not binary:  # JSON cannot carry b"\xff bird": the JSON leg sends UTF-8 strings only
                    texts[2] = b"blue bird"
                    expected = own(built["tagger"], {"text": texts, "weight": weights})
                text = triton.InferInput("text", [4], "BYTES")
                text.set_data_from_numpy(texts, binary_data=binary)
                weight = triton.InferInput("weight", [4, 1], "FP32")
                weight.set_data_from_numpy(weights, binary_data=binary)
                wanted = [triton.InferRequestedOutput(name, binary_data=binary)
                          for name in ("label", "echo", "probs")]
                result = client.infer("tagger", [text, weight], outputs=wanted)
                # binary BYTES come back as bytes; JSON ones as the str tritonclient makes of each string
                def as_bytes(name):
                    return [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy(name).tolist()]
                assert as_bytes("echo") == texts.tolist()
                assert as_bytes("label") == expected["label"].tolist()
                assert np.allclose(result.as_numpy("probs"), expected["probs"], atol=1e-6)
        rows = requests.post(gunicorn.url + "/v1/models/tagger:predict", timeout=30, json={
            "instances": [{"text": {"b64": b64(b"\xff bird")}, "weight": [1.0]}]})
        assert rows.status_code == 200, rows.text
        assert rows.json()["predictions"][0]["echo"] == {"b64": b64(b"\xff bird")}
    finally:
        gunicorn.stop()
