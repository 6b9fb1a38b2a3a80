"""However `make serve`'s supervisor dies (kill -9 of it or of its process group, the OOM killer, a closed
terminal), nginx and gunicorn die with it, under load, within seconds; and the next start on the same run
dir and ports comes up and serves.

What protects it (api/process/stack.py, `keras-serving serve`): each master is started with a parent-death signal (Linux's
prctl PR_SET_PDEATHSIG), so the kernel signals it when the supervisor dies, however it dies. gunicorn's
master gets QUIT, its quick stop: its workers quit and it removes its pid file and sockets. nginx's master
gets TERM, its fast stop, which stops its workers (killed with SIGKILL, nginx's master would leave its
workers serving the port). A new start clears the pid files and sockets a crash left (gunicorn refuses to
start while its pid file names a live process), and, while a stack still runs on the run dir, refuses in
one line that says which pid to kill.

A third case: every process of the stack killed at once (the OOM killer taking the whole cgroup): then
nothing stops cleanly, and the pid files and sockets stay, one of them perhaps naming a pid that another
program took since, which is what made gunicorn say "Already running on PID ...".

The processes are found as the supervisor lays out the run dir: <run_dir>/gunicorn.pid (gunicorn's master;
its workers are its children) and <run_dir>/nginx/nginx.pid (nginx's master; its workers likewise).
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.load import REPORTS, Load
from tests.servers import Stack, running

CLIENTS = 8
GONE_WITHIN = 5.0  # seconds from the kill until no process of the stack is left (measured: under 1 s)
# make serve's default drain. A gunicorn whose supervisor died has nobody left to drain for (nginx stops
# too): should it drain all the same, it outlives the bound, and a `make serve` right away finds it there.
SETTINGS = {"workers": 2, "threads": 4, "drain_seconds": 5}


@pytest.fixture()
def stack(store, tmp_path):
    with running(Stack(tmp_path, model_store=store, **SETTINGS)) as served:
        yield served


def alive(pid: int) -> bool:
    """pid is a process that runs: /proc lists it and it is no zombie (dead, not yet reaped)."""
    try:  # the name in parentheses may hold spaces: the fields start after the last ')'
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(child) for child in out.split()}


def stack_processes(stack: Stack) -> dict[str, set[int]]:
    """nginx's and gunicorn's processes of `stack`, by role, from the pid files in its run dir."""
    gunicorn = stack.gunicorn_pid
    nginx = int((stack.run_dir / "nginx" / "nginx.pid").read_text())
    return {"gunicorn master": {gunicorn}, "gunicorn workers": children(gunicorn),
            "nginx master": {nginx}, "nginx workers": children(nginx)}


def kill_supervisor_under_load(stack: Stack, digits, kill, how: str) -> None:
    """Puts `stack` under a steady load, calls `kill` (which SIGKILLs its supervisor), and asserts that no
    nginx or gunicorn process of it is left GONE_WITHIN seconds later."""
    processes = stack_processes(stack)
    assert len(processes["gunicorn workers"]) == SETTINGS["workers"] and processes["nginx workers"], processes
    pids = set().union(*processes.values())
    assert all(alive(pid) for pid in pids), processes
    with Load(stack.url + "/predict", {"instances": digits[0][:1].tolist()}, CLIENTS, timeout=5) as load:
        load.wait_for(100)
        assert load.outcomes[200] >= 100, load.failures[:5]
        kill()
        killed_at = time.monotonic()
        stack.process.wait(5)
        while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() - killed_at < GONE_WITHIN:
            time.sleep(0.05)
        gone_after = time.monotonic() - killed_at
    load.report(f"{how} under load")
    for pid in left:  # a failed test leaves nothing running behind it
        os.kill(pid, signal.SIGKILL)
    survivors = {role: found & left for role, found in processes.items() if found & left}
    assert not survivors, f"{how}: still running {GONE_WITHIN:g} s later: {survivors}\n{stack.log()[-1500:]}"
    line = f"[{how}] every nginx and gunicorn process gone {gone_after:.1f} s after the kill"
    print(line)
    REPORTS.append(line)


def start_again(crashed: Stack, tmp_path, store) -> Stack:
    """A new stack on the crashed one's run dir and ports, with its settings: `make serve` once more."""
    again = Stack(tmp_path, model_store=store, run_dir=crashed.run_dir, port=crashed.port,
                  status_port=crashed.status_port, **SETTINGS)
    again.run_dir, again.port, again.status_port = crashed.run_dir, crashed.port, crashed.status_port
    again.url, again.status_url = crashed.url, crashed.status_url
    return again


def serves_predict(stack: Stack, digits) -> None:
    answer = requests.post(stack.url + "/predict", json={"instances": digits[0][:2].tolist()}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2


def test_sigkill_of_the_supervisor_takes_nginx_and_gunicorn_and_a_new_start_serves(stack, store, digits,
                                                                                     tmp_path):
    kill_supervisor_under_load(stack, digits, lambda: os.kill(stack.process.pid, signal.SIGKILL),
                               "SIGKILL to the supervisor")

    with running(start_again(stack, tmp_path, store)) as again:
        serves_predict(again, digits)
        # and while it serves, a third start on that run dir refuses, in one line naming what to kill
        third = start_again(stack, tmp_path, store)
        assert third.process.wait(30) == 1
        third.stop()
        said = third.log().strip().splitlines()
        assert len(said) == 1 and f"kill {again.process.pid}`" in said[0], said
        serves_predict(again, digits)


def test_sigkill_of_the_supervisors_process_group_takes_nginx_and_gunicorn(stack, store, digits, tmp_path):
    """A closed terminal or `kill -9 -PGID`: the whole group of the supervisor (Stack starts it as a session of
    its own, as a terminal starts `make serve` as a job of its own)."""
    group = os.getpgid(stack.process.pid)
    assert group == stack.process.pid
    kill_supervisor_under_load(stack, digits, lambda: os.killpg(group, signal.SIGKILL),
                               "SIGKILL to the supervisor's process group")

    with running(start_again(stack, tmp_path, store)) as again:
        serves_predict(again, digits)


def test_a_start_after_the_whole_stack_was_killed_clears_its_pid_files_and_sockets(stack, store, digits,
                                                                                   tmp_path):
    gunicorn_pid_file = stack.run_dir / "gunicorn.pid"
    written = gunicorn_pid_file.stat().st_mtime
    processes = {"the supervisor": {stack.process.pid}, **stack_processes(stack)}
    everyone = set().union(*processes.values())
    for sig in (signal.SIGSTOP, signal.SIGKILL):  # stopped first: no master reacts (nginx's respawns workers)
        for pid in everyone:
            os.kill(pid, sig)
    stack.process.wait(5)
    deadline = time.monotonic() + GONE_WITHIN
    while any(alive(pid) for pid in everyone) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in everyone), processes
    left = {path.name for path in stack.run_dir.iterdir() if path.is_socket() or path.suffix == ".pid"}
    assert {"stack.pid", "gunicorn.pid", "gunicorn.sock"} <= left, left

    # the number in gunicorn.pid, taken by a process that started after gunicorn wrote the file
    with subprocess.Popen(["sleep", "120"]) as other:
        try:
            gunicorn_pid_file.write_text(f"{other.pid}\n")
            os.utime(gunicorn_pid_file, (written, written))
            with running(start_again(stack, tmp_path, store)) as again:
                serves_predict(again, digits)
                assert again.gunicorn_pid != other.pid
        finally:
            other.kill()
