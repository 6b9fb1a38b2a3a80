#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the stack and its tests need, when missing: nginx, prometheus
# (its server and promtool: tests/test_metrics.py scrapes the stack with them) and slowhttptest
# (tests/faults/ holds slow-client attacks against the stack), chromium and a font (tests/browser/),
# redis-server (the job queue: make serve-async, tests/queue/).
set -o errexit -o nounset -o pipefail

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v slowhttptest >/dev/null 2>&1 || need+=(slowhttptest)
# tests/browser/ drives Debian's chromium with Playwright (never a browser download); DejaVu gives its
# screenshots readable text on a machine with no fonts.
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || browser+=(fonts-dejavu-core)
# The job queue's broker: `make serve-async` runs it locally, tests/queue/ against the real server.
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]} ${browser[*]} from the distribution's packages"
$sudo apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# chromium with its recommended packages: the set its headless runs were proven with here.
if [ ${#browser[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${browser[@]}"
fi
