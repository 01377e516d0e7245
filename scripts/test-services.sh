#!/usr/bin/env bash
# Find, or start where this machine can, what the service and browser suites need:
# PostgreSQL and Redis on 127.0.0.1, and Debian's chromium. Never fails: a suite whose service is
# missing is skipped locally (and listed loudly at the end of the run) and fails under CI=1.
set -uo pipefail

if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null \
      || echo "test-services: could not start PostgreSQL (pg_ctlcluster failed)" >&2
  fi
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null \
      || echo "test-services: could not start Redis" >&2
  fi
fi
# Browser tests drive Debian's chromium; Playwright never downloads a browser. Installing it needs
# root and apt: CI does it (.ci/run sets ROBAUDIT_INSTALL_CHROMIUM=1); elsewhere, install it yourself.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "${ROBAUDIT_INSTALL_CHROMIUM:-0}" = 1 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "test-services: /usr/bin/chromium not found; the browser suite will be skipped (apt-get install chromium chromium-driver)" >&2
  fi
fi
exit 0
