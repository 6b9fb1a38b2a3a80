#!/usr/bin/env bash
# Install one keras-serving instance: the image bake (deploy/image/build.pkr.hcl) and the local tests
# (tests/test_deploy.py) both run this script, so what the tests exercise is what the image gets.
# Safe to run again: every step checks or replaces what an earlier run left.
set -o errexit -o nounset -o pipefail

usage() {
    cat <<'EOF'
Usage: provision.sh --app-version V --model-version V --model-store DIR [options]

Installs the app, its virtualenv, the model store, nginx's site, systemd units, the environment file
/etc/keras-serving/env, log rotation and the CloudWatch agent's config. Both roles' units are installed
and enabled: the HTTP server (keras-serving.service, nginx) runs unless /etc/keras-serving/worker.env
exists, the queue worker (keras-serving-worker.service) only where it does; the worker group's user data
writes that file at boot (deploy/cloudformation/workers.yaml), so one image serves both.

  --app-version V        release name: /opt/keras-serving/releases/V, pointed at by `current`
  --model-version V      the model version directory baked in and served (SERVE_MODEL_VERSIONS)
  --model-store DIR      a store laid out as <DIR>/<name>/<version>/ to copy in
  --model-name NAME      the model served (default: digits)
  --source DIR           the app's files (default: the checkout holding this script)
  --cpu                  requirements.txt and SERVE_DEVICE=cpu, no GPU check (local testing)
  --root DIR             install everything under DIR, paths inside units and configs included, so the
                         installed tree runs where it is without touching this machine's system
  --user NAME            the account gunicorn runs as (default: keras-serving, created if missing)
  --port N, --status-port N   nginx's public and instance-only ports (default: 8080, 8081)
  --setting NAME=VALUE   any other SERVE_* setting for the environment file (repeatable)
  --python PATH          interpreter the virtualenv is made from (default: python3, >= 3.11)
  --reuse-site-packages DIR   layer the virtualenv over DIR (another venv's site-packages) so pip finds
                         the pins already there: fast tests, same requirement resolution
  --cloud-agents         also install the CloudWatch agent and cfn-bootstrap (image bakes on EC2)
  --role server|worker   bake the role in: `worker` writes /etc/keras-serving/worker.env (the queue's
                         SERVE_QUEUE_* settings go there or in --setting), `server` removes it;
                         without --role the file is left as it is (the boot chooses)
  --batch-input PATH --batch-output DIR   also install the nightly predict-files job on these paths
                         (deploy/systemd/install.sh; the release has it for later installs too)
  -h, --help             this text
EOF
}

ROOT="" APP_VERSION="" MODEL_VERSION="" MODEL_NAME="digits" MODEL_SOURCE="" CPU=0 CLOUD_AGENTS=0
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SERVICE_USER="keras-serving" PORT=8080 STATUS_PORT=8081 PYTHON="python3" REUSE_SITE_PACKAGES=""
EXTRA_SETTINGS=() ROLE="" BATCH_INPUT="" BATCH_OUTPUT=""

while [ $# -gt 0 ]; do
    case "$1" in
        --app-version) APP_VERSION="$2"; shift 2 ;;
        --model-version) MODEL_VERSION="$2"; shift 2 ;;
        --model-store) MODEL_SOURCE="$2"; shift 2 ;;
        --model-name) MODEL_NAME="$2"; shift 2 ;;
        --source) SOURCE="$(cd "$2" && pwd)"; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --root) ROOT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        --user) SERVICE_USER="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --status-port) STATUS_PORT="$2"; shift 2 ;;
        --setting) EXTRA_SETTINGS+=("$2"); shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --reuse-site-packages) REUSE_SITE_PACKAGES="$(cd "$2" && pwd)"; shift 2 ;;
        --cloud-agents) CLOUD_AGENTS=1; shift ;;
        --role) ROLE="$2"; shift 2 ;;
        --batch-input) BATCH_INPUT="$2"; shift 2 ;;
        --batch-output) BATCH_OUTPUT="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "provision.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

fail() { echo "provision.sh: $*" >&2; exit 1; }
step() { echo "==> $*"; }

[ -n "$APP_VERSION" ] || fail "--app-version is required"
[ -n "$MODEL_VERSION" ] || fail "--model-version is required"
[ -n "$MODEL_SOURCE" ] || fail "--model-store is required"
[[ "$APP_VERSION" =~ ^[A-Za-z0-9._+-]+$ ]] || fail "--app-version must be a plain name: $APP_VERSION"
[ -d "$MODEL_SOURCE/$MODEL_NAME/$MODEL_VERSION" ] \
    || fail "the model store has no $MODEL_NAME version $MODEL_VERSION: $MODEL_SOURCE/$MODEL_NAME/$MODEL_VERSION"
[ "$(id -u)" -eq 0 ] || [ -n "$ROOT" ] || fail "run as root, or with --root DIR"
[ "$CLOUD_AGENTS" -eq 0 ] || [ -z "$ROOT" ] || fail "--cloud-agents installs system-wide: not with --root"
[[ "$ROLE" =~ ^(|server|worker)$ ]] || fail "--role must be server or worker: $ROLE"
{ [ -n "$BATCH_INPUT" ] && [ -n "$BATCH_OUTPUT" ]; } || { [ -z "$BATCH_INPUT" ] && [ -z "$BATCH_OUTPUT" ]; } \
    || fail "--batch-input and --batch-output go together"

# Every path below is under $ROOT ("" on an instance); units and configs name the same paths.
APP_HOME="$ROOT/opt/keras-serving"
RELEASE="$APP_HOME/releases/$APP_VERSION"
CURRENT="$APP_HOME/current"
VENV="$RELEASE/.venv"
STORE="$APP_HOME/models"
CONF_DIR="$ROOT/etc/keras-serving"
ENV_FILE="$CONF_DIR/env"
NGINX_DIR="$ROOT/etc/nginx/keras-serving"
UNIT_DIR="$ROOT/etc/systemd/system"
LOG_DIR="$ROOT/var/log/keras-serving"
NGINX_LOG_DIR="$ROOT/var/log/nginx"
# /run is systemd's (RuntimeDirectory=); a tree under --root has no systemd to make it.
if [ -n "$ROOT" ]; then RUN_DIR="$ROOT/run/keras-serving"; else RUN_DIR="/run/keras-serving"; fi
if [ "$CPU" -eq 1 ]; then REQUIREMENTS="requirements.txt"; DEVICE="cpu"; else REQUIREMENTS="requirements-gpu.txt"; DEVICE="gpu"; fi
FILES="$SOURCE/deploy/image/files"

install_system_packages() {
    local need=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    if [ -z "$ROOT" ]; then
        command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
        [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
    fi
    if [ ${#need[@]} -eq 0 ]; then step "system packages: all present"; return; fi
    [ "$(id -u)" -eq 0 ] || fail "missing system packages (${need[*]}) and not root to install them"
    step "system packages: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
}

check_python() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || fail "$PYTHON is older than 3.11, which the pinned requirements need"
}

create_user() {
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then return; fi
    [ -z "$ROOT" ] || fail "user $SERVICE_USER does not exist (with --root, pass --user of an existing account)"
    step "user: creating $SERVICE_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER"
}

install_release() {
    step "app: $RELEASE"
    mkdir -p "$RELEASE"
    local item
    for item in api wsgi.py gunicorn.conf.py scripts nginx pyproject.toml README.md \
        requirements.txt requirements-gpu.txt requirements-fast.txt deploy/image deploy/systemd; do
        [ -e "$SOURCE/$item" ] || fail "the source $SOURCE has no $item"
        mkdir -p "$(dirname "$RELEASE/$item")"
        rm -rf "${RELEASE:?}/$item"
        cp -R "$SOURCE/$item" "$RELEASE/$item"
    done
    find "$RELEASE" -path "$VENV" -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
    # Uploads (Packer's file provisioner) need not keep the executable bit the units rely on.
    chmod +x "$RELEASE"/deploy/image/*.sh "$RELEASE"/deploy/systemd/*.sh
    chmod -R go-w "$RELEASE"
}

install_virtualenv() {
    step "virtualenv: $VENV from $REQUIREMENTS"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    if [ -n "$REUSE_SITE_PACKAGES" ]; then
        "$VENV/bin/python" -c 'import sys, sysconfig; open(sysconfig.get_path("purelib") + "/_reused_site_packages.pth", "w").write(sys.argv[1] + "\n")' "$REUSE_SITE_PACKAGES"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$RELEASE/$REQUIREMENTS"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$RELEASE/requirements-fast.txt" \
        2>/dev/null || step "gunicorn_h1c could not be built (no C compiler): gunicorn keeps its pure-Python parser"
    "$VENV/bin/python" -m pip check >/dev/null || fail "pip check found broken requirements in $VENV"
    # The release's own command, as `pip install .` would make it but without building the app: the
    # nightly job's unit runs .venv/bin/keras-serving, and operators use it on the instance.
    "$VENV/bin/python" -c 'import sysconfig, sys; open(sysconfig.get_path("purelib") + "/keras_serving_release.pth", "w").write(sys.argv[1] + "\n")' "$RELEASE"
    cat >"$VENV/bin/keras-serving" <<'LAUNCHER'
#!/bin/sh
# keras-serving from this release (written by deploy/image/provision.sh)
exec "$(dirname "$0")/python" -m api.cli "$@"
LAUNCHER
    chmod 0755 "$VENV/bin/keras-serving"
}

install_models() {
    step "models: $MODEL_NAME $MODEL_VERSION into $STORE"
    local target="$STORE/$MODEL_NAME/$MODEL_VERSION" staging="$STORE/.$MODEL_NAME-$MODEL_VERSION.partial"
    mkdir -p "$STORE/$MODEL_NAME"
    # A version directory is swapped in whole, so a reader never sees half a model.
    rm -rf "$staging"
    cp -R "$MODEL_SOURCE/$MODEL_NAME/$MODEL_VERSION" "$staging"
    rm -rf "$target"
    mv "$staging" "$target"
    chmod -R go-w,a+rX "$STORE"
}

write_env_file() {
    step "settings: $ENV_FILE"
    mkdir -p "$CONF_DIR"
    local workers_line="" tmp="$ENV_FILE.tmp" setting
    # One worker per GPU: more only time-share it (gunicorn#2957); CPU instances keep the default.
    [ "$DEVICE" = "cpu" ] || workers_line="SERVE_WORKERS='1'"
    {
        echo "# keras-serving settings, read by the gunicorn unit and by provision.sh when it renders nginx."
        echo "# Written by deploy/image/provision.sh; every SERVE_* variable: \`make settings\`."
        echo "# Values are single-quoted so systemd and a shell read them the same."
        echo "SERVE_MODEL_STORE='$STORE'"
        echo "SERVE_MODEL_NAME='$MODEL_NAME'"
        echo "SERVE_MODEL_VERSIONS='$MODEL_VERSION'"
        echo "SERVE_HOST='0.0.0.0'"
        echo "SERVE_PORT='$PORT'"
        echo "SERVE_STATUS_PORT='$STATUS_PORT'"
        echo "SERVE_RUN_DIR='$RUN_DIR'"
        echo "SERVE_DEVICE='$DEVICE'"
        # Port 8080 admits only the load balancer's security group, so any private sender is the ALB.
        echo "SERVE_TRUSTED_PROXIES='[\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]'"
        [ -z "$workers_line" ] || echo "$workers_line"
        for setting in ${EXTRA_SETTINGS[@]+"${EXTRA_SETTINGS[@]}"}; do
            [[ "$setting" =~ ^SERVE_[A-Z_]+=[^\']*$ ]] || fail "--setting must be SERVE_NAME=VALUE without quotes: $setting"
            echo "${setting%%=*}='${setting#*=}'"
        done
        echo "KERAS_SERVING_APP_VERSION='$APP_VERSION'"
        echo "KERAS_SERVING_MODEL_VERSION='$MODEL_VERSION'"
    } >"$tmp"
    chmod 0640 "$tmp"
    chgrp "$(id -gn "$SERVICE_USER")" "$tmp"
    mv "$tmp" "$ENV_FILE"
}

write_role() {
    local worker_env="$CONF_DIR/worker.env"
    case "$ROLE" in
        server) step "role: server (no $worker_env)"; rm -f "$worker_env" ;;
        worker)
            step "role: worker ($worker_env)"
            {
                echo "# This instance runs keras-serving-worker.service, not the HTTP server (provision.sh --role worker)."
                echo "# The worker's SERVE_QUEUE_* settings (docs/async.md) go here; they override ./env."
            } >"$worker_env.tmp"
            chmod 0640 "$worker_env.tmp"
            chgrp "$(id -gn "$SERVICE_USER")" "$worker_env.tmp"
            mv "$worker_env.tmp" "$worker_env"
            ;;
        *) step "role: chosen at boot (worker.env $([ -f "$worker_env" ] && echo present || echo absent))" ;;
    esac
}

# Runs python in the release with the environment file loaded: what the gunicorn unit will see.
release_python() {
    # shellcheck disable=SC1090  # the file write_env_file just wrote
    (set -a && . "$ENV_FILE" && set +a && cd "$RELEASE" && "$VENV/bin/python" "$@")
}

read_settings() {
    # Invalid settings stop the provisioning here rather than the service at boot.
    read -r GRACEFUL_TIMEOUT REQUEST_TIMEOUT DRAIN_SECONDS < <(release_python -c \
        'from api.settings import Settings; s = Settings(); c = lambda x: int(-(-x // 1)); print(s.graceful_timeout, c(s.request_timeout), c(s.drain_seconds))')
    # systemd must outwait gunicorn's drain (/ready 503 while still serving) and its graceful stop,
    # else it SIGKILLs workers mid-request.
    GUNICORN_STOP_SEC=$((DRAIN_SECONDS + GRACEFUL_TIMEOUT + 10))
    # A queue worker's SIGTERM drain finishes the jobs it holds, each at most SERVE_QUEUE_MAX_JOB_SECONDS
    # (its lease renewals stop there); systemd must outwait it. worker.env may raise that limit.
    local max_job
    # shellcheck disable=SC1090,SC1091  # the files write_env_file and the role wrote
    max_job=$(set -a && . "$ENV_FILE" && { [ ! -f "$CONF_DIR/worker.env" ] || . "$CONF_DIR/worker.env"; } && set +a \
        && cd "$RELEASE" && "$VENV/bin/python" -c 'from api.settings import Settings; print(int(-(-Settings().queue_max_job_seconds // 1)))')
    WORKER_STOP_SEC=$((max_job + 30))
    # nginx's graceful QUIT waits for requests in flight, each bounded by the request timeout.
    NGINX_DRAIN_SEC=$((REQUEST_TIMEOUT + 5))
}

render_nginx() {
    step "nginx: $NGINX_DIR (rendered by api/process/nginx.py)"
    mkdir -p "$NGINX_LOG_DIR" "$ROOT/etc/nginx/conf.d"
    # render() rather than the CLI: the CLI puts the access log beside the config, and on an instance
    # it belongs in /var/log/nginx, which the nginx package's logrotate already rotates.
    release_python -c 'import sys; from pathlib import Path
from api.settings import Settings
from api.process.nginx import render
render(Settings(), Path(sys.argv[1]), local=False, access_log=sys.argv[2])' \
        "$NGINX_DIR" "$NGINX_LOG_DIR/keras-serving.access.log" >/dev/null
    ln -sfn "$NGINX_DIR/site.conf" "$ROOT/etc/nginx/conf.d/keras-serving.conf"
    if [ -z "$ROOT" ]; then
        rm -f /etc/nginx/sites-enabled/default
        # nginx's workers reach gunicorn's socket through the service's group (socket mode 0770).
        usermod --append --groups "$(id -gn "$SERVICE_USER")" www-data
    else
        # A stand-in for the distribution's nginx.conf, so the tree under --root runs by itself.
        local nginx_user
        nginx_user="$(id -un) $(id -gn "$SERVICE_USER")"
        cat >"$ROOT/etc/nginx/nginx.conf" <<EOF
# Stand-in for /etc/nginx/nginx.conf under --root: only the parts the site needs.
user $nginx_user;
worker_processes 1;
pid $ROOT/run/nginx.pid;
error_log $NGINX_LOG_DIR/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $ROOT/var/lib/nginx/body;
    proxy_temp_path $ROOT/var/lib/nginx/proxy;
    fastcgi_temp_path $ROOT/var/lib/nginx/fastcgi;
    uwsgi_temp_path $ROOT/var/lib/nginx/uwsgi;
    scgi_temp_path $ROOT/var/lib/nginx/scgi;
    include $ROOT/etc/nginx/conf.d/*.conf;
}
EOF
        mkdir -p "$ROOT/var/lib/nginx"
    fi
}

fill() {  # fill TEMPLATE OUT: replace the at-sign placeholders of deploy/image/files
    sed -e "s|@ROOT@|$ROOT|g" -e "s|@USER@|$SERVICE_USER|g" -e "s|@GROUP@|$(id -gn "$SERVICE_USER")|g" \
        -e "s|@GUNICORN_STOP_SEC@|$GUNICORN_STOP_SEC|g" -e "s|@NGINX_DRAIN_SEC@|$NGINX_DRAIN_SEC|g" \
        -e "s|@REQUEST_TIMEOUT@|$REQUEST_TIMEOUT|g" -e "s|@WORKER_STOP_SEC@|$WORKER_STOP_SEC|g" "$1" >"$2.tmp"
    if grep -q '@[A-Z_]*@' "$2.tmp"; then fail "unfilled placeholder in $2: $(grep -o '@[A-Z_]*@' "$2.tmp" | head -1)"; fi
    mv "$2.tmp" "$2"
}

install_units() {
    step "systemd units: $UNIT_DIR"
    mkdir -p "$UNIT_DIR/nginx.service.d" "$UNIT_DIR/keras-serving.service.d" "$UNIT_DIR/keras-serving-worker.service.d" \
        "$LOG_DIR" "$RUN_DIR"
    fill "$FILES/keras-serving.service" "$UNIT_DIR/keras-serving.service"
    fill "$FILES/keras-serving-worker.service" "$UNIT_DIR/keras-serving-worker.service"
    fill "$FILES/keras-serving-gpu-check.service" "$UNIT_DIR/keras-serving-gpu-check.service"
    fill "$FILES/nginx-drain.conf" "$UNIT_DIR/nginx.service.d/keras-serving.conf"
    # The HTTP stack stands down where worker.env exists (the worker unit's own condition is the reverse).
    fill "$FILES/server-role.conf" "$UNIT_DIR/keras-serving.service.d/role.conf"
    fill "$FILES/server-role.conf" "$UNIT_DIR/nginx.service.d/keras-serving-role.conf"
    local unit
    for unit in keras-serving keras-serving-worker; do
        if [ "$DEVICE" = "gpu" ]; then
            fill "$FILES/requires-gpu.conf" "$UNIT_DIR/$unit.service.d/gpu.conf"
        else
            rm -f "$UNIT_DIR/$unit.service.d/gpu.conf"
        fi
    done
    chown "$SERVICE_USER:$(id -gn "$SERVICE_USER")" "$LOG_DIR" "$RUN_DIR"
    chmod 0750 "$LOG_DIR" "$RUN_DIR"
    # Enabled, not started: the instance starts them at boot. --root makes the links offline.
    systemctl --root="${ROOT:-/}" enable keras-serving.service keras-serving-worker.service \
        keras-serving-gpu-check.service >/dev/null 2>&1 || fail "systemctl enable failed"
    if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
}

install_observability() {
    step "logs and metrics: logrotate, CloudWatch agent config"
    mkdir -p "$ROOT/etc/logrotate.d"
    fill "$FILES/logrotate" "$ROOT/etc/logrotate.d/keras-serving"
    cp "$FILES/cloudwatch-agent.json" "$CONF_DIR/cloudwatch-agent.json"
}

install_cloud_agents() {
    step "cloud agents: CloudWatch agent, cfn-bootstrap"
    local ctl=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
    if [ ! -x "$ctl" ]; then
        curl -fsSL --retry 3 -o /tmp/amazon-cloudwatch-agent.deb \
            https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb
        dpkg -i /tmp/amazon-cloudwatch-agent.deb
        rm -f /tmp/amazon-cloudwatch-agent.deb
    fi
    # Converts our JSON into the agent's own config; the agent starts with it at every boot.
    "$ctl" -a fetch-config -m ec2 -c "file:$CONF_DIR/cloudwatch-agent.json"
    systemctl enable amazon-cloudwatch-agent.service
    # The agent runs as cwagent (its config says so): it reads nginx's logs (adm) and gunicorn's.
    usermod --append --groups adm,"$(id -gn "$SERVICE_USER")" cwagent
    if [ ! -x /opt/aws/bin/cfn-signal ]; then
        # AWS publishes cfn-bootstrap only as this tarball; its own venv keeps it off the app's pins.
        python3 -m venv /opt/aws/cfn-bootstrap
        /opt/aws/cfn-bootstrap/bin/pip install --quiet \
            https://s3.amazonaws.com/cloudformation-examples/aws-cfn-bootstrap-py3-latest.tar.gz
        mkdir -p /opt/aws/bin
        ln -sfn /opt/aws/cfn-bootstrap/bin/cfn-signal /opt/aws/bin/cfn-signal
    fi
    # The boot script asks the target group whether this instance is healthy before it signals.
    if ! command -v aws >/dev/null 2>&1; then
        python3 -m venv /opt/aws/awscli
        /opt/aws/awscli/bin/pip install --quiet awscli
        ln -sfn /opt/aws/awscli/bin/aws /usr/local/bin/aws
    fi
}

install_batch_job() {
    # The nightly predict-files job (keras-serving-predict-files.service + .timer), installed by its own
    # script from the release: its units are filled in as the server's, its timer enabled.
    step "nightly predict-files: $BATCH_INPUT -> $BATCH_OUTPUT"
    local args=(--input "$BATCH_INPUT" --output "$BATCH_OUTPUT" --user "$SERVICE_USER")
    [ -z "$ROOT" ] || args+=(--root "$ROOT")
    "$RELEASE/deploy/systemd/install.sh" "${args[@]}" >/dev/null || fail "deploy/systemd/install.sh failed"
}

switch_current() {
    step "release: current -> releases/$APP_VERSION"
    # rename(2) over the old link: `current` is never missing, even for a moment.
    ln -sfn "releases/$APP_VERSION" "$CURRENT.new"
    mv -T "$CURRENT.new" "$CURRENT"
}

install_system_packages
check_python
create_user
install_release
install_virtualenv
install_models
write_env_file
write_role
read_settings
render_nginx
install_units
install_observability
[ -z "$BATCH_INPUT" ] || install_batch_job
[ "$CLOUD_AGENTS" -eq 0 ] || install_cloud_agents
switch_current
step "done: keras-serving $APP_VERSION, model $MODEL_NAME $MODEL_VERSION ($DEVICE)"
