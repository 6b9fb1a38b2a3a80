#!/usr/bin/env bash
# Install the nightly predict-files job (keras-serving-predict-files.service + .timer) on an instance that
# deploy/image/provision.sh installed: its units filled in as provision.sh fills the server's, its
# environment file, the timer enabled (not started: it fires at its time). Safe to run again.
set -o errexit -o nounset -o pipefail

usage() {
    cat <<'USAGE'
Usage: install.sh --input PATH --output DIR [options]

  --input PATH           what to predict: a folder, a file or a quoted glob ('/data/in/*.parquet')
  --output DIR           where each night's run goes: DIR/YYYY-MM-DD/ (predictions, errors, manifest)
  --on-calendar SPEC     when (systemd OnCalendar; default: '*-*-* 02:00:00', nightly at 2)
  --cpu-share F          share of the cores the job may use beside the server (default: 0.5): the cores it
                         pins itself to (SERVE_BATCH_CPU_SHARE) and its CPUQuota
  --stop-seconds N       how long a stop waits for the shard in progress (default: 600)
  --setting NAME=VALUE   any other SERVE_* setting for the job (SERVE_BATCH_MAX_ERROR_RATE=0.01 ...)
  --root DIR             install under DIR (as provision.sh --root), for tests
  --user NAME            the account the job runs as (default: keras-serving, the server's)
  -h, --help             this text
USAGE
}

ROOT="" SERVICE_USER="keras-serving" INPUT="" OUTPUT="" ON_CALENDAR="*-*-* 02:00:00" CPU_SHARE="0.5"
STOP_SEC=600 EXTRA_SETTINGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --input) INPUT="$2"; shift 2 ;;
        --output) OUTPUT="$2"; shift 2 ;;
        --on-calendar) ON_CALENDAR="$2"; shift 2 ;;
        --cpu-share) CPU_SHARE="$2"; shift 2 ;;
        --stop-seconds) STOP_SEC="$2"; shift 2 ;;
        --setting) EXTRA_SETTINGS+=("$2"); shift 2 ;;
        --root) ROOT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        --user) SERVICE_USER="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

fail() { echo "install.sh: $*" >&2; exit 1; }
[ -n "$INPUT" ] || fail "--input is required"
[ -n "$OUTPUT" ] || fail "--output is required"
[[ "$OUTPUT" = /* ]] || fail "--output must be an absolute path: $OUTPUT"
[[ "$CPU_SHARE" =~ ^(0?\.[0-9]+|1(\.0*)?)$ ]] && [ "$CPU_SHARE" != "0" ] || fail "--cpu-share must be in (0, 1]: $CPU_SHARE"
[[ "$STOP_SEC" =~ ^[1-9][0-9]*$ ]] || fail "--stop-seconds must be a positive integer: $STOP_SEC"
id -u "$SERVICE_USER" >/dev/null 2>&1 || fail "user $SERVICE_USER does not exist (provision.sh creates keras-serving)"
[ "$(id -u)" -eq 0 ] || [ -n "$ROOT" ] || fail "run as root, or with --root DIR"

FILES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
UNIT_DIR="$ROOT/etc/systemd/system"
CONF_DIR="$ROOT/etc/keras-serving"
GROUP="$(id -gn "$SERVICE_USER")"
# The pinned share as a hard ceiling too: CPUQuota counts one core as 100%.
CPU_QUOTA="$(awk -v share="$CPU_SHARE" -v cores="$(nproc)" 'BEGIN { n = int(share * cores + 1e-9); print (n < 1 ? 1 : n) * 100 "%" }')"

fill() {  # fill TEMPLATE OUT, as provision.sh's fill
    sed -e "s|@ROOT@|$ROOT|g" -e "s|@USER@|$SERVICE_USER|g" -e "s|@GROUP@|$GROUP|g" \
        -e "s|@OUTPUT@|$ROOT$OUTPUT|g" -e "s|@ON_CALENDAR@|$ON_CALENDAR|g" -e "s|@CPU_QUOTA@|$CPU_QUOTA|g" \
        -e "s|@STOP_SEC@|$STOP_SEC|g" "$1" >"$2.tmp"
    if grep -q '@[A-Z_]*@' "$2.tmp"; then fail "unfilled placeholder in $2: $(grep -o '@[A-Z_]*@' "$2.tmp" | head -1)"; fi
    mv "$2.tmp" "$2"
}

echo "==> predict-files: $CONF_DIR/predict-files.env, units in $UNIT_DIR ($ON_CALENDAR, CPUQuota $CPU_QUOTA)"
mkdir -p "$CONF_DIR" "$UNIT_DIR" "$ROOT$OUTPUT" "$ROOT/var/log/keras-serving"
{
    echo "# The nightly predict-files job's settings (deploy/systemd/install.sh); the server's are in ./env."
    echo "PREDICT_FILES_INPUT='$INPUT'"
    echo "PREDICT_FILES_OUTPUT='$OUTPUT'"
    echo "SERVE_BATCH_CPU_SHARE='$CPU_SHARE'"
    for setting in ${EXTRA_SETTINGS[@]+"${EXTRA_SETTINGS[@]}"}; do
        [[ "$setting" =~ ^SERVE_[A-Z_]+=[^\']*$ ]] || fail "--setting must be SERVE_NAME=VALUE without quotes: $setting"
        echo "${setting%%=*}='${setting#*=}'"
    done
} >"$CONF_DIR/predict-files.env.tmp"
chmod 0640 "$CONF_DIR/predict-files.env.tmp"
chgrp "$GROUP" "$CONF_DIR/predict-files.env.tmp"
mv "$CONF_DIR/predict-files.env.tmp" "$CONF_DIR/predict-files.env"
chown "$SERVICE_USER:$GROUP" "$ROOT$OUTPUT"
fill "$FILES/keras-serving-predict-files.service" "$UNIT_DIR/keras-serving-predict-files.service"
fill "$FILES/keras-serving-predict-files.timer" "$UNIT_DIR/keras-serving-predict-files.timer"
systemctl --root="${ROOT:-/}" enable keras-serving-predict-files.timer >/dev/null 2>&1 || fail "systemctl enable failed"
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
