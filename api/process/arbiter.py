"""gunicorn worker life cycle, run in the master: who may take traffic, reloads and recycling that never
stall, and a stop that drains.

Nothing here imports TensorFlow. Workers leave a readiness marker (`<run_dir>/ready/<pid>`) once
their model is warm; the master reads them to decide three things:
- whether a new worker may accept connections before it is warm (only at a cold start, when no
  sibling can serve), see `accepts_before_ready`;
- when an old worker may stop during a reload, see `rolling_restart`;
- when a worker past its request limit may stop, see `Recycler` and `recycle_requested`.
A stop first turns readiness off for the whole server (`<run_dir>/draining`), see `drain_then_stop`.
"""
import queue
import signal
import time
from pathlib import Path

from api.process.markers import is_draining, is_ready, recycle_marker, start_draining


def accepts_before_ready(server, run_dir: Path) -> bool:
    """At a cold start workers accept at once (and answer 503 while loading); a replacement for a
    worker that died or is being reloaded has warm siblings, so it loads first and accepts after."""
    return not any(is_ready(run_dir, pid) for pid in server.WORKERS)


def drain_then_stop(server, run_dir: Path, seconds: float) -> None:
    """SIGTERM: /ready turns 503 at once, the workers go on serving for `seconds` so that load balancers
    and health checks see it and stop sending, then gunicorn's graceful stop (in-flight requests finish).

    gunicorn's own TERM closes the listening socket at once, resetting every connection still in its
    backlog. When the stack's runner (api/process/stack.py) has already drained, there is no second wait.
    """
    if not is_draining(run_dir):
        start_draining(run_dir)
        server.log.info("draining: /ready answers 503, serving on for %g s before stopping", seconds)
        _serve_for(server, seconds)
    raise StopIteration  # gunicorn's main loop halts: a graceful stop of every worker


def _serve_for(server, seconds: float) -> None:
    """Keep the master's duties (reap, replace, time out workers) for `seconds`; another stop signal
    (a second TERM, INT or QUIT) ends the wait and is handled by gunicorn as usual."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sig = server.SIG_QUEUE.get(timeout=0.1)
        except queue.Empty:
            sig = None
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            server.SIG_QUEUE.put_nowait(sig)
            return
        server.reap_workers()
        server.murder_workers()
        server.manage_workers()


def rolling_restart(server, run_dir: Path, timeout: float) -> None:
    """SIGHUP: replace the workers one at a time; each old one stops only when its replacement is warm.

    gunicorn's own HUP starts every new worker and stops every old one at once, leaving no warm worker
    for the length of a model load. If a replacement fails to become ready (a bad model version, a
    crash), the restart stops there and the old workers keep serving.
    """
    old = sorted(server.WORKERS, key=lambda pid: server.WORKERS[pid].age)
    server.log.info("rolling restart of %d workers: each stops once its replacement is warm", len(old))
    for pid in old:
        if pid in server.WORKERS and not _replace(server, run_dir, pid, timeout):
            server.log.error("rolling restart stopped: the remaining old workers keep serving")
            return
    server.log.info("rolling restart done")


def _replace(server, run_dir: Path, pid: int, timeout: float) -> bool:
    """Start a successor to worker `pid` (in its slot: its GPU, its socket) and stop `pid` only once the
    successor is warm."""
    server.replacing = pid  # read by gunicorn.conf.py's pre_fork
    try:
        new = server.spawn_worker()
    finally:
        server.replacing = None
    if not _wait_ready(server, run_dir, new, timeout):
        server.log.error("worker %s was not ready within %ss: worker %s keeps serving", new, timeout, pid)
        server.kill_worker(new, signal.SIGKILL)
        return False
    server.log.info("worker %s is warm: stopping worker %s", new, pid)
    # gunicorn trims surplus workers oldest first; make the leaving one the oldest, so that the trim
    # (until it has exited) can only pick it and never a sibling that has no successor.
    server.WORKERS[pid].age = min(worker.age for worker in server.WORKERS.values()) - 1
    server.kill_worker(pid, signal.SIGTERM)
    return True


def recycle_requested(server, run_dir: Path, timeout: float) -> None:
    """SIGTTIN, sent by a worker past its request limit: replace every worker that asked, each stopping
    once its successor is warm. (gunicorn's TTIN would add a worker; the count is a setting here.)"""
    folder = recycle_marker(run_dir, 0).parent
    asked = sorted(int(marker.name) for marker in folder.glob("*")) if folder.exists() else []
    for pid in asked:
        recycle_marker(run_dir, pid).unlink(missing_ok=True)
        if pid in server.WORKERS:
            server.log.info("worker %s reached its request limit: replacing it", pid)
            _replace(server, run_dir, pid, timeout)


def _wait_ready(server, run_dir: Path, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_ready(run_dir, pid):
            return True
        server.reap_workers()  # the master loop is here: keep reaping, and notice a crashed newcomer
        if pid not in server.WORKERS:
            return False
        time.sleep(0.05)
    return False

