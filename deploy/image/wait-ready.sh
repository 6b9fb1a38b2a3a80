#!/usr/bin/env bash
# Wait until URL answers 200 (the readiness check: the model is loaded and warm), at most SECONDS.
# Used by the instances' boot script before they cfn-signal, and by the tests.
set -o errexit -o nounset -o pipefail

usage() { echo "Usage: wait-ready.sh URL SECONDS   (exit 0 once URL answers 200; 1 when SECONDS have passed)"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if [ $# -ne 2 ]; then usage >&2; exit 2; fi

url="$1"
deadline=$((SECONDS + $2))
status=""
while [ "$SECONDS" -lt "$deadline" ]; do
    status="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)"
    if [ "$status" = "200" ]; then
        echo "ready: $url answered 200 after ${SECONDS}s"
        exit 0
    fi
    sleep 2
done
echo "not ready: $url last answered '${status:-nothing}' after ${2}s" >&2
exit 1
