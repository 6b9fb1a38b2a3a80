"""Run the instance's stack in the foreground: gunicorn on a unix socket, nginx in front of it.

    keras-serving serve [--access-log PATH]

This is what `make serve` runs and what the end-to-end tests start. nginx runs under its own prefix
(`<run_dir>/nginx`) with a config rendered from the settings, never the system's.

Ctrl-C (or SIGTERM) drains: /ready turns 503 at once while everything else is still served for
SERVE_DRAIN_SECONDS (a second Ctrl-C cuts that short), then nginx stops accepting and finishes what it
holds, then gunicorn stops. SIGHUP is passed to gunicorn, whose workers then restart one by one, each
old one stopping only when its replacement is warm.

However this process dies (kill -9 of it or of its process group, the OOM killer, a closed terminal),
nginx and gunicorn die with it: the kernel signals each of them when their parent dies (Linux's
parent-death signal), and each stops its own workers. A start after such a crash clears what the dead
stack left in the run dir (pid files, sockets); if a stack on that run dir still runs, it says which, with
its pid and how to stop it, and exits 1.

The run dir (SERVE_RUN_DIR, default run/):
    stack.pid          this process, while it runs
    gunicorn.pid       gunicorn's master (gunicorn writes it)
    gunicorn.sock      gunicorn's shared socket, and worker-<slot>.sock, each worker's own
    ready/<pid>        a gunicorn worker that is warm (api/process/markers.py)
    nginx/nginx.pid    nginx's master; nginx/ is nginx's prefix, with its rendered config
"""
import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from api.process.markers import start_draining, stop_draining
from api.process.nginx import render
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]  # the repository: gunicorn.conf.py and wsgi.py; relative settings

# The signal the kernel sends each master when this process dies. gunicorn: QUIT, its quick stop (its
# workers quit, it removes its pid file and sockets); its TERM would first drain for SERVE_DRAIN_SECONDS,
# for a load balancer that nginx's own stop has cut off already. nginx: TERM, its fast stop, which stops
# its workers too (a master killed with SIGKILL leaves its workers serving the port: they do not watch
# their parent).
GUNICORN_ON_PARENT_DEATH = signal.SIGQUIT
NGINX_ON_PARENT_DEATH = signal.SIGTERM
# How long a start waits for what a crashed stack left running to finish stopping (measured: about a
# second, under load) before it gives up and says what still runs.
LEFTOVERS_WAIT_S = 10.0
PR_SET_PDEATHSIG = 1


def _prctl():
    """libc's prctl(2), or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PRCTL = _prctl()


def system_binary(name: str, debian_path: str) -> str:
    """The distribution's `name` (on PATH, else at `debian_path`: /usr/sbin is not on every PATH); exits
    saying how to install it when it is missing."""
    found = shutil.which(name) or (debian_path if Path(debian_path).exists() else None)
    if not found:
        sys.exit(f"{name} is not installed: run `make system-deps` (Debian: apt-get install {name})")
    return found


def nginx_binary() -> str:
    return system_binary("nginx", "/usr/sbin/nginx")


# -- the run dir: what an earlier stack left --------------------------------------------------------------

def stack_pid_file(run_dir: Path) -> Path:
    return run_dir / "stack.pid"


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def running_since(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch; 0.0 where /proc cannot say), or None when
    there is no such process or only its zombie (dead, not reaped yet)."""
    try:
        # the name in parentheses may hold spaces: the fields start after the last ')'
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # no /proc (not Linux): whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    if fields[0] in "ZXx":
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): starttime


def live_pid(pid_file: Path, pid: int | None = None) -> int | None:
    """The pid that `pid_file` names (in it, or as its name) if that process still runs: it exists, is no
    zombie, and started before the file was written, so it is not a later process that took the number."""
    try:
        pid = pid or int(pid_file.read_text().split()[0])
        written = pid_file.stat().st_mtime
    except (OSError, ValueError, IndexError):
        return None
    started = running_since(pid)
    return pid if started is not None and started <= written + 1.0 else None


def what_runs(run_dir: Path) -> dict[str, list[int]]:
    """The processes of a stack on `run_dir` that still run, by role, from their pid files."""
    found = {"keras-serving serve": live_pid(stack_pid_file(run_dir)),
             "gunicorn master": live_pid(run_dir / "gunicorn.pid"),
             "nginx master": live_pid(run_dir / "nginx" / "nginx.pid")}
    running = {role: [pid] for role, pid in found.items() if pid}
    markers = sorted((run_dir / "ready").glob("*")) if (run_dir / "ready").is_dir() else []
    workers = [pid for m in markers if m.name.isdigit() and (pid := live_pid(m, int(m.name)))]
    if workers:
        running["gunicorn worker"] = workers
    return running


def listened(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:  # a full backlog (timeout) or no permission: somebody is there
            return True
        return True


def clear_leftovers(run_dir: Path) -> None:
    """Make `run_dir` ready for a new stack after one that crashed, or exit with one line that says what
    still runs there and how to stop it.

    Processes of a stack whose supervisor is gone were sent their parent-death signal and are stopping:
    they get LEFTOVERS_WAIT_S to finish. Then pid files whose process is gone and sockets nobody listens
    on go (gunicorn refuses to start while its pid file names a live process, of any program)."""
    running = what_runs(run_dir)
    if running and "keras-serving serve" not in running:
        print(f"waiting up to {LEFTOVERS_WAIT_S:g} s for {_listing(running)} left by a stack on {run_dir} "
              f"to stop", file=sys.stderr, flush=True)
        deadline = time.monotonic() + LEFTOVERS_WAIT_S
        while running and time.monotonic() < deadline:
            time.sleep(0.1)
            running = what_runs(run_dir)
    if "keras-serving serve" in running:
        supervisor = running["keras-serving serve"][0]
        sys.exit(f"a stack already runs on {run_dir}: {_listing(running)}; stop it with `kill {supervisor}`")
    if running:
        pids = " ".join(str(pid) for pids in running.values() for pid in pids)
        sys.exit(f"a stack's processes outlived it on {run_dir}: {_listing(running)}; "
                 f"stop them with `kill {pids}`")
    for pid_file in (stack_pid_file(run_dir), run_dir / "gunicorn.pid", run_dir / "nginx" / "nginx.pid"):
        pid_file.unlink(missing_ok=True)
    for path in sorted(run_dir.iterdir()):
        if path.is_socket():
            if listened(path):
                sys.exit(f"a process no pid file names listens on {path}: find it with `fuser {path}` "
                         f"(or `ss -xlp | grep {path.name}`) and stop it")
            path.unlink(missing_ok=True)


def _listing(running: dict[str, list[int]]) -> str:
    return ", ".join(f"{role} pid {' '.join(map(str, pids))}" for role, pids in running.items())


def claim(run_dir: Path) -> Path:
    """<run_dir>/stack.pid with this process's pid; exits if another start wrote one meanwhile."""
    pid_file = stack_pid_file(run_dir)
    try:
        fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        sys.exit(f"another stack is starting on {run_dir} ({pid_file}: pid {pid_file.read_text().strip()})")
    with os.fdopen(fd, "w") as out:
        out.write(f"{os.getpid()}\n")
    return pid_file


# -- the children ---------------------------------------------------------------------------------------

def tied_to_this_process(on_parent_death: signal.Signals):
    """A preexec_fn: the child gets `on_parent_death` from the kernel when this process dies, however it
    dies. Strictly, when the thread that forked it ends: start children from the main thread only.

    The child has a process group of its own (Popen's process_group=0), so Ctrl-C in the terminal reaches
    this process only, which stops the two in order."""
    parent = os.getpid()

    def preexec() -> None:
        if PRCTL is not None:
            PRCTL(PR_SET_PDEATHSIG, ctypes.c_ulong(on_parent_death), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


def start(command: list[str], on_parent_death: signal.Signals) -> subprocess.Popen:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("start the stack's processes from the main thread: the parent-death signal "
                           "comes when the thread that forked them ends")
    return subprocess.Popen(command, cwd=ROOT, process_group=0,
                            preexec_fn=tied_to_this_process(on_parent_death))


def wait_for_socket(path: Path, process: subprocess.Popen, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to what is left of the process group `process` led, once it has exited: workers whose
    master died without stopping them (nginx's workers keep serving the port when their master is killed).
    The group id is the master's pid; no other process group can take it while a member is left."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- main -----------------------------------------------------------------------------------------------

def main(argv=None, companions=None, description: str | None = None) -> int:
    """`companions`: more processes to run with the stack (api/process/async_stack.py), an object with
    `start(settings)` (after gunicorn and nginx), `poll()` (each turn of the wait) and `stop()` (last)."""
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--access-log", help="nginx's JSON access log (default: <run_dir>/nginx/access.log)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # relative settings (run/, models/) mean the same here as in gunicorn, started here too
    settings = Settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    nginx = nginx_binary()
    if PRCTL is None:
        print("warning: no parent-death signal on this platform: should this process be killed (kill -9), "
              f"stop gunicorn and nginx yourself (pids in {settings.run_dir})", file=sys.stderr, flush=True)
    clear_leftovers(settings.run_dir)
    pid_file = claim(settings.run_dir)
    try:
        return serve(settings, nginx, args.access_log, companions)
    finally:
        pid_file.unlink(missing_ok=True)


def serve(settings: Settings, nginx_path: str, access_log: str | None, companions=None) -> int:
    stop_draining(settings.run_dir)
    conf = render(settings, settings.run_dir / "nginx", local=True, access_log=access_log)

    gunicorn = start([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                     GUNICORN_ON_PARENT_DEATH)
    if not wait_for_socket(settings.socket_path, gunicorn):
        stop(gunicorn, signal.SIGTERM, settings.graceful_timeout + 5)
        sys.exit(f"gunicorn did not open {settings.socket_path}")
    for path in settings.worker_socket_paths:  # bound before the model loads: nginx starts with its peers
        wait_for_socket(path, gunicorn, timeout=10)  # none: nginx uses the shared socket meanwhile
    nginx = start([nginx_path, "-p", str(conf.parent), "-c", str(conf)], NGINX_ON_PARENT_DEATH)
    print(f"serving {settings.model_name} on http://{settings.host}:{settings.port} "
          f"(instance-only: http://127.0.0.1:{settings.status_port}); Ctrl-C stops", flush=True)

    stopping = []

    def on_stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: gunicorn.send_signal(signal.SIGHUP))
    if companions:
        companions.start(settings)  # after gunicorn: its start wipes the metrics folder they write to
    while not stopping and gunicorn.poll() is None and nginx.poll() is None:
        time.sleep(0.2)
        if companions:
            companions.poll()
    if stopping:
        drain(settings, stopping, (nginx, gunicorn))
    code = shutdown(nginx, gunicorn, settings, clean=bool(stopping))
    if companions:
        companions.stop()
    return code


def drain(settings: Settings, stopping: list, processes) -> None:
    """/ready answers 503 from now on; keep serving until the load balancer has seen it."""
    start_draining(settings.run_dir)
    print(f"draining: /ready answers 503; stopping in {settings.drain_seconds:g} s (Ctrl-C again: now)", flush=True)
    deadline = time.monotonic() + settings.drain_seconds
    while time.monotonic() < deadline and len(stopping) < 2 and all(p.poll() is None for p in processes):
        time.sleep(0.05)


def stop(process: subprocess.Popen, sig: signal.Signals, timeout: float) -> None:
    """`sig`, up to `timeout` s to exit, then SIGKILL; then whatever its process group still holds."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    kill_group(process)


def shutdown(nginx: subprocess.Popen, gunicorn: subprocess.Popen, settings: Settings, clean: bool) -> int:
    """nginx first (QUIT: stop accepting, finish what it holds), then gunicorn (TERM: graceful; it sees
    the stack already drained and does not wait again)."""
    for process, sig in ((nginx, signal.SIGQUIT), (gunicorn, signal.SIGTERM)):
        stop(process, sig, settings.graceful_timeout + 5)
    if not clean:
        print(f"stopped: nginx exited {nginx.returncode}, gunicorn exited {gunicorn.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
