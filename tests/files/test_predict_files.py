"""`keras-serving predict-files` in process, on real files, with real TensorFlow and the digits model: every
input format gives the API's numbers, bad rows keep the API's words and never stop the job."""
import gzip

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.files import job
from api.files.shards import MANIFEST, SUCCESS
from tests.conftest import WORDS
from tests.files.datasets import (api_answers, api_error, b64, digit_rows, png, predictions, read_lines, write_csv,
                                  write_jsonl, write_parquet)

ROWS = 640  # ten calls of 64: the job and the API then compute the very same batches


@pytest.fixture(autouse=True)
def _tensorflow_speaks_in_the_test_process(monkeypatch):
    monkeypatch.setenv("SERVE_TF_LOG_LEVEL", "0")  # no fd 2 redirection inside pytest


@pytest.fixture(scope="module")
def rows(digits):
    return digit_rows(digits[0], ROWS)


def predict(store, *args) -> int:
    return job.main([*map(str, args), "--store", str(store), "--quiet"])


def test_jsonl_predictions_are_the_apis_numbers(store, client, rows, tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", rows)
    assert predict(store, tmp_path / "rows.jsonl", "-o", tmp_path / "out", "--batch-size", 64, "--top-k", 3) == 0
    found = predictions(tmp_path / "out")
    expected, ranked = api_answers(client, rows, top_k=3)
    assert [row["prediction"] for row in found] == expected
    assert [row["top_k"] for row in found] == ranked
    assert [(row["file"], row["row"]) for row in found] == [(str(tmp_path / "rows.jsonl"), i + 1) for i in range(ROWS)]
    assert found[0]["top_k"][0]["label"] in WORDS  # the newest version (2) answers, with its labels
    manifest = orjson.loads((tmp_path / "out" / MANIFEST).read_bytes())
    assert manifest["complete"] and manifest["summary"]["predicted"] == ROWS and (tmp_path / "out" / SUCCESS).exists()
    assert (tmp_path / "out" / "errors.jsonl").read_bytes() == b""


def test_gzip_input_is_read_as_it_is_whatever_its_name(store, rows, tmp_path):
    write_jsonl(tmp_path / "plain.jsonl", rows)
    write_jsonl(tmp_path / "packed.jsonl", rows, compress=True)  # gzip inside, no .gz in the name
    for name in ("plain", "packed"):
        assert predict(store, tmp_path / f"{name}.jsonl", "-o", tmp_path / name, "--batch-size", 64) == 0
    assert [r["prediction"] for r in predictions(tmp_path / "plain")] == \
        [r["prediction"] for r in predictions(tmp_path / "packed")]


def test_csv_columns_are_the_instance_and_carry_key_and_kept_columns(store, client, rows, tmp_path):
    write_csv(tmp_path / "rows.csv", rows)
    (tmp_path / "rows.csv.gz").write_bytes(gzip.compress((tmp_path / "rows.csv").read_bytes()))
    assert predict(store, tmp_path / "rows.csv.gz", "-o", tmp_path / "out", "--batch-size", 64,
                   "--key-field", "id", "--keep-columns", "name") == 0
    found = predictions(tmp_path / "out")
    assert [row["prediction"] for row in found] == api_answers(client, rows)[0]
    assert found[5] == {"key": "id-5", "name": "näme 5", "prediction": found[5]["prediction"]}


def test_parquet_predictions_are_the_apis_numbers_in_jsonl_and_in_parquet(store, client, rows, tmp_path):
    write_parquet(tmp_path / "rows.parquet", rows)
    common = ["--batch-size", 64, "--key-field", "id", "--top-k", 2]
    assert predict(store, tmp_path / "rows.parquet", "-o", tmp_path / "json", *common) == 0
    assert predict(store, tmp_path / "rows.parquet", "-o", tmp_path / "pq", "--output-format", "parquet", *common) == 0
    found = predictions(tmp_path / "json")
    expected, ranked = api_answers(client, rows, top_k=2)
    assert [row["prediction"] for row in found] == expected and [row["key"] for row in found] == list(range(ROWS))
    table = pq.read_table(sorted((tmp_path / "pq").glob("predictions-*.parquet")))
    assert table.schema.field("key").type == "int64"  # Parquet in, Parquet out: the key keeps its type
    kind = table.schema.field("prediction").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 10 and kind.value_type == pa.float32()
    np.testing.assert_array_equal(np.array(table.column("prediction").to_pylist(), dtype=np.float32),
                                  np.array(expected, dtype=np.float32))
    assert table.column("top_k").to_pylist()[0][0]["label"] == ranked[0][0]["label"]


def test_an_image_folder_is_predicted_as_the_api_predicts_the_same_pngs(store, client, rows, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    pngs = [png(row) for row in rows[:128]]
    for i, data in enumerate(pngs):
        (images / f"{i:04d}.png").write_bytes(data)
    assert predict(store, images, "-o", tmp_path / "out", "--batch-size", 64) == 0
    found = predictions(tmp_path / "out")
    assert [row["file"] for row in found] == [str(images / f"{i:04d}.png") for i in range(128)]
    assert [row["prediction"] for row in found] == api_answers(client, [{"b64": b64(d)} for d in pngs])[0]


BAD_ROWS = [  # one row of each kind the API refuses; each is sent to the API alone to learn its words
    b"[[1, 2], [3]]",
    b"[[[0.5]]]",
    b'"seven"',
    b"null",
    b'{"b64": "!!not base64!!"}',
    b'{"b64": "' + b64(b"not an image").encode() + b'"}',
    b'{"image": [[[0]]], "extra": 1}',
    b"[" + b",".join([b"[" + b",".join([b"[true]"] * 8) + b"]"] * 8) + b"]",
    b"[" + b",".join([b"[" + b",".join([b'["x"]'] * 8) + b"]"] * 8) + b"]",
]


def test_bad_rows_land_in_errors_with_the_apis_words_and_the_rest_are_predicted(store, client, digits, tmp_path):
    rows = digit_rows(digits[0], 990)
    lines = [orjson.dumps(row) for row in rows]
    bad = {}  # line number -> the row's text
    for k, text in enumerate([*BAD_ROWS, b"{not json"]):
        number = 50 + 97 * k  # 1% of the rows, spread over the shards
        lines.insert(number - 1, text)
        bad[number] = text
    (tmp_path / "dirty.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert predict(store, tmp_path / "dirty.jsonl", "-o", tmp_path / "out", "--shard-rows", 300) == 0
    errors = read_lines(tmp_path / "out" / "errors.jsonl")
    assert [e["row"] for e in errors] == sorted(bad)
    for error in errors:
        text = bad[error["row"]]
        if text == b"{not json":  # the API's words, at the position in the row rather than in a body
            assert error["status"] == 400 and error["error"].startswith("malformed JSON: ")
            continue
        assert (error["status"], error["error"]) == api_error(client, text), text
    good = predictions(tmp_path / "out")
    assert len(good) == 990 and {row["row"] for row in good}.isdisjoint(bad)
    clean = dict(zip(range(990), api_answers(client, rows)[0]))
    np.testing.assert_allclose([row["prediction"] for row in good], [clean[i] for i in range(990)], atol=1e-6)
    summary = orjson.loads((tmp_path / "out" / MANIFEST).read_bytes())["summary"]
    assert (summary["rows"], summary["predicted"], summary["failed"], summary["exit"]) == (1000, 990, 10, 0)


def test_max_error_rate_stops_the_job_with_exit_1_at_a_shard_end(store, rows, tmp_path, capsys):
    lines = [orjson.dumps(row) for row in rows[:600]]
    lines[10] = b"[[1, 2], [3]]"
    (tmp_path / "dirty.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    status = job.main([str(tmp_path / "dirty.jsonl"), "-o", str(tmp_path / "out"), "--store", str(store),
                       "--shard-rows", "200", "--max-error-rate", "0.001", "--quiet"])
    assert status == 1
    manifest = orjson.loads((tmp_path / "out" / MANIFEST).read_bytes())
    assert len(manifest["shards"]) == 1 and not manifest["complete"] and not (tmp_path / "out" / SUCCESS).exists()
    assert "over --max-error-rate" in capsys.readouterr().err  # --quiet still says why it failed


def test_usage_errors_exit_2_before_any_model_loads(store, tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_bytes(b"[1]\n")
    assert job.main([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "out")]) == 2
    assert job.main([str(tmp_path / "rows.jsonl"), "-o", str(tmp_path / "out"), "--key-field", "prediction"]) == 2
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "predictions-00000.jsonl").write_bytes(b"")
    assert job.main([str(tmp_path / "rows.jsonl"), "-o", str(tmp_path / "out"), "--store", str(store)]) == 2
    assert "holds predictions but no manifest.json" in capsys.readouterr().err


def test_any_number_of_model_calls_writes_the_same_bytes(store, rows, tmp_path):
    """Blocks dealt to the model threads in turn come back in turn: the shards, errors.jsonl and the
    prediction lines (file + row, and the --key-field form) do not depend on how many calls are in flight."""
    lines = [orjson.dumps(row) for row in rows[:500]]
    lines[77] = b"[[1, 2], [3]]"
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    keyed = [orjson.dumps({"id": f"r{i}", "image": row}) for i, row in enumerate(rows[:130])]
    (tmp_path / "keyed.jsonl").write_bytes(b"\n".join(keyed) + b"\n")
    outputs = {}
    for calls in (1, 3):
        for name, extra in (("rows", ("--shard-rows", 200)), ("keyed", ("--key-field", "id"))):
            out = tmp_path / f"{name}-{calls}"
            assert predict(store, tmp_path / f"{name}.jsonl", "-o", out, "--batch-size", 32, "--model-calls", calls,
                           *extra) == 0
            outputs[name, calls] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != MANIFEST}
            assert orjson.loads((out / MANIFEST).read_bytes())["summary"]["model_calls"] == calls
    for name in ("rows", "keyed"):
        assert outputs[name, 1] == outputs[name, 3]
    assert len(outputs["rows", 1]) == 5 and outputs["rows", 1]["errors.jsonl"].count(b"\n") == 1
    first = orjson.loads(outputs["keyed", 1]["predictions-00000.jsonl"].splitlines()[0])
    assert list(first) == ["key", "prediction"] and first["key"] == "r0"
