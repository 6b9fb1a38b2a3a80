"""What the Ray Serve peer needs, made when missing: its own virtualenv and Debian's haproxy.

Ray runs from its own interpreter, as ../shared/peers/run_real_peers.sh runs it: its pins are not
ours, and the bench's venv must not change for a peer.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.harness import log

DEFAULT_VENV = Path.home() / ".cache" / "keras-serving" / "bench-venv-ray"
PIP = "pip==26.3"  # the Makefile's
REQUIREMENTS = ["ray[serve]==2.60.0", "tensorflow-cpu==2.21.0", "keras==3.15.1", "orjson==3.13.0",
                "numpy==2.4.6"]  # numpy: the version requirements.txt pins, which tensorflow 2.21 takes


def haproxy() -> str | None:
    """Path of Debian's haproxy, installed with apt-get when missing (as root, else with sudo), or None."""
    def which():  # /usr/sbin is not on every user's PATH
        return shutil.which("haproxy", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    if which():
        return which()
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if sudo and not shutil.which("sudo"):
        return None
    log("[ray_serve] installing haproxy from the distribution's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "haproxy"]):
        if subprocess.run(sudo + step, env=env, stdout=subprocess.DEVNULL).returncode:
            return None
    return which()


def python(venv: Path) -> Path | None:
    """The interpreter of `venv` with REQUIREMENTS installed, creating it on first use (a few minutes);
    None if pip failed (the reason is in the install log beside the venv)."""
    pins = "\n".join([PIP, *REQUIREMENTS]) + "\n"
    stamp = venv / ".bench-pins"  # written last: a venv whose install broke off is installed again
    if stamp.exists() and stamp.read_text() == pins:
        return venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    install_log = venv.parent / f"{venv.name}-install.log"
    log(f"[ray_serve] creating {venv}: {' '.join(REQUIREMENTS)} (once; output in {install_log})")
    pip = [str(venv / "bin" / "pip"), "install", "--quiet"]
    with open(install_log, "wb") as out:
        for step in ([sys.executable, "-m", "venv", str(venv)], [*pip, PIP], [*pip, *REQUIREMENTS]):
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode:
                return None
    stamp.write_text(pins)
    return venv / "bin" / "python"


def prepare(venv: Path, peers: Path) -> Path | None:
    """Ray's interpreter, ready to run peers/ray_serve_app.py; None after one line on stderr saying why."""
    if not (peers / "ray_serve_app.py").exists():
        reason = f"{peers / 'ray_serve_app.py'} is missing"
    elif not haproxy():
        reason = "haproxy is missing and apt-get could not install it (no network, or not root and no sudo)"
    elif not (interpreter := python(venv)):
        reason = (f"pip could not install {' '.join(REQUIREMENTS)} into {venv} (no network? see "
                  f"{venv.parent / (venv.name + '-install.log')})")
    else:
        return interpreter
    log(f"[ray_serve] skipped: {reason}; --no-ray skips it without trying")
    return None
