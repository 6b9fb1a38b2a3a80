#!/usr/bin/env bash
# Install the clients whose pins clash with the app's into their own virtualenv, .venv/clients
# (requirements-clients.txt: KServe's Python SDK), for tests/test_kserve_client.py. As the deploy tools
# (scripts/install_deploy_tools.sh), it runs again only when the pin set changes.
#
#   scripts/install_client_venvs.sh [VENV]     (default VENV: .venv/clients; PYTHON picks the interpreter)
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${1:-.venv/clients}"
PYTHON="${PYTHON:-python3}"

stamp="$VENV/.requirements-clients"
if [ ! -f "$stamp" ] || [ requirements-clients.txt -nt "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-clients.txt
    touch "$stamp"
fi
echo "client virtualenv: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("kserve", m.version("kserve"))')"
