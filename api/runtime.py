"""One loaded model version behind one compiled, batch-polymorphic TensorFlow function.

This is the only module that imports TensorFlow. It is imported in gunicorn workers after the fork,
never in the master (TensorFlow is not fork-safe). `model.predict` is never used: it costs ~60 ms of
fixed overhead per call, against well under 1 ms for the compiled function traced here once.
"""
import ctypes
import gc
import os
import logging
import re
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # gunicorn workers: SERVE_TF_LOG_LEVEL (post_fork)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402

from api.errors import InferenceFailed  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.model.signature import STRING, ModelSignature, TensorInfo  # noqa: E402
from api.model.store import ModelVersion, StoreError  # noqa: E402

log = logging.getLogger("api.runtime")
_configured = threading.Lock()
_device: str | None = None


def configure_tensorflow(settings: Settings) -> str:
    """Set threads and devices once per process, before TensorFlow starts; returns the device used."""
    global _device
    with _configured:
        if _device is None:
            gpus = tf.config.list_physical_devices("GPU")
            if settings.device == "gpu" and not gpus:
                raise StoreError("SERVE_DEVICE=gpu but TensorFlow sees no GPU")
            use_gpu = bool(gpus) and settings.device != "cpu"
            try:
                tf.config.threading.set_intra_op_parallelism_threads(settings.tf_intra_op_threads)
                tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
                if not use_gpu:
                    tf.config.set_visible_devices([], "GPU")
                for gpu in gpus if use_gpu else []:  # let workers share a GPU, not the first take it all
                    if settings.gpu_memory_mb:
                        tf.config.set_logical_device_configuration(
                            gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=settings.gpu_memory_mb)])
                    else:
                        tf.config.experimental.set_memory_growth(gpu, True)
                if use_gpu and settings.mixed_precision:
                    keras.mixed_precision.set_global_policy("mixed_float16")
            except RuntimeError as exc:  # TensorFlow already started in this process (tests, notebooks)
                log.warning("TensorFlow was initialised before the server configured it: %s", exc)
            _device = "/GPU:0" if use_gpu else "/CPU:0"
            log.info("TensorFlow device=%s gpus_visible=%d CUDA_VISIBLE_DEVICES=%s intra_op_threads=%d "
                     "inter_op_threads=%d xla=%s mixed_precision=%s", _device, len(gpus),
                     os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), settings.tf_intra_op_threads,
                     settings.inter_op_threads, settings.xla, use_gpu and settings.mixed_precision)
        return _device


class ModelRuntime:
    """A model version, loaded once, answering `infer({input name: array}) -> {output name: array}`.

    A model may have any number of inputs and outputs. `inputs` and `outputs` (name -> TensorInfo, in the
    model's order) are what `signature` carries to the protocols: a Keras model's inputs are named by the
    keys of its input dict or by its `keras.Input` names, its outputs by the keys of its output dict or by
    the layers that produce them; a SavedModel's by its `serving_default` signature.
    """

    def __init__(self, version: ModelVersion, device: str, xla: bool = False, mixed_precision: bool = False,
                 freeze_graph: bool = False):
        self.version = version
        self.device = device
        self.xla = xla
        self.mixed_precision = mixed_precision and version.format == "keras"
        self.frozen = False  # the graph runs with its variables folded in as constants (freeze_graph)
        self._warmed: dict[int, float] = {}  # batch size -> seconds of a call of it the load already made
        started = time.perf_counter()
        with tf.device(device):
            if version.format == "keras":
                self._fn, self.inputs, self.outputs = _compile_keras(version, xla, self.mixed_precision)
            else:
                self._fn, self.inputs, self.outputs = _compile_saved_model(version)
        self._names = tuple(self.inputs)  # the order the compiled call takes its tensors in
        # `_call(tensors)` takes one tensor per input, in `_names`' order, and returns the dict of outputs.
        if hasattr(self._fn, "get_concrete_function"):
            # The traced graph itself: calling it skips tf.function's argument binding and signature
            # matching (~140 us of Python per call here), and it can never retrace.
            concrete = self._fn.get_concrete_function()
            if hasattr(concrete, "_call_flat"):
                # ...and its flat call skips the concrete function's own argument binding as well: a
                # quarter of a digits batch's call (measured ~260 us of ~1 ms, TensorFlow 2.21, pinned).
                # The graph takes the input tensors, flat, in the signature's order, and returns the
                # signature's dict of outputs.
                captured = concrete.captured_inputs
                self._call = lambda tensors: concrete._call_flat(tensors, captured)
                if freeze_graph and device.startswith("/CPU") and not xla:
                    self._freeze(concrete)
            else:
                self._call = lambda tensors: concrete(*tensors)
        else:
            self._call = self._fn
        self.signature = ModelSignature(version.name, version.version, version.format,
                                        dict(self.inputs), dict(self.outputs), tuple(version.labels),
                                        version.serving.image)
        self.load_seconds = time.perf_counter() - started
        self.warmup_seconds = 0.0
        self.call_seconds = 0.0  # one warm call at the largest warm-up batch, set by warm_up

    def _freeze(self, concrete) -> None:
        """Call the traced graph with its variables folded in as constants (TensorFlow's frozen graph):
        oneDNN then lays each convolution's filter out once and keeps it, where a variable's filter is
        laid out again on every call. ResNet50 on one core, two calls side by side, measured 28-30 against
        19-22 images/s at batch 1, 30-33 against 24 at batch 2, 30-32 against 28 at batch 8
        (docs/performance.md, "A frozen graph").

        Kept only where the frozen graph takes the same inputs and gives the same outputs as the original
        on a blank instance: a graph that holds other state (a lookup table's handle) cannot be frozen, and
        keeps its variables, with a warning."""
        started = time.perf_counter()
        try:
            frozen = convert_variables_to_constants_v2(concrete)
            # the outputs' structure without the original graph's tensors (they would keep that graph alive)
            structure = tf.nest.map_structure(lambda _: None, concrete.structured_outputs)
            # one instance: a slow model's load pays two calls of it (the tests' hung model: 12 s each)
            sample = [tf.convert_to_tensor(array) for array in self.zeros(1).values()]

            def call(tensors):  # the frozen graph returns its outputs flat, in the structure's order
                return tf.nest.pack_sequence_as(structure, frozen._call_flat(tensors, frozen.captured_inputs))

            # The reference runs eagerly, not through the variables' graph: a graph of the same shapes run
            # once in this process makes the frozen graph's answers depend on which inter-op thread runs
            # each op (oneDNN primitives cached per thread: the same instance gave two answers, 2e-6 apart,
            # alternately, with 2 inter-op threads; TensorFlow 2.21 with oneDNN, docs/performance.md).
            expected = self._fn.python_function(*sample)
            timed = time.perf_counter()
            got = call(sample)
            called = time.perf_counter() - timed
            for name in self.outputs:
                if not _same_output(expected[name].numpy(), got[name].numpy()):
                    raise ValueError(f"output {name!r} differs from the original graph's")
        except Exception as exc:  # noqa: BLE001 - freezing is an optimisation: the original graph serves
            log.warning("%s version %s: serving its variables, not a frozen graph (SERVE_FREEZE_GRAPH): %s",
                        self.version.name, self.version.version, str(exc).splitlines()[0][:300])
            return
        self._call, self.frozen = call, True
        self._warmed[1] = called  # the check's call warmed a batch of one: warm_up need not run it again
        del expected, got
        _release_freed_memory()  # freezing builds and drops several copies of the weights (ResNet50: ~1 GB)
        log.info("%s version %s: frozen graph in %.1f s", self.version.name, self.version.version,
                 time.perf_counter() - started)

    @classmethod
    def from_settings(cls, version: ModelVersion, device: str, settings: Settings) -> "ModelRuntime":
        """`version` compiled with the options `settings` gives (SERVE_XLA, SERVE_MIXED_PRECISION,
        SERVE_FREEZE_GRAPH): the one way the workers, the batch job and the bench's limit build it."""
        return cls(version, device, xla=settings.xla, mixed_precision=settings.mixed_precision,
                   freeze_graph=settings.freeze_graph)

    @property
    def input(self) -> TensorInfo:
        """The one input of a single-input model; ValueError for a model with several."""
        return self.signature.input

    def zeros(self, size: int) -> dict[str, np.ndarray]:
        """A batch of `size` blank instances for every input (a None dimension taken as 1): zeros for a
        numeric input, empty strings (b"") for a string one."""
        return {name: blank((size, *(d or 1 for d in info.instance_shape)), info.dtype)
                for name, info in self.inputs.items()}

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Run the compiled function at each batch size, blank instances for every input (zeros, or b""
        for strings), so no request pays for tracing or allocation; `call_seconds` is then the time of
        one warm call at the largest of them. A size the load already ran through the served function
        (the frozen graph's check: a batch of one) is not run again, and its call counts in
        `warmup_seconds`."""
        started = time.perf_counter()
        for size in batch_sizes:
            if size not in self._warmed:  # a slow model's load pays each of its calls (tests: 12 s each)
                self.infer(self.zeros(size))
        self.warmup_seconds = time.perf_counter() - started + sum(self._warmed.get(size, 0.0)
                                                                  for size in set(batch_sizes))
        if batch_sizes and self.warmup_seconds < 10:  # a model this slow is never run inline anyway
            batch = self.zeros(max(batch_sizes))
            timed = time.perf_counter()
            self.infer(batch)
            self.call_seconds = time.perf_counter() - timed
        else:
            self.call_seconds = self.warmup_seconds

    def infer(self, batch: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """One compiled call, on the calling thread (the batcher's inference thread when serving).

        `batch`: input name -> array [n, *instance shape] in the input's dtype, one per input, the same n
        for all (a single-input model also takes the bare array); a string input's array is an object
        array of bytes (STRING), which TensorFlow takes as tf.string. Returns output name -> array
        [n, ...] in the dtype `outputs` declares (a string output: an object array of bytes). Raises
        InferenceFailed (400) when TensorFlow refuses the values, ValueError when an input is missing (a
        caller's bug: the protocols check names first).
        """
        if not isinstance(batch, dict):
            if len(self._names) != 1:
                raise ValueError(f"infer needs a dict of the inputs {list(self._names)}, got one array")
            batch = {self._names[0]: batch}
        try:
            if len(batch) != len(self._names):
                raise KeyError
            tensors = [tf.convert_to_tensor(batch[name]) for name in self._names]
        except KeyError:
            raise ValueError(f"infer needs the inputs {list(self._names)}, got {sorted(batch)}") from None
        try:
            results = self._call(tensors)
        except tf.errors.InvalidArgumentError as exc:
            # The model refusing these values is the client's fault, as TensorFlow Serving maps it.
            raise InferenceFailed(f"the model refused this input: {str(exc).splitlines()[0][:300]}",
                                  status=400) from None
        return {name: _as_served(results[name].numpy(), info.dtype) for name, info in self.outputs.items()}

    def describe(self) -> dict:
        """How this version runs, for the metadata routes: device, compiler options, traces, timings (s)."""
        return {"device": self.device, "xla": self.xla, "mixed_precision": self.mixed_precision,
                "frozen_graph": self.frozen,
                "traces": self.traces, "load_seconds": round(self.load_seconds, 3),
                "warmup_seconds": round(self.warmup_seconds, 3)}

    @property
    def traces(self) -> int:
        """How many times the function was traced: 1 after warm-up, and it must stay 1."""
        return int(self._fn.experimental_get_tracing_count()) if hasattr(
            self._fn, "experimental_get_tracing_count") else 1


def _same_output(want: np.ndarray, have: np.ndarray) -> bool:
    """The same dtype and shape, and the same values: within 1e-4 (relative) for floats, whose kernels
    may differ once the filters are constants; exactly for anything else."""
    if want.dtype != have.dtype or want.shape != have.shape:
        return False
    if want.dtype.kind in "fc":
        return bool(np.allclose(want, have, rtol=1e-4, atol=1e-5))
    return bool(np.array_equal(want, have))


def _release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim): memory freed in many large
    blocks otherwise stays resident, counted against the worker (ResNet50 frozen: 2.9 GiB, 1.9 after)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass


def _as_served(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Outputs in the dtype the metadata declares (float16 under mixed precision becomes float32)."""
    return value if value.dtype == dtype else value.astype(dtype)


def blank(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array of `shape` holding nothing: zeros, or empty strings (b"") for a string dtype."""
    return np.full(shape, b"", dtype=STRING) if dtype == STRING else np.zeros(shape, dtype=dtype)


def _numpy_dtype(dtype) -> np.dtype:
    """The numpy dtype of a TensorFlow or Keras dtype ("float32", "string", tf.string...): tf.string is
    STRING, an object array of bytes, as TensorFlow's own `.numpy()` gives it."""
    return np.dtype(tf.as_dtype(dtype).as_numpy_dtype)


def _compile_keras(version: ModelVersion, xla: bool = False, mixed_precision: bool = False):
    try:
        # safe_mode refuses Lambda layers and arbitrary callables in the archive's config.
        model = keras.saving.load_model(version.path, compile=False, safe_mode=True)
        if mixed_precision:
            model = _in_mixed_precision(model)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError... on bad archives
        raise StoreError(f"{version.path}: cannot load: {exc}") from exc
    if not model.inputs:
        raise StoreError(f"{version.path}: the model has no inputs")
    structure = _structure(model, "input", model.inputs)
    input_names = _names(structure, [_tensor_name(spec, f"input_{i}") for i, spec in enumerate(model.inputs)],
                         "input")
    inputs = {name: TensorInfo(name, _numpy_dtype(spec.dtype), tuple(spec.shape))
              for name, spec in zip(input_names, model.inputs)}
    output_names = _names(_structure(model, "output", model.outputs), _output_names(model), "output")

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype) for spec in model.inputs],
                 jit_compile=xla or None)
    def serve(*tensors):
        # The model gets its inputs in the structure it was built with (one tensor, a list, a dict).
        result = model(keras.tree.pack_sequence_as(structure, list(tensors)), training=False)
        return dict(zip(output_names, keras.tree.flatten(result), strict=True))

    # Trace now, once: the signature fixes every later call to it. The traced graph knows each output's
    # real dtype where Keras's symbolic one can be wrong (StringLookup(invert=True) declares int64 and
    # gives tf.string): a string output is a string whatever Keras says; otherwise Keras's dtype is the
    # one served (float32 for a mixed-precision model's float16, see _as_served).
    traced = serve.get_concrete_function().structured_outputs
    outputs = {name: TensorInfo(name, STRING if traced[name].dtype == tf.string else _numpy_dtype(out.dtype),
                                tuple(out.shape))
               for name, out in zip(output_names, model.outputs)}
    serve.model = model  # keep the variables alive with the function
    return serve, inputs, outputs


def _structure(model, which: str, flat: list):
    """The model's `input` or `output` as built (a tensor, a list, a dict of them), whose flattening is
    `flat` (`model.inputs`, `model.outputs`); a model never called (a Sequential) has only `flat`."""
    try:
        structure = getattr(model, which)
    except (AttributeError, ValueError):
        structure = None
    if structure is None or len(keras.tree.flatten(structure)) != len(flat):
        return flat[0] if len(flat) == 1 else list(flat)
    return structure


def _names(structure, fallback: list[str], what: str) -> list[str]:
    """The tensors' names, flat: a dict's keys where the model has a dict of them (`{"a": ..., "b": ...}`),
    else `fallback` (input or output layer names); `<what>_<i>` where these are not unique."""
    paths = [path for path, _ in keras.tree.flatten_with_path(structure)]
    names = [str(path[-1]) if path and isinstance(path[-1], str) else name
             for path, name in zip(paths, fallback, strict=True)]
    return names if len(set(names)) == len(names) else [f"{what}_{i}" for i in range(len(names))]


def _in_mixed_precision(model):
    """The same model computing in float16, its last layer (the outputs) kept in float32.

    A saved model carries each layer's dtype policy, so Keras's global policy does not reach it:
    rebuild it from its config (in safe mode) with the policy changed, then copy the weights.
    """
    config = keras.saving.serialize_keras_object(model)
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        raise StoreError("mixed precision needs a Sequential or functional model")
    kept = _output_layers(config["config"].get("output_layers")) or {layers[-1].get("config", {}).get("name")}
    for layer in layers:
        name = layer.get("config", {}).get("name", layer.get("name"))
        if (layer.get("class_name") not in _KEEP_DTYPE and name not in kept and layer is not layers[-1]
                and "dtype" in layer.get("config", {})):  # an op layer (keras.ops.argmax) takes no dtype
            layer["config"]["dtype"] = "mixed_float16"
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    clone.set_weights(model.get_weights())
    return clone


_KEEP_DTYPE = {"InputLayer", "StringLookup", "IntegerLookup", "TextVectorization", "Hashing", "HashedCrossing",
               "CategoryEncoding", "Discretization"}
"""Layers a mixed-precision rebuild leaves alone: the inputs, and the preprocessing layers whose dtype is
their output's (indices, counts), not a float compute policy."""


def _output_layers(entry) -> set[str]:
    """The names of a functional config's output layers: `output_layers` holds `[name, node, tensor]`
    entries, alone, in a list or in a dict."""
    if isinstance(entry, dict):
        return set().union(*map(_output_layers, entry.values())) if entry else set()
    if isinstance(entry, (list, tuple)) and entry:
        if isinstance(entry[0], str):
            return {entry[0]}
        return set().union(*map(_output_layers, entry))
    return set()


# Ops that reach outside the model: files, checkpoints, data pipelines, summaries and prints (which may
# write to a file), protos read from a descriptor file, Python, other processes and machines. A SavedModel
# is a program with no safe mode, whose resource initialisers run inside `tf.saved_model.load` itself:
# one whose runnable functions use any of these ops is refused before TensorFlow loads it.
OUTSIDE_OPS = re.compile(r"File|Reader|Dataset|Iterator|Save|Restore|Checkpoint|Summary|Event|Debug|PyFunc"
                         r"|Print|Proto|Collective|Send|Recv|RemoteCall|ImmutableConst|LoadAndRemapMatrix"
                         r"|VocabRemapping")


def _outside_ops(folder) -> set[str]:
    """The ops matching `OUTSIDE_OPS` in what TensorFlow can run once it loads this SavedModel.

    TensorFlow 2 runs the functions its object graph names (signatures, methods, resource initialisers) and
    what they call, never the checkpoint functions saved beside them (SaveV2, RestoreV2: it restores
    variables itself). A SavedModel without an object graph is TensorFlow 1's, whose loader runs whatever
    op its graph names as an initialiser: refused whole.
    """
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    found = set()
    for graph in saved.meta_graphs:
        objects = graph.object_graph_def
        if not objects.nodes:
            raise StoreError(f"{folder}: a TensorFlow 1 SavedModel, whose loader runs any op its graph "
                             "names; re-export it with TensorFlow 2 (tf.saved_model.save or Keras's export)")
        library = {f.signature.name: f for f in graph.graph_def.library.function}
        pending = [*objects.concrete_functions, *(name for node in objects.nodes
                                                   for name in node.function.concrete_functions),
                   *(node.bare_concrete_function.concrete_function_name for node in objects.nodes)]
        seen = set()
        while pending:
            name = pending.pop()
            if name in seen or name not in library:
                continue
            seen.add(name)
            for node in library[name].node_def:
                if OUTSIDE_OPS.search(node.op):
                    found.add(node.op)
                pending.append(node.op)  # a node may call a library function by name
                for value in node.attr.values():  # or through an attribute: call, If, While, Case...
                    pending += [value.func.name, *(f.name for f in value.list.func)]
    return found


def _compile_saved_model(version: ModelVersion):
    try:
        outside = _outside_ops(version.path)
    except DecodeError as exc:
        raise StoreError(f"{version.path}: cannot load SavedModel: {exc}") from exc
    if outside:
        raise StoreError(f"{version.path}: SavedModel refused: its functions use "
                         f"{', '.join(sorted(outside))}, ops that reach outside the model (files, the network "
                         "or Python)")
    try:
        loaded = tf.saved_model.load(str(version.path))
        fn = loaded.signatures["serving_default"]
    except Exception as exc:
        raise StoreError(f"{version.path}: cannot load SavedModel: {exc}") from exc
    args, specs = fn.structured_input_signature
    if args or not specs:
        raise StoreError(f"{version.path}: serving_default must take named inputs, got {fn.structured_input_signature}")
    # Sorted by name: TensorFlow's own order for a dict of tensors (nest.flatten), as Keras's inputs and
    # outputs built from a dict are; the signature's dicts are in no particular order.
    inputs = {name: TensorInfo(name, np.dtype(spec.dtype.as_numpy_dtype), tuple(spec.shape.as_list()))
              for name, spec in sorted(specs.items())}
    outputs = {key: TensorInfo(key, np.dtype(out.dtype.as_numpy_dtype), tuple(out.shape.as_list()))
               for key, out in sorted(fn.structured_outputs.items())}
    names = tuple(inputs)

    def serve(tensors):
        return fn(**dict(zip(names, tensors)))

    serve.loaded = loaded  # the signature does not own the variables; keep them alive
    return serve, inputs, outputs


def _output_names(model) -> list[str]:
    """The layers that produce the outputs name them, as Keras's own `export` does."""
    names = []
    for i, tensor in enumerate(model.outputs):
        history = getattr(tensor, "_keras_history", None)
        names.append(history.operation.name if history else f"output_{i}")
    return names if len(set(names)) == len(names) else [f"output_{i}" for i in range(len(names))]


def _tensor_name(spec, default: str) -> str:
    name = getattr(spec, "name", None) or default
    return name.split(":")[0]
