"""What the tests and the benchmarks share to run servers and clients: a free port, a command started as a
process group of its own with its output in a log, waited for until ready and stopped, and what /proc
says of the processes.

The home of this module is bench/, not tests/: `python -m bench` and `python -m bench.soak` run without
the test suite, and tests/ imports from here (tests/servers.py, tests/load.py).
"""
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """A progress line on stderr, unbuffered: stdout is kept for the report."""
    print(message, file=sys.stderr, flush=True)


def machine() -> str:
    """One line for a report's header: host, processor, the cores this process may use, Python."""
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, "
            f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick; another process may take it before use)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_env(settings: dict) -> dict[str, str]:
    """Settings as the SERVE_<NAME> environment variables api/settings.py reads."""
    return {f"SERVE_{name.upper()}": str(value) for name, value in settings.items()}


def wait_until(condition, timeout: float = 60.0, what: str = "", interval: float = 0.05) -> None:
    """Calls `condition` every `interval` s until it is true; TimeoutError(what) once `timeout` s passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """GET `url` answers 200 (a connection error raises requests.RequestException)."""
    return requests.get(url, timeout=timeout).status_code == 200


def ready_pids(run_dir: Path) -> set[int]:
    """The gunicorn workers that have written their readiness marker, <run_dir>/ready/<pid>: each loads
    and warms its own model copy before it does."""
    return {int(marker.name) for marker in (run_dir / "ready").glob("*")}


class ProcessGroup:
    """`command` started in a session (so a process group) of its own, stdout and stderr in `log_path`;
    `wait` until it is ready, `stop` it and everything in its group.

    GRACE: seconds `stop` gives the group to exit after SIGTERM, then SIGKILL to the whole group.
    TERM: who gets that SIGTERM: "group", every process in it; "leader", the command alone, which stops its
    own children in order (api/process/stack.py drains, then stops nginx, then gunicorn); "children", the
    command's children alone (loadtest.run's locust: it writes its reports and loadtest.run returns).
    LOG_TAIL: characters of the log an error quotes, from its end; None, all of it.
    """

    GRACE: float = 30.0
    TERM = "group"
    LOG_TAIL: int | None = None

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT, name: str | None = None):
        self.name = name or Path(command[0]).name
        self.log_path = log_path
        self.started = time.monotonic()
        self.cold_start_s: float | None = None
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-self.LOG_TAIL:] if self.LOG_TAIL else text

    def wait(self, ready, timeout: float = 90.0, what: str | None = None) -> float:
        """Seconds from the start until `ready()` holds, polled every 0.1 s: the cold start. A
        requests.RequestException from `ready` counts as not yet; RuntimeError if the command exits first,
        TimeoutError after `timeout` s (`what`: the error's words, default '<name> not ready'), each with
        the log."""
        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                return ready()
            except requests.RequestException:
                return False
        try:
            wait_until(up, timeout, interval=0.1)
        except TimeoutError:
            raise TimeoutError(f"{what or self.name + ' not ready'} in {timeout} s:\n{self.log()}") from None
        self.cold_start_s = time.monotonic() - self.started
        return self.cold_start_s

    def stop(self) -> None:
        """SIGTERM to TERM, up to GRACE s for the command to exit, then SIGKILL to its group; closes the
        log."""
        if self.process.poll() is None:
            if self.TERM == "group":
                os.killpg(self.pid, signal.SIGTERM)
            elif self.TERM == "leader":
                self.process.send_signal(signal.SIGTERM)
            else:
                signal_each(children(self.pid), signal.SIGTERM)
            try:
                self.process.wait(self.GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# -- what /proc says ------------------------------------------------------------------------------------

def read(path: Path) -> str | None:
    """A /proc file's text; None when the process ended between listing it and reading it."""
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def descendants(pid: int) -> list[int]:
    """pid and its children, theirs, and so on (the ones still linked to it by their parent pid)."""
    return [pid] + [p for child in children(pid) for p in descendants(child)]


def processes() -> dict[int, tuple[int, int]]:
    """Every running process: pid -> (parent pid, session id). Zombies (dead, not yet reaped) are not."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the name in parentheses may hold spaces: the fields start after the last ')'
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def session_tree(root: int) -> set[int]:
    """The pids of root's session and of every descendant of either, in sessions of their own included."""
    table = processes()
    keep = {root} | {pid for pid, (_, session) in table.items() if session == root}
    while more := {pid for pid, (parent, _) in table.items() if parent in keep} - keep:
        keep |= more
    return keep & table.keys()


def signal_each(pids, sig) -> set[int]:
    """Sends `sig` to each pid; the pids that were still there."""
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, sig)
            alive.add(pid)
        except ProcessLookupError:
            pass
    return alive


def listening(port: int) -> bool:
    """Whether a socket listens on TCP `port`, any address."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def vmrss_mib(status: str) -> float | None:
    """/proc/<pid>/status's VmRSS in MiB; None for a zombie, which has none."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (MiB); None once it has ended or is a zombie."""
    status = read(Path(f"/proc/{pid}/status"))
    return vmrss_mib(status) if status else None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def cpu_seconds(stat: str, ticks_per_s: int) -> float:
    """utime + stime of /proc/<pid>/stat; the fields are counted after the command name, which may
    itself hold spaces and parentheses."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds pid and its descendants have used, the live ones only."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = [read(Path(f"/proc/{p}/stat")) for p in descendants(pid)]
    return sum(cpu_seconds(s, ticks) for s in stats if s)


def pid_from(path: Path) -> int | None:
    """The pid a pid file holds; None when there is no file (yet) or it is empty."""
    text = read(path)
    return int(text.split()[0]) if text and text.split() else None
