"""The model runtime: the default model's training, Keras and SavedModel formats, safe loading."""
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest


from api.http.app import create_app, registry_of
from api.model.store import read_version
from api.runtime import ModelRuntime
from api.settings import Settings
from api.training import train
from tests.models import save_model


def weights(path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


def test_training_is_deterministic_and_accurate(store, tmp_path):
    accuracy = train(tmp_path / "digits" / "1")
    assert accuracy >= 0.95
    again, first = weights(tmp_path / "digits" / "1" / "model.keras"), weights(store / "digits" / "1" / "model.keras")
    assert all(np.array_equal(a, b) for a, b in zip(again, first, strict=True))
    assert (tmp_path / "digits" / "1" / "labels.txt").read_text().split() == list("0123456789")


def load_registry(store_root, tmp_path, **overrides):
    app = create_app(Settings(model_store=store_root, run_dir=tmp_path / "run", warmup_batches=(1,), **overrides))
    registry = registry_of(app)
    registry.load()
    return app, registry


def in_a_fresh_process(script: str, *args) -> list[str]:
    """Run `script` in a new Python process (the repository on its path) and return its printed words.

    For tests that run a graph of digits' variables: once such a graph has run in a process, that
    process's frozen digits graph can answer one instance two ways (oneDNN, two inter-op threads;
    docs/performance.md, "One answer per instance"), which would fail this suite's byte-for-byte
    comparisons in the tests that follow."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


SAVED_MODEL = """
import sys
from pathlib import Path
import keras, numpy as np
from tests.test_runtime import load_registry
store, tmp = Path(sys.argv[1]), Path(sys.argv[2])
model = keras.saving.load_model(store / "digits" / "1" / "model.keras")
model.export(str(tmp / "store" / "digits" / "1"), format="tf_saved_model", verbose=False)
app, registry = load_registry(tmp / "store", tmp)
assert registry.ready, registry.error
x = np.load(sys.argv[3])
answer = app.test_client().post("/predict", json={"instances": x.tolist()})
assert answer.status_code == 200, answer.get_json()
error = np.abs(np.asarray(answer.get_json()["predictions"]) - model(x, training=False).numpy()).max()
print("format", registry.get("digits").signature.format, "largest_error", float(error))
"""


def test_a_savedmodel_version_serves_the_same_predictions(store, tmp_path, digits):
    np.save(tmp_path / "x.npy", digits[0][:10])
    words = in_a_fresh_process(SAVED_MODEL, store, tmp_path, tmp_path / "x.npy")
    assert words[-4:-1] == ["format", "saved_model", "largest_error"], words
    assert float(words[-1]) < 1e-5, words


def test_a_lambda_layer_archive_is_refused_and_its_code_never_runs(tmp_path):
    canary = tmp_path / "canary"
    inputs = keras.Input((2,), name="x")
    outputs = keras.layers.Lambda(lambda t, p=str(canary): (__import__("pathlib").Path(p).write_text("pwned"), t * 2)[1])(inputs)
    (tmp_path / "store" / "m" / "1").mkdir(parents=True)
    keras.Model(inputs, outputs).save(tmp_path / "store" / "m" / "1" / "model.keras")
    canary.unlink()  # building the model ran the lambda once; loading it must not
    _, registry = load_registry(tmp_path / "store", tmp_path, model_name="m")
    assert registry.state == "failed"
    assert "safe_mode" in registry.error or "Lambda" in registry.error
    assert not canary.exists()


def test_a_store_without_the_model_leaves_the_worker_up_and_not_ready(tmp_path):
    app, registry = load_registry(tmp_path, tmp_path)
    assert registry.state == "failed"
    ready = app.test_client().get("/ready")
    assert ready.status_code == 503
    assert "no versions of 'digits'" in ready.get_json()["error"]
    assert app.test_client().get("/health").status_code == 200


@pytest.mark.parametrize("max_queue_wait, warned", [(1e-6, True), (1.0, False)])
def test_a_queue_wait_shorter_than_two_full_batches_is_warned_of_at_load(store, tmp_path, caplog, max_queue_wait,
                                                                         warned):
    # Where a call of the largest batch takes over half of SERVE_MAX_QUEUE_WAIT, the queue cannot hold the
    # next batch while one runs (ResNet50 on one core with the 1 s default): the operator must hear of it.
    with caplog.at_level("WARNING", logger="api.registry"):
        _, registry = load_registry(store, tmp_path, max_queue_wait=max_queue_wait)
    assert registry.ready
    warnings = [r.getMessage() for r in caplog.records if "SERVE_MAX_QUEUE_WAIT" in r.getMessage()]
    assert bool(warnings) == warned, warnings
    if warned:
        assert "raise SERVE_MAX_QUEUE_WAIT or lower SERVE_MAX_BATCH_SIZE" in warnings[0]


def test_a_model_is_served_from_a_frozen_graph_with_the_predictions_of_its_variables(store, tmp_path, digits):
    # SERVE_FREEZE_GRAPH (on by default, CPU): the variables are folded into the graph as constants, so
    # oneDNN lays a filter out once instead of on every call; the answers must not move.
    app, registry = load_registry(store, tmp_path)
    assert registry.get("digits").runtime.frozen
    meta = app.test_client().get("/v1/models/digits/metadata").get_json()
    assert meta["runtime"]["frozen_graph"] is True
    x = digits[0][:10]
    answer = app.test_client().post("/predict", json={"instances": x.tolist()})
    assert answer.status_code == 200, answer.get_json()
    expected = keras.saving.load_model(store / "digits" / "1" / "model.keras")(x, training=False).numpy()
    assert np.allclose(answer.get_json()["predictions"], expected, atol=1e-5)

    words = in_a_fresh_process(UNFROZEN, store, tmp_path / "off")
    assert words[-2:] == ["frozen", "False"], words


UNFROZEN = """
import sys
from pathlib import Path
from tests.test_runtime import load_registry
_, registry = load_registry(Path(sys.argv[1]), Path(sys.argv[2]), freeze_graph=False)
print("frozen", registry.get("digits").runtime.frozen)
"""


ONE_ANSWER = """
import sys
from pathlib import Path
import numpy as np
from api.http.app import create_app, registry_of
from api.settings import Settings
registry = registry_of(create_app(Settings(model_store=Path(sys.argv[1]), run_dir=Path(sys.argv[2]),
                                           warmup_batches=(1, 8), inter_op_threads=2)))
registry.load()
runtime = registry.get("digits").runtime
instance = np.random.default_rng(0).random((1, 8, 8, 1)).round(3).astype("float32")
answers = {runtime.infer(instance)["probabilities"].tobytes() for _ in range(40)}
print("frozen", runtime.frozen, "answers", len(answers))
"""


def test_a_frozen_graph_gives_one_instance_one_answer_call_after_call(store, tmp_path):
    # In a fresh worker process, as served (two inter-op threads): checking the frozen graph against one
    # run of the variables' graph once gave two answers, 2e-6 apart, alternately (CI, 2026-11-30).
    words = in_a_fresh_process(ONE_ANSWER, store, tmp_path)
    assert words[-4:] == ["frozen", "True", "answers", "1"], words


def test_the_frozen_graphs_check_is_the_warm_up_of_a_batch_of_one(store):
    # A slow model's start pays each of its calls (the fault suite's hung model: ~12 s each): the load
    # check has already run a batch of one through the frozen graph, so warm-up does not run it again.
    runtime = ModelRuntime.from_settings(read_version(store, "digits", 1), "/CPU:0", Settings(model_store=store))
    assert runtime.frozen
    sizes, call = [], runtime._call
    runtime._call = lambda tensors: sizes.append(int(tensors[0].shape[0])) or call(tensors)
    runtime.warm_up((1, 8))
    assert sizes == [8, 8]  # the warm-up at 8, then one timed call at the largest size
    assert runtime.warmup_seconds > 0 and runtime.call_seconds > 0


def test_a_graph_holding_a_lookup_table_keeps_its_variables_and_says_so(tmp_path, caplog):
    # A table's handle is state a frozen graph cannot take in: the original graph serves, with a warning.
    words = keras.Input((1,), dtype="string", name="word")
    ids = keras.layers.StringLookup(vocabulary=["cat", "dog"], name="ids")(words)
    save_model(keras.Model(words, keras.layers.Dense(2, name="score")(keras.ops.cast(ids, "float32"))),
               tmp_path / "store", "words")
    with caplog.at_level("WARNING", logger="api.runtime"):
        app, registry = load_registry(tmp_path / "store", tmp_path, model_name="words")
    assert registry.ready, registry.error
    assert not registry.get("words").runtime.frozen
    assert any("not a frozen graph (SERVE_FREEZE_GRAPH)" in r.getMessage() for r in caplog.records)
    answer = app.test_client().post("/predict", json={"instances": [["dog"], ["cow"]]})
    assert answer.status_code == 200, answer.get_json()
    assert len(answer.get_json()["predictions"]) == 2
