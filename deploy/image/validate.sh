#!/usr/bin/env bash
# Assert that provision.sh left a runnable instance: the last step of the image bake, and of the
# provisioning test. Checks what breaks a boot: the release, its settings, the model, the units, nginx.
set -o errexit -o nounset -o pipefail

ROOT="" GPU=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$(cd "$2" && pwd)"; shift 2 ;;
        --gpu) GPU=1; shift ;;
        -h | --help) echo "Usage: validate.sh [--root DIR] [--gpu]"; exit 0 ;;
        *) echo "validate.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

fail() { echo "validate.sh: FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

current="$ROOT/opt/keras-serving/current"
env_file="$ROOT/etc/keras-serving/env"
units="$ROOT/etc/systemd/system"

[ -x "$current/.venv/bin/python" ] || fail "no virtualenv at $current/.venv"
ok "release $(readlink "$current")"

[ -r "$env_file" ] || fail "no environment file $env_file"
# shellcheck disable=SC1090  # the file provision.sh wrote
set -a && . "$env_file" && set +a
model_dir="$SERVE_MODEL_STORE/$SERVE_MODEL_NAME/$SERVE_MODEL_VERSIONS"
[ -d "$model_dir" ] || fail "the settings name a model version that is not there: $model_dir"
ok "model $model_dir"

(cd "$current" && .venv/bin/python -m gunicorn --check-config -c gunicorn.conf.py wsgi:app) \
    || fail "gunicorn --check-config"
ok "gunicorn config and app import"

if command -v systemd-analyze >/dev/null 2>&1; then
    # verify resolves ExecStart binaries and directives, but only warns (exit 0) on a value it cannot
    # parse, such as a misspelt signal: any output at all is a failure here.
    to_verify=("$units/keras-serving.service" "$units/keras-serving-worker.service" "$units/keras-serving-gpu-check.service")
    # The nightly job's units, where provision.sh --batch-input or deploy/systemd/install.sh installed them.
    for unit in keras-serving-predict-files.service keras-serving-predict-files.timer; do
        [ ! -f "$units/$unit" ] || to_verify+=("$units/$unit")
    done
    if ! out="$(systemd-analyze verify "${to_verify[@]}" 2>&1)" || [ -n "$out" ]; then
        fail "systemd-analyze verify: $out"
    fi
    ok "systemd units verify (${#to_verify[@]} units)"
fi

if [ -n "$ROOT" ]; then
    nginx -t -q -c "$ROOT/etc/nginx/nginx.conf" || fail "nginx -t"
else
    nginx -t -q || fail "nginx -t"
fi
ok "nginx config"

if [ "$GPU" -eq 1 ]; then
    "$current/deploy/image/check-gpu.sh" || fail "no GPU visible"
    (cd "$current" && .venv/bin/python -c \
        'import tensorflow as tf, sys; gpus = tf.config.list_physical_devices("GPU"); print(gpus); sys.exit(not gpus)') \
        || fail "TensorFlow sees no GPU (CUDA wheels and driver do not match?)"
    ok "GPU visible to nvidia-smi and TensorFlow"
fi
echo "validate.sh: all checks passed"
