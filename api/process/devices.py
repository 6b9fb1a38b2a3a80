"""Which GPU each worker gets, decided in the gunicorn master without touching CUDA.

The master must not initialise CUDA or TensorFlow (neither survives a fork), so it asks
`nvidia-smi` for the GPUs once, gives every new worker the lowest slot no live worker holds, and
the worker sets `CUDA_VISIBLE_DEVICES` to that slot's GPU before TensorFlow is imported. Workers
spread round-robin over the GPUs, and a replacement worker takes the GPU its predecessor freed.
"""
import os
import shutil
import subprocess


def visible_gpus(device: str) -> list[str]:
    """GPU ids the workers may use: the operator's CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    if device == "cpu":
        return []
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [gpu.strip() for gpu in declared.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def free_slot(taken: set[int]) -> int:
    """The lowest worker slot not held by a live worker."""
    slot = 0
    while slot in taken:
        slot += 1
    return slot


def gpu_for(slot: int, gpus: list[str]) -> str | None:
    return gpus[slot % len(gpus)] if gpus else None
