#!/usr/bin/env bash
# Install what tests/test_deploy.py validates the deploy/ templates and scripts with, when missing:
# packer, shellcheck and systemd-analyze from the distribution's packages (Debian 12: packer 1.6.6),
# cfn-lint and checkov (requirements-deploy.txt) into their own virtualenv, .venv/deploy-tools:
# checkov's pins conflict with the app's (termcolor), so they cannot share .venv.
#
#   scripts/install_deploy_tools.sh [VENV]     (default VENV: .venv/deploy-tools; PYTHON picks the interpreter)
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${1:-.venv/deploy-tools}"
PYTHON="${PYTHON:-python3}"

need=()
command -v packer >/dev/null 2>&1 || need+=(packer)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]} from the distribution's packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The stamp is newer than the requirements file only when this exact pin set is installed.
stamp="$VENV/.requirements-deploy"
if [ ! -f "$stamp" ] || [ requirements-deploy.txt -nt "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
    touch "$stamp"
fi
echo "deploy tools: $(packer version | head -1), shellcheck $(shellcheck --version | sed -n 's/^version: //p')," \
    "$("$VENV/bin/cfn-lint" --version), checkov $("$VENV/bin/checkov" --version)"
