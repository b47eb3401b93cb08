#!/usr/bin/env bash
# The moderation API of skywarden against the real Ozone (@atproto/ozone, as @atproto/dev-env
# 0.3.215 runs it), on the same Postgres server, loaded and queried by the same client
# (benches/peers/moderation.mjs: node:http, keep-alive, admin Basic auth):
#
#   1. emitEvent throughput with 1 caller, then with 8 concurrent callers (a subject's events
#      stay in order and are never in flight together);
#   2. queryStatuses / queryEvents latency, p50 and p99 of 200 sequential requests after 20 of
#      warm-up, for the common queue views (open by lastReportedAt desc, escalated, taken down,
#      appealed, tag `spam-wave`, a cursor 10 pages deep, one subject, one subject's events,
#      the latest events);
#   3. a table with both and the ratios; the merged results as JSON on the last line of stdout
#      (and in FILE with --json FILE).
#
# The two systems run one after the other, never together (2-core machines), each on a
# database dropped and created afresh: `skywarden_bench` and `ozone_bench` on
# postgres://postgres@127.0.0.1:5432 (trust auth; override with PGHOST/PGPORT/PGUSER).
#
# skywarden: `skywarden serve` with --postgres-url, fed by `skywarden simulate` as its relay (a
# small steady firehose, --no-abuse, so the engine files nothing in the queue), no --plc (no
# identity resolution: views carry no handles, like Ozone's queryStatuses).
#
# Ozone: dev-env's TestNetwork (PLC, PDS, AppView, Ozone server and daemon in one Node
# process, every server bound to 127.0.0.1; schemas ozone_bench and appview_bench). Redis is
# not used by any of them (TestNetwork only asserts that REDIS_HOST is set). Ozone accepts
# events on any DID, but for each event on an account its AppView does not know it asks the
# AppView for the account's posts again (to tag languages) and fails: the subjects are
# therefore registered as AppView actors with no posts before the load, which is what the
# AppView holds for real accounts. Ozone then calls the AppView once per new subject (it
# tags it `lang:und`), and adds `report:spam` to reported subjects, as it does in production.
#
# Workload (identical for both, from a fixed seed): by default 4,000 account subjects and
# 20,000 events (the first 4,000 with 1 caller, the other 16,000 with 8), scaled down from
# 10,000 / 50,000 because Ozone loads ~100-200 events/s here and the suite must stay within
# ~15 minutes. Mix: report 40 % (#reasonSpam; some are appeals of taken-down subjects),
# acknowledge 12, escalate 10, comment 13, tag 14 (`spam-wave` on 30 % of them), label 8
# (`spam`), takedown 3. See moderation.mjs. The queue sizes of both are printed too: they agree
# when both systems applied the workload the same way.
#
#   benches/peers/moderation.sh [--subjects N] [--events N] [--serial N] [--callers N]
#                               [--requests N] [--json FILE]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

subjects=4000
events=20000
serial=4000
callers=8
requests=200
json_out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --subjects) subjects="$2"; shift 2 ;;
    --events) events="$2"; shift 2 ;;
    --serial) serial="$2"; shift 2 ;;
    --callers) callers="$2"; shift 2 ;;
    --requests) requests="$2"; shift 2 ;;
    --json) json_out="$2"; shift 2 ;;
    *) echo "usage: $0 [--subjects N] [--events N] [--serial N] [--callers N] [--requests N] [--json FILE]" >&2; exit 2 ;;
  esac
done

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
pg="postgres://$PGUSER@$PGHOST:$PGPORT"
admin_password="bench-admin-password"
bench="$root/benches/peers/moderation.mjs"
work="$root/target/peers/moderation"
bin="$root/target/release/skywarden"
seed=7
client_timeout=1200

die() {
  echo "moderation.sh: $*" >&2
  exit 1
}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do stop "$pid"; done
}
# Stops a process started here: SIGTERM, then SIGKILL after 20 s.
stop() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

fresh_db() {
  dropdb --if-exists --force "$1" 2>/dev/null || dropdb --if-exists "$1"
  createdb "$1"
}

# Prints the last lines of a log, for a failure.
show_log() {
  echo "--- last lines of $1:" >&2
  tail -n 30 "$1" >&2 || true
}

for tool in node python3 psql createdb dropdb curl cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH"
done
psql -d postgres -tAc 'select 1' >/dev/null 2>&1 ||
  die "cannot connect to Postgres at $pg (user $PGUSER, trust auth expected)"

bash tests/pds/install.sh
cargo build --quiet --release -p skywarden
mkdir -p "$work"
rm -f "$work"/*.json "$work"/*.log "$work/ozone.ready"

ozone_version="$(node -p "require('./tests/pds/node_modules/@atproto/ozone/package.json').version")"
devenv_version="$(node -p "require('./tests/pds/node_modules/@atproto/dev-env/package.json').version")"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit (with uncommitted changes)"; fi
pg_version="$(psql -d postgres -tAc 'show server_version')"
echo "machine: $(nproc) cores, $(uname -m); node $(node --version); Postgres $pg_version; skywarden $commit; @atproto/ozone $ozone_version (dev-env $devenv_version)" >&2
echo "workload: $subjects subjects, $events events ($serial with 1 caller, the rest with $callers); $requests requests per view" >&2

run_client() {
  local system="$1" url="$2" password="$3"
  timeout "$client_timeout" node "$bench" run --system "$system" --service "$url" --password "$password" \
    --out "$work/$system.json" --subjects "$subjects" --events "$events" --serial "$serial" \
    --callers "$callers" --requests "$requests" --seed "$seed" ||
    die "the $system run failed or took over ${client_timeout}s (server log: $work/$system.log)"
}

# --- skywarden -----------------------------------------------------------------------------
fresh_db skywarden_bench
rm -rf "$work/skywarden-data"
mkdir -p "$work/skywarden-data"
relay_port="$(free_port)"
"$bin" simulate --listen "127.0.0.1:$relay_port" --accounts 20 --rate 10 --no-abuse >"$work/simulate.log" 2>&1 &
sim_pid=$!
pids+=("$sim_pid")
for _ in $(seq 1 50); do
  (echo >"/dev/tcp/127.0.0.1/$relay_port") 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || { show_log "$work/simulate.log"; die "skywarden simulate exited"; }
  sleep 0.2
done
sw_port="$(free_port)"
SKYWARDEN_ADMIN_PASSWORD="$admin_password" "$bin" serve --relay "ws://127.0.0.1:$relay_port" \
  --listen "127.0.0.1:$sw_port" --data-dir "$work/skywarden-data" \
  --postgres-url "$pg/skywarden_bench" --labeler-did did:plc:skywardenbench0000000000 \
  --log-format text >"$work/skywarden.log" 2>&1 &
sw_pid=$!
pids+=("$sw_pid")
up=0
for _ in $(seq 1 300); do
  if curl -fs -o /dev/null "http://127.0.0.1:$sw_port/xrpc/_health"; then up=1; break; fi
  kill -0 "$sw_pid" 2>/dev/null || break
  sleep 0.2
done
[ "$up" = 1 ] || { show_log "$work/skywarden.log"; die "skywarden serve did not come up on 127.0.0.1:$sw_port within 60 s"; }
echo "skywarden serving on 127.0.0.1:$sw_port" >&2
run_client skywarden "http://127.0.0.1:$sw_port" "$admin_password"
stop "$sw_pid"
stop "$sim_pid"

# --- Ozone ---------------------------------------------------------------------------------
fresh_db ozone_bench
node "$bench" ozone-host --db "$pg/ozone_bench" --ready "$work/ozone.ready" \
  --subjects "$subjects" --seed "$seed" >"$work/ozone.log" 2>&1 &
oz_pid=$!
pids+=("$oz_pid")
for _ in $(seq 1 900); do
  [ -f "$work/ozone.ready" ] && break
  kill -0 "$oz_pid" 2>/dev/null || { show_log "$work/ozone.log"; die "the Ozone network exited while starting"; }
  sleep 0.2
done
[ -f "$work/ozone.ready" ] || { show_log "$work/ozone.log"; die "Ozone did not come up within 180 s"; }
oz_url="$(node -p "JSON.parse(require('fs').readFileSync('$work/ozone.ready', 'utf8')).url")"
oz_password="$(node -p "JSON.parse(require('fs').readFileSync('$work/ozone.ready', 'utf8')).password")"
echo "Ozone serving on $oz_url" >&2
run_client ozone "$oz_url" "$oz_password"
stop "$oz_pid"

# --- the table -----------------------------------------------------------------------------
meta="$(node -e 'console.log(JSON.stringify({machine: {cores: Number(process.argv[1]), arch: process.argv[2], node: process.version, postgres: process.argv[3]}, skywarden_commit: process.argv[4], ozone_version: process.argv[5], dev_env_version: process.argv[6]}))' \
  "$(nproc)" "$(uname -m)" "$pg_version" "$commit" "$ozone_version" "$devenv_version")"
BENCH_META="$meta" node "$bench" report "$work/skywarden.json" "$work/ozone.json" ${json_out:+--json "$json_out"}
