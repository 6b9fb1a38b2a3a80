"""Input files for the predict-files tests, made from scikit-learn's digits (held-out split), and what the
API answers for the same rows (the Flask test client, in process)."""
import base64
import csv
import gzip
import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

PIXELS = [f"p{i}" for i in range(64)]


def digit_rows(images: np.ndarray, count: int) -> list:
    """`count` digits as the nested lists a JSON client sends ([8][8][1], 4 decimals), cycling the split."""
    return [images[i % len(images)].round(4).tolist() for i in range(count)]


def write_jsonl(path, rows: list, compress: bool = False) -> None:
    data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    path.write_bytes(gzip.compress(data) if compress else data)


def write_csv(path, rows: list) -> None:
    """Columns id, name, p0..p63: the digit's 64 values flat, in order (read as the instance, reshaped)."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "name", *PIXELS])
        for i, row in enumerate(rows):
            writer.writerow([f"id-{i}", f"näme {i}", *np.asarray(row).reshape(-1).tolist()])


def write_parquet(path, rows: list, row_group_size: int = 500) -> None:
    """Columns id (int64) and image (list<double> of 64: flat, reshaped to [8, 8, 1] by the job)."""
    flat = [np.asarray(row).reshape(-1).tolist() for row in rows]
    pq.write_table(pa.table({"id": pa.array(range(len(rows)), pa.int64()), "image": pa.array(flat)}), path,
                   row_group_size=row_group_size)


def png(row) -> bytes:
    """A digit as an 8-bit grey PNG, upscaled to 16x16 (the model's serving.json boxes it back to 8x8)."""
    grey = Image.fromarray(np.round(np.asarray(row).squeeze() * 255).astype("uint8"), mode="L")
    buffer = io.BytesIO()
    grey.resize((16, 16), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def read_lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def predictions(folder) -> list[dict]:
    """Every prediction line of a run, shards concatenated in name order."""
    return [row for shard in sorted(folder.glob("predictions-*.jsonl")) for row in read_lines(shard)]


def api_answers(client, instances: list, per_request: int = 64, top_k: int | None = None) -> tuple[list, list]:
    """What `POST /v1/models/digits:predict` answers for `instances`, sent `per_request` to a request
    (the batch size the job is run with, so that both compute the same batches)."""
    found, ranked = [], []
    for start in range(0, len(instances), per_request):
        body = {"instances": instances[start:start + per_request], **({"top_k": top_k} if top_k else {})}
        answer = client.post("/v1/models/digits:predict", data=orjson.dumps(body),
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.get_data()
        document = orjson.loads(answer.get_data())
        found += document["predictions"]
        ranked += document.get("top_k", [])
    return found, ranked


def api_error(client, row_text: bytes) -> tuple[int, str]:
    """The status and error the API answers for one row sent alone: `{"instances": [<row>]}`."""
    answer = client.post("/v1/models/digits:predict", data=b'{"instances": [' + row_text + b"]}",
                         headers={"Content-Type": "application/json"})
    return answer.status_code, orjson.loads(answer.get_data())["error"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
