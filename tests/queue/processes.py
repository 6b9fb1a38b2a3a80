"""`keras-serving worker` as real processes for the tests: started with SERVE_* settings, waited for until
their model is warm, SIGKILLed or SIGTERMed, and their JSON job lines read back."""
import json
import os
import signal
import sys
from pathlib import Path

from bench.harness import ProcessGroup, serve_env


class WorkerProcess(ProcessGroup):
    GRACE = 60

    def __init__(self, folder: Path, consumer: str, settings: dict):
        self.consumer = consumer
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **serve_env(settings)}
        super().__init__([sys.executable, "-m", "api.cli", "worker", "--consumer", consumer],
                         folder / f"worker-{consumer}.log", env, name=f"worker {consumer}")

    def ready(self) -> bool:
        return self.process.poll() is None and '"worker ready"' in self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        self.wait(lambda: '"worker ready"' in self.log(), timeout)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost instance would: nothing is finished or acknowledged."""
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def term(self, timeout: float = 60) -> int:
        """SIGTERM (a drain); the exit status."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def job_lines(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"job_id"' in line:
                try:
                    lines.append(json.loads(line))
                except ValueError:  # a line cut short by SIGKILL
                    pass
        return [line for line in lines if line.get("message", "").startswith("job ")]
