#!/usr/bin/env bash
# Makes sure the local PostgreSQL the tests use answers on 127.0.0.1:5432; starts the
# machine's cluster if it is installed and stopped. Idempotent: returns at once when Postgres
# is up. Exits non-zero, saying why, when it cannot be reached or started.
set -euo pipefail

ready() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p 5432
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

ready && exit 0
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  echo "tests/services/postgres.sh: starting PostgreSQL $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  for _ in $(seq 1 50); do
    ready && exit 0
    sleep 0.2
  done
fi
echo "tests/services/postgres.sh: no PostgreSQL on 127.0.0.1:5432, and none could be started here. \
Install and start one (Debian: apt-get install postgresql), or point SKYWARDEN_TEST_POSTGRES at a \
server the tests may create schemas in." >&2
exit 1
