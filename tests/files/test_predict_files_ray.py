"""The batch core as Ray Data's map_batches class on a local Ray (two CPUs): an actor pool, one model load
per actor, and the command's predictions for the same rows; a bad row gets an error, never fails the job."""
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.files import job
from tests.files.datasets import digit_rows, predictions, read_lines

ray = pytest.importorskip("ray", reason="Ray is the optional extra in requirements-batch.txt (make install-dev)")

# Ray's own modules warn about its own deprecated settings on import and start: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*", "ignore::FutureWarning:ray.*",
                                        "ignore:The minimum number of concurrent actors:UserWarning")

ROWS, BATCH = 3000, 500
BAD = {700: [0.5] * 63, 1900: [], 2501: None}  # a list one short, an empty list, a null


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, log_to_driver=False,
             runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}})
    yield ray
    ray.shutdown()


def test_ray_data_map_batches_with_the_predictor_gives_the_commands_predictions(local_ray, store, digits, tmp_path,
                                                                                monkeypatch):
    flat = [np.asarray(row).reshape(-1).tolist() for row in digit_rows(digits[0], ROWS)]
    for row, value in BAD.items():
        flat[row] = value
    table = pa.table({"id": pa.array(range(ROWS), pa.int64()), "image": pa.array(flat, pa.list_(pa.float64()))})
    exports = tmp_path / "exports"  # a night's exports: one file per block of rows, as Ray reads them
    exports.mkdir()
    for start in range(0, ROWS, BATCH):
        pq.write_table(table.slice(start, BATCH), exports / f"part-{start // BATCH:02d}.parquet")
    monkeypatch.setenv("SERVE_TF_LOG_LEVEL", "0")
    assert job.main([str(exports / "*.parquet"), "-o", str(tmp_path / "cli"), "--store", str(store), "--quiet",
                     "--key-field", "id", "--batch-size", str(BATCH)]) == 0
    expected = {row["key"]: row["prediction"] for row in predictions(tmp_path / "cli")}
    errors = {row["key"]: row["error"] for row in read_lines(tmp_path / "cli" / "errors.jsonl")}

    from api.files.predictor import Predictor

    result = (ray.data.read_parquet(str(exports)).repartition(ROWS // BATCH)  # tiny files are read as one block
              .map_batches(Predictor, fn_constructor_kwargs={"store": str(store), "model": "digits"},
                           batch_format="pyarrow", batch_size=BATCH, concurrency=2, num_cpus=0.5)
              .to_arrow_refs())
    table = pa.concat_tables(ray.get(result)).sort_by("id")
    assert table.column_names == ["id", "prediction", "error"] and table.num_rows == ROWS
    found = dict(zip(table.column("id").to_pylist(), table.column("prediction").to_pylist()))
    failed = {key: error for key, error in zip(table.column("id").to_pylist(), table.column("error").to_pylist())
              if error is not None}
    assert failed == errors and set(failed) == set(BAD)  # the same rows fail, with the same words
    assert all(found[key] is None for key in failed)
    good = sorted(expected)
    np.testing.assert_array_equal(np.array([found[k] for k in good], np.float32),
                                  np.array([expected[k] for k in good], np.float32))
    assert orjson.dumps(found[0], option=orjson.OPT_SERIALIZE_NUMPY)  # plain lists of floats
