"""Settings come from SERVE_* variables, typed and validated, each documented."""
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.settings import Settings, describe, markdown_table


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("SERVE_PORT", "9000")
    monkeypatch.setenv("SERVE_WARMUP_BATCHES", "[1, 4]")
    monkeypatch.setenv("SERVE_MODEL_VERSIONS", "latest:2")
    settings = Settings()
    assert (settings.port, settings.warmup_batches, settings.model_versions) == (9000, (1, 4), "latest:2")
    assert settings.bind_address == f"unix:{settings.run_dir.resolve()}/gunicorn.sock"  # nginx proxies to it
    monkeypatch.setenv("SERVE_BIND", "127.0.0.1:9001")
    assert Settings().bind_address == "127.0.0.1:9001"


def test_allowed_batch_sizes_must_end_at_the_max_batch_size(monkeypatch):
    monkeypatch.setenv("SERVE_ALLOWED_BATCH_SIZES", "[1, 8]")
    with pytest.raises(ValidationError, match="end with max_batch_size"):
        Settings()
    monkeypatch.setenv("SERVE_MAX_BATCH_SIZE", "8")
    assert Settings().batch_policy.padded(3) == 8


@pytest.mark.parametrize("name, value", [("SERVE_PORT", "0"), ("SERVE_MODEL_VERSIONS", "newest"),
                                         ("SERVE_MODEL_NAME", "../etc"), ("SERVE_DEVICE", "tpu"),
                                         ("SERVE_MAX_INSTANCES", "0")])
def test_invalid_values_fail_at_start_up_not_at_request_time(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_tensorflow_threads_split_the_cores_between_workers():
    settings = Settings(workers=2)
    assert settings.tf_intra_op_threads >= 1
    assert Settings(workers=1, intra_op_threads=3).tf_intra_op_threads == 3


def test_every_setting_is_documented():
    lines = describe().splitlines()
    assert len(lines) == len(Settings.model_fields)
    assert all(line.split("  # ", 1)[1].strip() for line in lines)


def test_the_readme_table_is_the_settings_object():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown_table() in readme, "README's settings table is stale: paste `make settings-table`"
