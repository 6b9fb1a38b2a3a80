"""Run the instance's stack in the foreground: gunicorn on a unix socket, nginx in front of it.

    python scripts/run_stack.py [--access-log PATH]

This is what `make serve` runs and what the end-to-end tests start. nginx runs under its own prefix
(`<run_dir>/nginx`) with a config rendered from the settings, never the system's.

Ctrl-C (or SIGTERM) drains: /ready turns 503 at once while everything else is still served for
SERVE_DRAIN_SECONDS (a second Ctrl-C cuts that short), then nginx stops accepting and finishes what it
holds, then gunicorn stops. SIGHUP is passed to gunicorn, whose workers then restart one by one, each
old one stopping only when its replacement is warm.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.lifecycle import start_draining, stop_draining  # noqa: E402
from api.settings import Settings  # noqa: E402
from scripts.render_nginx import render  # noqa: E402


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        sys.exit("nginx is not installed: run `make system-deps` (Debian: apt-get install nginx)")
    return found


def wait_for_socket(path: Path, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"gunicorn did not open {path}")
        time.sleep(0.05)


def _own_group_tied_to_parent() -> None:
    """Run in the child before exec: Ctrl-C in the terminal reaches this script only (it stops the two
    in order), and the kernel stops the child should this script die without stopping it."""
    os.setpgrp()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--access-log", help="nginx's JSON access log (default: <run_dir>/nginx/access.log)")
    args = parser.parse_args(argv)
    settings = Settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.socket_path.unlink(missing_ok=True)
    stop_draining(settings.run_dir)
    conf = render(settings, settings.run_dir / "nginx", local=True, access_log=args.access_log)

    gunicorn = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                                preexec_fn=_own_group_tied_to_parent)
    wait_for_socket(settings.socket_path, gunicorn)
    nginx = subprocess.Popen([nginx_binary(), "-p", str(conf.parent), "-c", str(conf)], cwd=ROOT,
                             preexec_fn=_own_group_tied_to_parent)
    print(f"serving {settings.model_name} on http://{settings.host}:{settings.port} "
          f"(instance-only: http://127.0.0.1:{settings.status_port}); Ctrl-C stops", flush=True)

    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: gunicorn.send_signal(signal.SIGHUP))
    while not stopping and gunicorn.poll() is None and nginx.poll() is None:
        time.sleep(0.2)
    if stopping:
        drain(settings, stopping, (nginx, gunicorn))
    return shutdown(nginx, gunicorn, settings, clean=bool(stopping))


def drain(settings: Settings, stopping: list, processes) -> None:
    """/ready answers 503 from now on; keep serving until the load balancer has seen it."""
    start_draining(settings.run_dir)
    print(f"draining: /ready answers 503; stopping in {settings.drain_seconds:g} s (Ctrl-C again: now)", flush=True)
    deadline = time.monotonic() + settings.drain_seconds
    while time.monotonic() < deadline and len(stopping) < 2 and all(p.poll() is None for p in processes):
        time.sleep(0.05)


def shutdown(nginx: subprocess.Popen, gunicorn: subprocess.Popen, settings: Settings, clean: bool) -> int:
    """nginx first (QUIT: stop accepting, finish what it holds), then gunicorn (TERM: graceful; it sees
    the stack already drained and does not wait again)."""
    for process, sig in ((nginx, signal.SIGQUIT), (gunicorn, signal.SIGTERM)):
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(settings.graceful_timeout + 5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if not clean:
        print(f"stopped: nginx exited {nginx.returncode}, gunicorn exited {gunicorn.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
