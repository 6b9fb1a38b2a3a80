"""Hostile model files: the loader takes only the formats we support, `.keras` always in safe mode, and
refuses every file that would run code or reach outside itself, saying why, before the payload runs.

Each attack is built here, in tmp_path, from a benign model (nothing is downloaded): a Lambda layer's
code, a config naming an arbitrary function, a layer loading another SavedModel or a file from outside the
archive, a SavedModel whose own graph writes files, HDF5. Each aims at a canary file, and each test shows:
- the worker's own path refuses it: `ModelRegistry.load` (the store's `read_version`, then `ModelRuntime`,
  as every gunicorn worker loads a version) ends `failed`, and `/ready` answers 503 with the reason;
- the canary was never written;
- a positive control: the same bytes, loaded without our guard (Keras with `safe_mode=False`, TensorFlow's
  own loader), do write the canary. The attack is live, so a refusal is what stopped it and the test
  cannot pass because the file was merely broken. Where no such control exists, a comment says why.
"""
import base64
import contextlib
import json
import marshal
import re
import time
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import requests
import tensorflow as tf
from packaging.version import Version


from api.http.app import create_app, registry_of
from api.runtime import _in_mixed_precision
from api.settings import Settings
from tests.servers import ROOT, Gunicorn

# The last of the known model-loading fixes (the anchors file): CVE-2024-3660 (Lambda), CVE-2025-1550
# (arbitrary modules, 3.9), CVE-2025-9905 (HDF5), then TFSMLayer, get_file and vocabulary-file bypasses.
KERAS_WITH_THE_LOADING_FIXES = Version("3.13.2")


# -- the worker's path -----------------------------------------------------------------------------------
def load_through_worker(store: Path, run_dir: Path, name: str):
    """What a worker does with a store: `ModelRegistry.load`, then `/ready`. Returns (registry, answer)."""
    app = create_app(Settings(model_store=store, model_name=name, run_dir=run_dir, warmup_batches=(1,)))
    registry = registry_of(app)
    registry.load()
    return registry, app.test_client().get("/ready")


def assert_refused(store: Path, tmp_path: Path, name: str, reason: str, *canaries: Path) -> str:
    """Refused by the worker with `reason` (a regex) on /ready, no canary written; returns the error."""
    registry, ready = load_through_worker(store, tmp_path / "run", name)
    assert registry.state == "failed", f"the hostile model '{name}' loaded"
    assert ready.status_code == 503
    error = ready.get_json()["error"]
    assert error.startswith(f"model '{name}' failed to load: "), error
    assert re.search(reason, error, re.DOTALL), error
    for canary in canaries:
        assert not canary.exists(), f"{canary.name} was written: the payload ran"
    return error


def version_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "store" / name / "1"
    folder.mkdir(parents=True)
    return folder


# -- building hostile .keras archives ---------------------------------------------------------------------
def writes(canary: Path):
    """A lambda whose code writes the canary when run, returning its input: no defaults nor closure, so
    its bytecode alone carries the path (as in an attacker's file)."""
    return eval(f"lambda t: (__import__('pathlib').Path({str(canary)!r}).write_text('pwned'), t)[1]")


def benign_archive(path: Path) -> Path:
    """A functional model (`x` -> Dense `dense`) saved as Keras writes it: what hostile configs graft onto."""
    inputs = keras.Input((2,), name="x")
    keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs)).save(path)
    return path


def rewrite_config(archive: Path, edit) -> Path:
    """Edit config.json inside a .keras zip, as an attacker with a text editor would; other entries kept."""
    with zipfile.ZipFile(archive) as zipped:
        entries = {name: zipped.read(name) for name in zipped.namelist()}
    config = json.loads(entries["config.json"])
    edit(config)
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)
    return archive


def after_dense(layer: dict):
    """A config edit: `layer` (a layer config) applied to the Dense layer's output, and the model's output."""
    def edit(config):
        layers = config["config"]["layers"]
        layer.update(name=layer["config"]["name"], inbound_nodes=[{"args": [{
            "class_name": "__keras_tensor__",
            "config": {"shape": [None, 2], "dtype": "float32", "keras_history": ["dense", 0, 0]}}],
            "kwargs": {}}])
        layers.append(layer)
        config["config"]["output_layers"] = [layer["name"], 0, 0]
    return edit


def as_activation(function: dict):
    """A config edit: `function` (a function config) becomes the Dense layer's activation."""
    def edit(config):
        dense, = (layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["activation"] = function
    return edit


def lambda_layer(function: dict, arguments: dict | None = None) -> dict:
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "payload", "trainable": True, "dtype": "float32", "function": function,
                       "arguments": arguments or {}}}


def bytecode(canary: Path) -> str:
    """Marshalled bytecode writing the canary, base64 as in a Keras config: hand-placed, no Keras involved."""
    return base64.b64encode(marshal.dumps(writes(canary).__code__)).decode("ascii")


def load_unsafely(archive: Path, **kwargs) -> None:
    """A positive control: Keras without safe mode, then one call, as a worker's warm-up makes; whatever
    fails after the payload ran (the stand-ins below build no working layer) is beside the point."""
    with contextlib.suppress(Exception):
        keras.saving.load_model(archive, safe_mode=False, **kwargs)(np.ones((1, 2), "float32"))


def function(module: str, name: str) -> dict:
    """A config naming a function by module, as Keras writes `{"class_name": "function", ...}`."""
    return {"module": module, "class_name": "function", "config": name, "registered_name": name}


# -- 1. Lambda layers: Python code in the archive ---------------------------------------------------------
def test_a_keras_built_lambda_layer_is_refused_and_never_runs(tmp_path):
    """CVE-2024-3660: a Lambda layer's lambda is marshalled bytecode; safe mode refuses to unmarshal it."""
    canary = tmp_path / "canary"
    inputs = keras.Input((2,), name="x")
    archive = version_folder(tmp_path, "lambda") / "model.keras"
    keras.Model(inputs, keras.layers.Lambda(writes(canary))(inputs)).save(archive)
    canary.unlink()  # building the model ran the lambda once; loading it must not

    assert_refused(tmp_path / "store", tmp_path, "lambda",
                   r"model\.keras: cannot load: Requested the deserialization of a `Lambda` layer whose "
                   r"`function` is a Python lambda", canary)

    keras.saving.load_model(archive, safe_mode=False)  # positive control
    assert canary.exists()


@pytest.mark.parametrize("where", ["function", "output_shape", "activation"])
def test_hand_placed_bytecode_is_refused_wherever_it_sits(tmp_path, where):
    """Bytecode grafted by hand into a benign config, where Keras unmarshals a `__lambda__`: a Lambda
    layer's function or output shape (Lambda's own check), or any function config, here an activation
    (the generic deserializer's check)."""
    canary = tmp_path / "canary"
    archive = benign_archive(version_folder(tmp_path, "bytecode") / "model.keras")
    code = bytecode(canary)
    if where == "activation":
        rewrite_config(archive, as_activation({"class_name": "__lambda__", "config": {"value": code}}))
        reason = r"Requested the deserialization of a Python lambda"
    else:
        payload = {"class_name": "__lambda__", "config": {"code": code, "defaults": None, "closure": None}}
        layer = lambda_layer(payload if where == "function" else {"module": "keras.activations",
                                                                   "class_name": "function",
                                                                   "config": "linear",
                                                                   "registered_name": None})
        if where == "output_shape":
            layer["config"]["output_shape"] = payload
        rewrite_config(archive, after_dense(layer))
        reason = r"Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda"

    assert_refused(tmp_path / "store", tmp_path, "bytecode", reason, canary)

    load_unsafely(archive)  # positive control
    assert canary.exists()


def test_the_mixed_precision_rebuild_from_config_is_in_safe_mode_too(tmp_path):
    """`_in_mixed_precision` rebuilds a loaded model from its config: were it unsafe, a model reaching it
    with a lambda would run the lambda. Its own deserialization refuses one."""
    canary = tmp_path / "canary"
    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(writes(canary))(keras.layers.Dense(2)(inputs)))
    canary.unlink()

    with pytest.raises(ValueError, match="Requested the deserialization of a `Lambda` layer"):
        _in_mixed_precision(model)
    assert not canary.exists()

    config = keras.saving.serialize_keras_object(model)  # positive control: the same config, unsafe
    keras.saving.deserialize_keras_object(config, safe_mode=False)
    assert canary.exists()


# -- 2. Configs naming arbitrary modules and functions ---------------------------------------------------
class StandIn:
    """What Keras before 3.9 resolved an arbitrary `module`/`class_name` to (CVE-2025-1550): this stand-in,
    passed under the same name as a custom object, writes the canary when Keras calls it (a function) or
    builds it (a class), in the place `os.system` & co. would have run."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __call__(self, *args, **kwargs):
        self.canary.write_text("pwned")
        return args[0] if args else None

    def from_config(self, config):
        return self(**config)


NAMED = {  # id: (config edit given the canary and the tmp folder, the name it resolves, Keras's refusal)
    "os.system as an activation": (
        lambda canary, tmp: as_activation(function("os", "system")),
        "system", r"Could not locate function 'system'"),
    "builtins.exec as an activation": (
        lambda canary, tmp: as_activation({**function("builtins", "exec"), "registered_name": None}),
        "exec", r"Could not locate function 'exec'"),
    "subprocess.Popen as a layer": (
        lambda canary, tmp: after_dense({"module": "subprocess", "class_name": "Popen",
                                         "config": {"name": "payload", "args": ["touch", str(canary)]}}),
        "Popen", r"Could not locate class 'Popen'"),
    "our own api.training.train in a Lambda": (
        lambda canary, tmp: after_dense(lambda_layer(function("api.training", "train"),
                                                     {"folder": str(canary)})),
        "train", r"Could not locate function 'train'"),
    "keras.utils.get_file in a Lambda": (
        lambda canary, tmp: after_dense(lambda_layer(function("keras.utils", "get_file"), {
            "origin": (tmp / "secret").as_uri(), "fname": canary.name, "cache_dir": str(tmp)})),
        "get_file", r"Cannot deserialize `keras\.utils\.get_file` because it is not a modeling function"),
    "keras.config.enable_unsafe_deserialization as an activation": (
        lambda canary, tmp: as_activation(function("keras.config", "enable_unsafe_deserialization")),
        "enable_unsafe_deserialization",
        r"Cannot deserialize `keras\.config\.enable_unsafe_deserialization` because it is not a modeling"),
    "a Keras-internal function by its import path, as a layer": (
        lambda canary, tmp: after_dense({"module": "keras.src.utils.file_utils", "class_name": "copy",
                                         "config": {"name": "payload", "src": str(tmp / "secret"),
                                                    "dst": str(canary)}}),
        "copy", r"Could not deserialize 'keras\.src\.utils\.file_utils\.copy' because it is not a "
                r"KerasSaveable subclass"),
}


@pytest.mark.parametrize("attack", NAMED)
def test_a_config_naming_an_arbitrary_function_is_refused(tmp_path, attack):
    """A `module` + `class_name`/`config` pair naming any function (os.system, exec, Popen, a function of
    this code base, Keras's own file download or safe-mode switch) resolves to nothing: refused."""
    graft, name, reason = NAMED[attack]
    canary = tmp_path / "canary"
    (tmp_path / "secret").write_text("hunter2")
    archive = rewrite_config(benign_archive(version_folder(tmp_path, "named") / "model.keras"),
                             graft(canary, tmp_path))

    assert_refused(tmp_path / "store", tmp_path, "named", reason, canary)

    # No true positive control: Keras 3.15 refuses these names even with safe_mode=False (it imports
    # nothing outside Keras, and refuses its non-modeling functions). The control shows instead that the
    # config is live: resolve the same name to a stand-in, as an unfixed Keras resolved it to the real
    # function, and loading runs it.
    with pytest.raises(Exception, match=reason):
        keras.saving.load_model(archive, safe_mode=False)
    assert not canary.exists()
    load_unsafely(archive, custom_objects={name: StandIn(canary)})
    assert canary.exists()


# -- 3. Layers that load another SavedModel or a file from outside the archive ----------------------------
class Attacker(tf.Module):
    """A SavedModel an attacker controls: a resource whose initialiser writes `<canary>.init` as soon as
    TensorFlow loads the SavedModel, and a signature writing `<canary>.serve` whenever it runs."""

    def __init__(self, canary: Path):
        super().__init__()
        self.scale = tf.Variable(2.0)
        self.resource = WritesOnLoad(f"{canary}.init")
        self.target = str(canary) + ".serve"

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x):
        tf.io.write_file(self.target, "pwned")
        return {"y": x * self.scale}


class WritesOnLoad(tf.saved_model.experimental.TrackableResource):
    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")

    def _initialize(self):
        tf.io.write_file(self.target, "pwned")


def attacker_saved_model(folder: Path, canary: Path) -> list[Path]:
    """Save an `Attacker` SavedModel; returns the canaries it writes (none written yet)."""
    module = Attacker(canary)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return [Path(f"{canary}.init"), Path(f"{canary}.serve")]


def test_a_tfsmlayer_loading_an_attacker_savedmodel_is_refused(tmp_path):
    """A TFSMLayer names a SavedModel outside the archive, which runs TensorFlow code as it loads."""
    canaries = attacker_saved_model(tmp_path / "elsewhere", tmp_path / "canary")
    inputs = keras.Input((2,), name="x")
    layer = keras.layers.TFSMLayer(str(tmp_path / "elsewhere"), call_endpoint="serving_default")
    archive = version_folder(tmp_path, "tfsm") / "model.keras"
    keras.Model(inputs, layer(inputs)).save(archive)
    for canary in canaries:  # building the layer loaded the SavedModel once
        canary.unlink(missing_ok=True)

    assert_refused(tmp_path / "store", tmp_path, "tfsm",
                   r"cannot load: Requested the deserialization of a `TFSMLayer`, which loads an external "
                   r"SavedModel", *canaries)

    model = keras.saving.load_model(archive, safe_mode=False)  # positive control
    model(np.ones((1, 2), "float32"))
    assert all(canary.exists() for canary in canaries)


def test_a_lookup_vocabulary_read_from_a_path_outside_the_archive_is_refused(tmp_path):
    """A StringLookup whose `vocabulary` is a file path reads any file the server can (its lines become the
    vocabulary, and so answers). No canary to write: what must not happen is the read."""
    secret = tmp_path / "secret"
    secret.write_text("hunter2\nswordfish\n")
    inputs = keras.Input((1,), dtype="string", name="words")
    archive = version_folder(tmp_path, "lookup") / "model.keras"
    keras.Model(inputs, keras.layers.StringLookup(vocabulary=["a", "b"], name="lookup")(inputs)).save(archive)

    def point_at_secret(config):
        lookup, = (layer for layer in config["config"]["layers"] if layer["class_name"] == "StringLookup")
        lookup["config"]["vocabulary"] = str(secret)

    rewrite_config(archive, point_at_secret)
    with zipfile.ZipFile(archive) as zipped:  # the in-archive vocabulary would replace the file's on load
        entries = {name: zipped.read(name) for name in zipped.namelist() if not name.startswith("assets/")}
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)

    error = assert_refused(tmp_path / "store", tmp_path, "lookup",
                           r"cannot load: .*Requested the loading of a vocabulary file outside of the "
                           r"model archive")
    assert "hunter2" not in error

    model = keras.saving.load_model(archive, safe_mode=False)  # positive control: the file is read
    assert {"hunter2", "swordfish"} <= set(model.get_layer("lookup").get_vocabulary())


# Keras warns as it goes on past the refused layer, then raises; pytest would raise the warning instead.
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
@pytest.mark.parametrize("link", ["external dataset", "external link"])
def test_weights_that_point_at_a_file_outside_the_archive_are_refused(tmp_path, link):
    """model.weights.h5 is HDF5, which can store a dataset's bytes in another file or link to another HDF5
    file: the weights would be read from anywhere on the server."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"sixteen secrets!")  # a 2x2 float32 kernel's 16 bytes
    archive = benign_archive(version_folder(tmp_path, "weights") / "model.keras")
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(archive) as zipped:
        entries = {name: zipped.read(name) for name in zipped.namelist()}
    weights.write_bytes(entries["model.weights.h5"])
    with h5py.File(weights, "r+") as h5:
        del h5["layers/dense/vars/0"]
        if link == "external dataset":
            h5.create_dataset("layers/dense/vars/0", shape=(2, 2), dtype="float32",
                              external=[(str(secret), 0, 16)])
            reason = r"Not allowed: H5 file with external Dataset"
        else:
            with h5py.File(tmp_path / "other.h5", "w") as other:
                other["kernel"] = np.frombuffer(secret.read_bytes(), "float32").reshape(2, 2)
            h5["layers/dense/vars/0"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/kernel")
            reason = r"Not allowed: H5 file with ExternalLink"
    entries["model.weights.h5"] = weights.read_bytes()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)

    assert_refused(tmp_path / "store", tmp_path, "weights", r"cannot load: .*" + reason)

    # Keras refuses these whatever safe_mode says; the control shows the weights file does reach out.
    with h5py.File(weights, "r") as h5:
        assert h5["layers/dense/vars/0"][()].tobytes() == secret.read_bytes()


# -- 3b. A SavedModel is a program: its graph is checked before TensorFlow loads it ------------------------
def test_a_savedmodel_whose_graph_writes_files_is_refused_before_tensorflow_loads_it(tmp_path):
    """A SavedModel version has no safe mode: TensorFlow runs its resource initialisers while loading it and
    its signature at warm-up. One whose runnable functions use ops reaching outside the model (here
    WriteFile) is refused before `tf.saved_model.load`, naming the ops."""
    folder = version_folder(tmp_path, "graph")
    canaries = attacker_saved_model(folder, tmp_path / "canary")

    assert_refused(tmp_path / "store", tmp_path, "graph",
                   r"graph/1: SavedModel refused: its functions use WriteFile, ops that reach outside "
                   r"the model", *canaries)

    loaded = tf.saved_model.load(str(folder))  # positive control: TensorFlow's loader runs them
    assert canaries[0].exists()
    loaded.signatures["serving_default"](x=tf.ones((1, 2)))
    assert canaries[1].exists()


@pytest.mark.parametrize("op", ["PrintV2", "ReadFile", "MatchingFiles"])
def test_savedmodel_ops_that_read_list_or_print_to_files_are_refused_too(tmp_path, op):
    """Printing to `file://` appends to any file; ReadFile and MatchingFiles read and list the server's."""
    target = tmp_path / "target"
    target.write_text("hunter2")

    class Reaches(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            if op == "PrintV2":
                tf.print("pwned", output_stream=target.as_uri())
                return {"y": x}
            found = tf.io.read_file(str(target)) if op == "ReadFile" else tf.io.matching_files(str(target))
            return {"y": x + tf.cast(tf.size(tf.strings.bytes_split(tf.reshape(found, [-1])[0])), tf.float32)}

    module = Reaches()
    folder = version_folder(tmp_path, "reach")
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})

    assert_refused(tmp_path / "store", tmp_path, "reach", rf"SavedModel refused: its functions use {op}, ")
    assert target.read_text() == "hunter2"

    # positive control: TensorFlow runs it (the printed line lands in the file; the read reaches the answer)
    answer = tf.saved_model.load(str(folder)).signatures["serving_default"](x=tf.zeros((1, 2)))["y"]
    if op == "PrintV2":
        assert target.read_text() == "hunter2pwned\n"
    else:
        assert answer.numpy()[0, 0] == (len("hunter2") if op == "ReadFile" else len(str(target)))


def test_a_tensorflow_1_savedmodel_is_refused_whole(tmp_path):
    """TensorFlow 1 SavedModels have no object graph: their loader runs whatever op the graph names as an
    initialiser (`main_op`), so no scan of functions covers them."""
    canary = tmp_path / "canary"
    folder = tmp_path / "store" / "tf1" / "1"
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        builder = tf.compat.v1.saved_model.Builder(str(folder))
        builder.add_meta_graph_and_variables(
            session, ["serve"], main_op=tf.io.write_file(str(canary), "pwned"),
            signature_def_map={"serving_default": tf.compat.v1.saved_model.predict_signature_def(
                {"x": x}, {"y": tf.identity(x * 2)})})
        builder.save()

    assert_refused(tmp_path / "store", tmp_path, "tf1",
                   r"a TensorFlow 1 SavedModel, whose loader runs any op its graph names", canary)

    tf.saved_model.load(str(folder))  # positive control
    assert canary.exists()


@pytest.mark.parametrize("hiding_place", ["a nested function", "a cond branch", "a while loop's body"])
def test_the_check_follows_every_call_into_the_graph(tmp_path, hiding_place):
    """The op is found wherever the runnable functions reach it: in a function they call, a branch of a
    conditional, the body of a loop (each its own function in the SavedModel's library)."""
    canary = tmp_path / "canary"

    @tf.function
    def write(x):
        tf.io.write_file(str(canary), "pwned")
        return x

    class Hides(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            if hiding_place == "a nested function":
                return {"y": write(x)}
            if hiding_place == "a cond branch":
                return {"y": tf.cond(tf.reduce_sum(x) >= 0, lambda: write(x), lambda: x)}
            return {"y": tf.while_loop(lambda i, y: i < 1, lambda i, y: (i + 1, write(y)), (0, x))[1]}

    module = Hides()
    folder = version_folder(tmp_path, "hides")
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})

    assert_refused(tmp_path / "store", tmp_path, "hides", r"SavedModel refused: its functions use WriteFile",
                   canary)

    tf.saved_model.load(str(folder)).signatures["serving_default"](x=tf.ones((1, 2)))  # positive control
    assert canary.exists()


def test_an_exported_keras_model_is_still_served(tmp_path):
    """The check refuses no ordinary SavedModel: Keras's own export (with its checkpoint functions, which
    use SaveV2 and RestoreV2 but never run on loading) loads, warms up and serves."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ])
    model.export(str(tmp_path / "store" / "plain" / "1"), format="tf_saved_model", verbose=False)
    registry, ready = load_through_worker(tmp_path / "store", tmp_path / "run", "plain")
    assert registry.state == "ready", registry.error
    assert ready.status_code == 200
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype="float32")
    served, = registry.get("plain").runtime.infer(x).values()
    assert np.allclose(served, model(x, training=False), atol=1e-6)


def test_a_hostile_savedmodel_leaves_a_real_worker_up_not_ready_and_saying_why(tmp_path):
    """Through gunicorn, as deployed: the worker stays up, /ready answers 503 with the reason, no canary."""
    canaries = attacker_saved_model(version_folder(tmp_path, "graph"), tmp_path / "canary")
    server = Gunicorn(tmp_path, model_store=tmp_path / "store", model_name="graph", workers=1)
    try:
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            assert server.process.poll() is None, server.log()
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(server.url + "/ready", timeout=2)
                if "failed to load" in answer.text:
                    break
            time.sleep(0.1)
        assert answer is not None and answer.status_code == 503, server.log()
        assert "SavedModel refused: its functions use WriteFile" in answer.json()["error"]
        assert requests.get(server.url + "/health", timeout=2).status_code == 200
    finally:
        server.stop()
    assert not any(canary.exists() for canary in canaries)


# -- 4. Formats we do not load ---------------------------------------------------------------------------
def hdf5_model_with_a_lambda(path: Path, canary: Path) -> Path:
    inputs = keras.Input((2,), name="x")
    keras.Model(inputs, keras.layers.Lambda(writes(canary))(inputs)).save(path)
    canary.unlink()
    return path


def test_an_h5_model_is_refused_unopened(tmp_path):
    """CVE-2025-9905: HDF5 models loaded without safe mode. Refused by name, before Keras opens them."""
    canary = tmp_path / "canary"
    h5 = hdf5_model_with_a_lambda(version_folder(tmp_path, "hdf5") / "model.h5", canary)

    assert_refused(tmp_path / "store", tmp_path, "hdf5",
                   r"model\.h5 is an HDF5 model, which loads without safe mode; re-save it as \.keras",
                   canary)

    keras.saving.load_model(h5, safe_mode=False)  # positive control
    assert canary.exists()


@pytest.mark.parametrize("disguise", ["HDF5 renamed model.keras", "an unzipped model.keras folder"])
def test_a_keras_name_on_another_format_is_refused(tmp_path, disguise):
    """Only the zip Keras v3 writes is a `.keras` model: an HDF5 file renamed, or an unzipped archive, is
    refused by the store with the reason (Keras itself says only "file not found" or "is a directory")."""
    canary = tmp_path / "canary"
    folder = version_folder(tmp_path, "disguised")
    if disguise.startswith("HDF5"):
        hdf5_model_with_a_lambda(tmp_path / "model.h5", canary).rename(folder / "model.keras")
        original = tmp_path / "control.h5"  # the same bytes under their own name, for the control
        original.write_bytes((folder / "model.keras").read_bytes())
    else:
        archive = benign_archive(tmp_path / "control.keras")
        rewrite_config(archive, after_dense(lambda_layer({"class_name": "__lambda__", "config": {
            "code": bytecode(canary), "defaults": None, "closure": None}})))
        zipfile.ZipFile(archive).extractall(folder / "model.keras")
        original = tmp_path / "unzipped"  # Keras loads an unzipped archive by a name without `.keras`
        zipfile.ZipFile(archive).extractall(original)

    assert_refused(tmp_path / "store", tmp_path, "disguised",
                   r"model\.keras: not a Keras v3 archive \(the zip model\.save\('model\.keras'\) writes\); "
                   r"HDF5 files and unzipped folders are refused", canary)

    with contextlib.suppress(Exception):  # positive control: loaded as what it really is, unsafe
        keras.saving.load_model(original, safe_mode=False)
    assert canary.exists()


@pytest.mark.parametrize("files", [["saved_model.pbtxt"], ["model.pkl"], ["model.weights.h5"],
                                   ["a.keras", "b.keras"]])
def test_other_formats_are_not_models(tmp_path, files):
    """A text SavedModel, a pickle, weights alone, two candidate archives: none is taken as the model.
    Nothing here is opened at all, so there is no payload to run and no positive control to make."""
    folder = version_folder(tmp_path, "other")
    for name in files:
        (folder / name).write_bytes(b"\x89HDF\r\n\x1a\n" if name.endswith(".h5") else b"cos\nsystem\n.")
    reason = r"model\.weights\.h5 is an HDF5 model" if files == ["model.weights.h5"] else \
        r"no model\.keras, single \*\.keras file or saved_model\.pb"
    assert_refused(tmp_path / "store", tmp_path, "other", reason)


# -- 5. The Keras release --------------------------------------------------------------------------------
def test_keras_is_pinned_and_installed_at_a_release_with_the_loading_fixes():
    """requirements.txt pins Keras at or past the last known model-loading fix, and that is what runs."""
    pin, = re.findall(r"^keras==([^\s#]+)", (ROOT / "requirements.txt").read_text(), flags=re.MULTILINE)
    assert Version(pin) >= KERAS_WITH_THE_LOADING_FIXES, pin
    assert Version(keras.__version__) == Version(pin), (keras.__version__, pin)
