#!/usr/bin/env bash
# Debian tools the test suite drives for real, installed once (idempotent; fails loudly):
#   chromium  - the market page test runs it headless
#   nginx, openssl - the scale-out test puts two instances of each gateway behind nginx with TLS
#   wrk       - the HTTP benchmarks
#   prometheus - its promtool checks the deploy kit's alert rules and scrape config
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: missing ${need[*]} and not root: install them with apt-get" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# keep package scripts from starting servers (there is no init system here anyway)
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
echo "test-deps: installing ${need[*]}"
if ! apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/test-deps-apt.log 2>&1; then
    apt-get update -q >>/tmp/test-deps-apt.log 2>&1 || true
    if ! apt-get install -y -q --no-install-recommends "${need[@]}" >>/tmp/test-deps-apt.log 2>&1; then
        tail -30 /tmp/test-deps-apt.log >&2
        echo "test-deps: could not install ${need[*]}" >&2
        exit 1
    fi
fi
