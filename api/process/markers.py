"""Marker files under the run dir that the gunicorn master and its workers share: who is ready, whether the
server is draining, who asked to be recycled. Files, because the master must never import what a worker
runs (Flask, TensorFlow), and a marker survives a worker that dies without a word.

    <run_dir>/ready/<pid>     the worker's model is warm and it listens (written by the worker)
    <run_dir>/draining        the server is stopping: every /ready answers 503 (written by the master)
    <run_dir>/recycle/<pid>   the worker passed SERVE_MAX_REQUESTS and asks for a warm successor
"""
import os
import time
from pathlib import Path


def ready_marker(run_dir: Path, pid: int) -> Path:
    return run_dir / "ready" / str(pid)


def clear_markers(run_dir: Path) -> None:
    """Forget readiness, recycle requests and draining left by an earlier run: those pids are gone."""
    for folder in (ready_marker(run_dir, 0).parent, recycle_marker(run_dir, 0).parent):
        folder.mkdir(parents=True, exist_ok=True)
        for marker in folder.iterdir():
            marker.unlink(missing_ok=True)
    stop_draining(run_dir)


def is_ready(run_dir: Path, pid: int) -> bool:
    return ready_marker(run_dir, pid).exists()


def draining_marker(run_dir: Path) -> Path:
    return run_dir / "draining"


def start_draining(run_dir: Path) -> None:
    """From now on every worker's /ready answers 503: the server is stopping."""
    draining_marker(run_dir).write_text(f"{time.time():.3f}\n")


def is_draining(run_dir: Path) -> bool:
    return draining_marker(run_dir).exists()


def stop_draining(run_dir: Path) -> None:
    draining_marker(run_dir).unlink(missing_ok=True)


def recycle_marker(run_dir: Path, pid: int) -> Path:
    return run_dir / "recycle" / str(pid)


def mark_ready(run_dir: Path) -> None:
    marker = ready_marker(run_dir, os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{time.time():.3f}\n")


def unmark(run_dir: Path, pid: int | None = None) -> None:
    ready_marker(run_dir, pid or os.getpid()).unlink(missing_ok=True)


def forget(run_dir: Path, pid: int) -> None:
    """A worker exited: it is neither ready nor waiting to be recycled."""
    unmark(run_dir, pid)
    recycle_marker(run_dir, pid).unlink(missing_ok=True)

