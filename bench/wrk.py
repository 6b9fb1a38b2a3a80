"""One wrk run: a fixed body POSTed over N keep-alive connections, parsed into figures."""
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("post.lua")


@dataclass
class Result:
    connections: int
    rps: float          # answers of any status per second
    ok_rps: float       # 2xx answers per second: the figure the ratios use
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    socket_errors: int
    non2xx: int
    refused: int        # 503 and 429: load shed on purpose, fast

    @property
    def errors(self) -> int:
        """Failures that are not deliberate refusals: resets, timeouts, 5xx other than 503, 4xx."""
        return self.socket_errors + self.non2xx - self.refused


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, body: Path, connections: int, seconds: float, content_type: str = "application/json",
        timeout_s: float = 30) -> Result:
    env = {**os.environ, "BODY": str(body), "CONTENT_TYPE": content_type}
    threads = 1  # anchors' figures are wrk -t1: one load thread leaves the server its cores
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s",
                          "-s", str(SCRIPT), url], env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"RESULT (.*)", out)
    if not match:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    fields = dict(item.split("=") for item in match.group(1).split())
    requests = int(fields["requests"])
    bad = int(fields["non2xx"]) + int(fields["socket_errors"])
    rps = float(fields["rps"])
    return Result(connections, rps, rps * (requests - bad) / requests if requests else 0.0,
                  float(fields["p50_ms"]), float(fields["p99_ms"]), float(fields["max_ms"]), requests,
                  int(fields["socket_errors"]), int(fields["non2xx"]), int(fields["refused"]))
