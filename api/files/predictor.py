"""The batch job's core as one class, for engines that bring their own reading, writing and scheduling.

Ray Data runs it in an actor pool, one model load per actor (the class form of `map_batches`):

    ds = ray.data.read_parquet("s3://bucket/rows/")
    ds.map_batches(Predictor, fn_constructor_kwargs={"store": "/models", "model": "digits"},
                   batch_format="pyarrow", batch_size=512, concurrency=4).write_parquet("s3://bucket/out/")

Spark (3.4+) calls `predict` through `pyspark.ml.functions.predict_batch_udf` (docs/batch.md).

Rows are checked exactly as `keras-serving predict-files` checks them (the API's checks and words, the
same column mapping, api/files/columns.py) and a bad row never fails its batch: Ray gets an `error`
column (null where the row was predicted), Spark NaN predictions for the rows that failed.
"""
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from api.files import rows as checks
from api.files.columns import Columns, Layout
from api.files.formats import arrow_array, arrow_type
from api.protocols import tfserving
from api.settings import Settings


class Predictor:
    """`Predictor(store, model, version=None, top_k=None, device="auto", threads=0)`: loads the model
    (safe loader, compiled once), as a serving worker does; `version` a number or a label (None: the
    newest); `threads`: TensorFlow intra-op threads (0: SERVE_INTRA_OP_THREADS, else every core the
    process may use). Raises StoreError when the model does not load."""

    def __init__(self, store, model: str = "digits", version=None, top_k: int | None = None,
                 device: str = "auto", threads: int = 0):
        from api.files.pipeline import load_runtime  # TensorFlow: in the actor, not where the job is planned

        self.settings = Settings(model_store=store, model_name=model, device=device)
        self.runtime = load_runtime(self.settings, model, None if version is None else str(version),
                                    threads or self.settings.intra_op_threads or len(os.sched_getaffinity(0)))
        self.signature = self.runtime.signature
        self.layout = Layout(self.signature.inputs)
        self.top_k = tfserving.parse_top_k(top_k, self.settings.max_top_k, self.signature)
        self._request = tfserving.PredictRequest({}, False, *(self.top_k or (None, None)))

    # -- Ray Data: a batch in, the same rows out with their predictions ------------------------------
    def __call__(self, batch) -> pa.Table:
        """`batch`: a pyarrow Table (batch_format="pyarrow") or a dict of numpy arrays (batch_format=
        "numpy"), columns as api/files/columns.py maps them. Returns the columns that are not model inputs
        (keys and the like), `prediction` ([n, ...] of the output's dtype, a struct for several outputs;
        null where the row failed), `top_k` when asked, and `error` (the API's words; null where predicted)."""
        table = batch if isinstance(batch, pa.Table) else _table(batch)
        columns = Columns(table.column_names, self.layout, text=False, where="the batch")
        count = table.num_rows
        block = _Rows(count, columns, table)
        inferred = checks.infer(self.runtime, checks.check(block, self.signature, self.settings, self._limits(count)))
        carried = {name: table.column(name) for name in table.column_names if name not in self.signature.inputs}
        return pa.table({**carried, **self._predictions(inferred, count),
                         "error": pa.array([inferred.errors[i].message if i in inferred.errors else None
                                            for i in range(count)], type=pa.string())})

    # -- Spark: arrays in, the first output's array out ---------------------------------------------
    def predict(self, *inputs: np.ndarray):
        """One array per model input, in the model's order, [n, *instance shape] or flat [n, elements]
        (Spark's tensor columns). Returns the output [n, ...] as float, NaN in the rows that failed; a
        dict of them for a model with several outputs (a Spark struct)."""
        table = pa.table({name: arrow_array(np.asarray(value)) if np.asarray(value).ndim > 1
                          else pa.array(value) for name, value in zip(self.signature.inputs, inputs)})
        result = self(table)
        outputs = {}
        for name, info in self.signature.outputs.items():
            column = result.column("prediction") if len(self.signature.outputs) == 1 else \
                pc.struct_field(result.column("prediction"), name)
            values = column.to_pylist()
            blank = np.full(info.instance_shape, np.nan)
            outputs[name] = np.stack([np.asarray(v, dtype=float) if v is not None else blank for v in values])
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    # -- internals --------------------------------------------------------------------------------
    def _limits(self, count: int) -> Settings:
        return self.settings.model_copy(update={
            "max_instances": max(self.settings.max_instances, count),
            "max_tensor_elements": self.settings.max_tensor_elements * max(1, count)})

    def _predictions(self, inferred, count: int) -> dict:
        outputs = self.signature.outputs
        rows: list = [None] * count
        ranked: list = [None] * count
        for positions, values in inferred.groups:
            answer = tfserving.predict_response(values, self._request, self.signature)
            for j, position in enumerate(positions):
                rows[position] = {name: values[name][j] for name in outputs}
                if self.top_k:
                    ranked[position] = [{"label": e["label"], "score": e["score"].item()} for e in answer["top_k"][j]]
        columns = {}
        if len(outputs) == 1:
            (name, info), = outputs.items()
            columns["prediction"] = pa.array([None if r is None else r[name].tolist() for r in rows], type=arrow_type(info))
        else:
            kind = pa.struct([(name, arrow_type(info)) for name, info in outputs.items()])
            columns["prediction"] = pa.array([None if r is None else {k: v.tolist() for k, v in r.items()} for r in rows],
                                             type=kind)
        if self.top_k:
            score = pa.from_numpy_dtype(outputs[self.top_k[1]].dtype)
            columns["top_k"] = pa.array(ranked, type=pa.list_(pa.struct([("label", pa.string()), ("score", score)])))
        return columns


class _Rows:
    """A table's rows as the checks take a block of them (api/files/readers.Block's fields)."""

    def __init__(self, count: int, columns: Columns, table: pa.Table):
        self.bulk = columns.bulk(table)
        self.bodies, self.bodies_are_instances = None, False
        self._columns, self._table, self._count = columns, table, count

    @property
    def values(self) -> list:
        return self._columns.instances(self._table)

    def __len__(self) -> int:
        return self._count


def _table(batch: dict) -> pa.Table:
    """A dict of numpy arrays (Ray's numpy batches) as a table: arrays of rank > 1 as fixed-size lists."""
    columns = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.dtype == object:
            columns[name] = pa.array([v.tolist() if isinstance(v, np.ndarray) else v for v in value])
        elif value.ndim > 1:
            columns[name] = arrow_array(value)
        else:
            columns[name] = pa.array(value)
    return pa.table(columns)

