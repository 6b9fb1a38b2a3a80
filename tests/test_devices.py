"""GPU placement: workers spread round-robin over the GPUs, decided in the master without CUDA.

No GPU here: a stand-in `nvidia-smi` lists two, and each worker's TensorFlow start-up log says
which one it was given (TensorFlow itself, built for CPU here, then runs on the CPU).
"""
import os
import re
import signal
import time

import pytest

from api.process.devices import free_slot, gpu_for, visible_gpus
from tests.servers import Gunicorn


@pytest.fixture()
def two_gpus(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_gpus_come_from_nvidia_smi_or_the_operators_list(two_gpus, monkeypatch):
    assert visible_gpus("auto") == ["0", "1"]
    assert visible_gpus("cpu") == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus("auto") == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus("gpu") == []


def test_no_nvidia_smi_means_no_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus("auto") == []


def test_slots_fill_the_lowest_gap_and_map_round_robin():
    assert free_slot(set()) == 0
    assert free_slot({0, 1, 3}) == 2
    assert [gpu_for(slot, ["0", "1"]) for slot in range(4)] == ["0", "1", "0", "1"]
    assert gpu_for(0, []) is None


def _gpu_by_pid(log: str) -> dict[int, str]:
    return {int(pid): gpu for pid, gpu in re.findall(r'"logger":"api.runtime","pid":(\d+),"message":"TensorFlow '
                                                     r'device=\S+ gpus_visible=\d+ CUDA_VISIBLE_DEVICES=(\S+?) ', log)}


def test_workers_are_pinned_round_robin_and_a_replacement_takes_the_freed_gpu(two_gpus, store, tmp_path):
    server = Gunicorn(tmp_path, model_store=store, workers=3, threads=2, model_versions="latest")
    try:
        server.wait_ready()
        server.wait_all_workers_ready(3)
        placed = _gpu_by_pid(server.log())
        assert sorted(placed.values()) == ["0", "0", "1"], placed
        victim = next(pid for pid, gpu in placed.items() if gpu == "1")
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_gpu_by_pid(server.log())) < 4:
            time.sleep(0.2)
        replacement = {pid: gpu for pid, gpu in _gpu_by_pid(server.log()).items() if pid not in placed}
        assert list(replacement.values()) == ["1"], server.log()[-2000:]
    finally:
        server.stop()
