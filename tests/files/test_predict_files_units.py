"""deploy/systemd/: the nightly job's service and timer, installed under a root folder as provision.sh installs
the server's, pass systemd's own check and limit the job's share of the cores."""
import getpass
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "systemd" / "install.sh"


@pytest.fixture()
def installed(tmp_path):
    # The release the units run: this checkout (its .venv), where provision.sh would have put one.
    (tmp_path / "opt" / "keras-serving").mkdir(parents=True)
    (tmp_path / "opt" / "keras-serving" / "current").symlink_to(ROOT)
    (tmp_path / "etc" / "keras-serving").mkdir(parents=True)
    (tmp_path / "etc" / "keras-serving" / "env").write_text("SERVE_MODEL_STORE='/opt/keras-serving/models'\n")
    subprocess.run(["bash", str(INSTALL), "--root", str(tmp_path), "--user", getpass.getuser(), "--input",
                    "/data/in/*.parquet", "--output", "/data/out", "--cpu-share", "0.5", "--setting",
                    "SERVE_BATCH_MAX_ERROR_RATE=0.01"], check=True, capture_output=True, text=True)
    return tmp_path


def test_the_units_are_filled_enabled_and_limit_the_jobs_cores(installed):
    units = installed / "etc" / "systemd" / "system"
    service = (units / "keras-serving-predict-files.service").read_text()
    assert "@" not in re.sub(r"\$\$|%%", "", service.split("[Service]")[1].split("ExecStart")[0])
    quota = int(re.search(r"^CPUQuota=(\d+)%$", service, re.M).group(1))
    assert quota == max(1, len(__import__("os").sched_getaffinity(0)) // 2) * 100
    assert "SuccessExitStatus=130 143" in service and "RestartPreventExitStatus=1 2" in service
    assert f"ReadWritePaths={installed}/data/out" in service
    environment = (installed / "etc" / "keras-serving" / "predict-files.env").read_text()
    assert "SERVE_BATCH_CPU_SHARE='0.5'" in environment and "PREDICT_FILES_INPUT='/data/in/*.parquet'" in environment
    assert (units / "timers.target.wants" / "keras-serving-predict-files.timer").is_symlink()


def test_systemd_accepts_the_units(installed):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing: make deploy-tools installs it")
    units = installed / "etc" / "systemd" / "system"
    result = subprocess.run(["systemd-analyze", "verify", str(units / "keras-serving-predict-files.timer"),
                             str(units / "keras-serving-predict-files.service")], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "keras-serving-predict-files" in line
                and "network-online.target" not in line and "keras-serving.service" not in line]
    assert result.returncode == 0 and not problems, result.stderr
