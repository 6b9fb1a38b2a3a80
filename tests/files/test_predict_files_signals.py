"""SIGKILL, SIGTERM and --resume on the real command in child processes: a run killed at any point and
resumed writes, byte for byte, what an uninterrupted run writes; SIGTERM stops at a shard's end."""
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from api.files import job
from api.files.shards import MANIFEST
from tests.files.datasets import digit_rows, read_lines

ROWS, SHARD_ROWS = 40_000, 2_000
OPTIONS = ["--shard-rows", str(SHARD_ROWS), "--batch-size", "32", "--top-k", "2"]


@pytest.fixture(scope="module")
def dirty_rows(digits, tmp_path_factory):
    """40,000 digits, one row in 500 bad, as JSON Lines."""
    path = tmp_path_factory.mktemp("signals") / "rows.jsonl"
    lines = [orjson.dumps(row) for row in digit_rows(digits[0], ROWS)]
    for i in range(250, ROWS, 500):
        lines[i] = b"[[1, 2], [3]]"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def start(store, rows, out, *extra):
    """The command in a child process, its stderr (progress, summary) in a file: a pipe nobody reads while
    the test waits could fill and stall it."""
    env = {**os.environ, "SERVE_RUN_DIR": str(out.parent / "run"), "SERVE_BATCH_PROGRESS_SECONDS": "0.2"}
    log = open(out.parent / f"stderr-{time.monotonic_ns()}.log", "w+")
    child = subprocess.Popen([sys.executable, "-m", "api.cli", "predict-files", str(rows), "-o", str(out),
                              "--store", str(store), *OPTIONS, *extra], env=env, stderr=log, text=True)
    child.log = log
    return child


def finish(child, timeout: float) -> str:
    """Wait for the child; its stderr."""
    child.wait(timeout=timeout)
    child.log.seek(0)
    text = child.log.read()
    child.log.close()
    return text


def shards_done(out) -> int:
    try:
        return len(orjson.loads((out / MANIFEST).read_bytes())["shards"])
    except (FileNotFoundError, orjson.JSONDecodeError):
        return 0


def wait_for_shards(out, count: int, process, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while (done := shards_done(out)) < count:
        assert process.poll() is None, f"the job ended (exit {process.returncode}) before {count} shards"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    return done


def output_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith(("predictions-", "errors"))}


def test_sigkill_then_sigterm_then_resume_writes_the_uninterrupted_runs_bytes(store, dirty_rows, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("SERVE_TF_LOG_LEVEL", "0")
    reference = tmp_path / "reference"
    assert job.main([str(dirty_rows), "-o", str(reference), "--store", str(store), "--quiet", *OPTIONS]) == 0
    out = tmp_path / "out"

    killed = start(store, dirty_rows, out)
    wait_for_shards(out, 2, killed)
    killed.kill()
    finish(killed, 60)
    assert not orjson.loads((out / MANIFEST).read_bytes())["complete"]

    stopped = start(store, dirty_rows, out, "--resume")
    before = wait_for_shards(out, shards_done(out) + 1, stopped)
    stopped.send_signal(signal.SIGTERM)
    stderr = finish(stopped, 120)
    assert stopped.returncode == 143, stderr
    assert "interrupted by SIGTERM at a shard's end" in stderr
    manifest = orjson.loads((out / MANIFEST).read_bytes())
    assert before <= len(manifest["shards"]) <= before + 1  # the shard in progress was finished, no more
    assert not list(out.glob("*.partial")) and not manifest["complete"]
    for shard in manifest["shards"]:  # every shard entered is whole: its rows are all there
        assert shard["rows"] == SHARD_ROWS and shard["predicted"] + shard["failed"] == SHARD_ROWS
        assert len((out / shard["file"]).read_bytes().splitlines()) == shard["predicted"]

    resumed = start(store, dirty_rows, out, "--resume")
    stderr = finish(resumed, 300)
    assert resumed.returncode == 0, stderr
    assert output_bytes(out) == output_bytes(reference)
    assert len(read_lines(out / "errors.jsonl")) == ROWS // 500
    progress = [orjson.loads(line) for line in stderr.splitlines() if line.startswith('{"event": "predict-files progress"')]
    assert progress and {"rows", "predicted", "failed", "rows_per_s", "eta_s", "elapsed_s"} <= set(progress[-1])
    assert "predict-files done: rows 40,000" in stderr
