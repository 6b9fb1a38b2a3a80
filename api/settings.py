"""Every setting of the server, declared once: typed, defaulted, documented, read from `SERVE_*`.

gunicorn.conf.py, the app factory, the model runtime and the scripts all read this one object;
`make settings` prints the effective values (the README's settings table comes from it).
"""
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SERVE_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    # -- model store -----------------------------------------------------------------------------
    model_store: Path = Path("models")
    """Root of the model store, laid out as TensorFlow Serving's: <store>/<name>/<version>/."""
    model_name: str = Field("digits", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """The model each worker loads and `POST /predict` serves."""
    model_versions: str = Field("all", pattern=r"^(all|latest(:[1-9][0-9]*)?|[0-9]+(,[0-9]+)*)$")
    """Which versions to load: `all`, `latest`, `latest:N` or a list such as `1,3`. The newest loaded
    version answers requests that name none."""
    warmup_batches: tuple[int, ...] = (1, 8, 32)
    """Batch sizes run once each before a worker reports ready, so no request pays for tracing."""

    # -- HTTP ------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address gunicorn binds when `bind` is not set."""
    port: int = Field(8080, ge=1, le=65535)
    """Port gunicorn binds when `bind` is not set."""
    bind: str = ""
    """Explicit gunicorn bind (e.g. `unix:/run/serve/gunicorn.sock`); overrides host and port."""
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger bodies get 413."""
    max_instances: int = Field(256, ge=1)
    """Most instances (rows of the batch dimension) in one request; more get 400."""
    max_tensor_elements: int = Field(16 * 1024 * 1024, ge=1)
    """Most scalar elements in one input tensor (guards v2 shapes that claim absurd sizes)."""
    max_json_depth: int = Field(32, ge=2, le=512)
    """Deepest JSON nesting accepted; deeper bodies get 400 before anything walks them."""
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    """Most pixels in one decoded image (width x height); larger images get 413."""
    max_top_k: int = Field(100, ge=1)
    """Largest `top_k` a request may ask for."""

    # -- gunicorn --------------------------------------------------------------------------------
    workers: int = Field(default_factory=lambda: max(1, min(2, _cpu_count())), ge=1)
    """gunicorn worker processes, each holding one copy of the model."""
    threads: int = Field(8, ge=1)
    """Request threads per worker (gthread)."""
    timeout: int = Field(120, ge=10)
    """Seconds a silent worker lives before gunicorn kills it; covers model load and warm-up."""
    graceful_timeout: int = Field(30, ge=1)
    """Seconds a stopping worker has to finish its requests."""
    keepalive: int = Field(75, ge=0)
    """Seconds gunicorn keeps an idle client connection open."""
    run_dir: Path = Path("run")
    """Folder for runtime state shared by the master and its workers (readiness markers)."""

    # -- TensorFlow ------------------------------------------------------------------------------
    intra_op_threads: int = Field(0, ge=0)
    """TensorFlow intra-op threads per worker; 0 = cores / workers, so workers never oversubscribe."""
    inter_op_threads: int = Field(1, ge=0)
    """TensorFlow inter-op threads per worker."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """Where inference runs: `auto` takes a GPU when TensorFlow sees one."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of gunicorn and the app."""

    @cached_property
    def bind_address(self) -> str:
        return self.bind or f"{self.host}:{self.port}"

    @cached_property
    def tf_intra_op_threads(self) -> int:
        return self.intra_op_threads or max(1, _cpu_count() // self.workers)


def describe() -> str:
    """The effective settings, one `SERVE_NAME=value  # description` line each."""
    settings = Settings()
    lines = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        lines.append(f"SERVE_{name.upper()}={value}  # {' '.join((field.description or '').split())}")
    return "\n".join(lines)
