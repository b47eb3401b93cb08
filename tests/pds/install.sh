#!/usr/bin/env bash
# Installs the PDS harness' Node dependencies (tests/pds/node_modules) exactly as pinned by
# package-lock.json, unless they already are. Idempotent; takes well under a second when the
# install is already in place. Exits non-zero, saying why, when it cannot install.
#
#   tests/pds/install.sh            # check, install if needed
#   tests/pds/install.sh --force    # always `npm ci`
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() {
  echo "tests/pds/install.sh: $*" >&2
  exit 1
}

force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) die "unknown argument: $1 (usage: install.sh [--force])" ;;
esac

for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH. The PDS test harness needs \
Node.js 20 (>= 18.7) with npm: install it from https://nodejs.org/ or your package manager \
(e.g. 'apt-get install nodejs npm'). The first install also compiles better-sqlite3, which \
needs python3, make and a C++ compiler (e.g. 'apt-get install python3 make g++')."
done

node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "Node.js $(node --version) is too old; the PDS needs Node.js >= 18.7 (20 recommended)."

# Is node_modules what package-lock.json pins? Checks that package.json and the lock agree,
# that every locked package is installed at its locked version (platform-specific optional
# packages may be absent), and that better-sqlite3's native addon loads in this Node.
check() {
  node --input-type=commonjs - <<'EOF'
const fs = require('fs')
const path = require('path')
const problems = []
const readJson = (p) => JSON.parse(fs.readFileSync(p, 'utf8'))
const pkg = readJson('package.json')
const lock = readJson('package-lock.json')
const want = JSON.stringify(pkg.dependencies ?? {})
const locked = JSON.stringify(lock.packages?.['']?.dependencies ?? {})
if (want !== locked) problems.push(`package.json dependencies ${want} differ from package-lock.json's ${locked}`)
for (const [key, entry] of Object.entries(lock.packages ?? {})) {
  if (!key.startsWith('node_modules/') || entry.link) continue
  let installed
  try {
    installed = readJson(path.join(key, 'package.json')).version
  } catch {
    if (!entry.optional) problems.push(`${key} is missing`)
    continue
  }
  if (installed !== entry.version) problems.push(`${key} is ${installed}, the lock says ${entry.version}`)
  if (problems.length > 5) break
}
if (problems.length === 0) {
  try {
    const Database = require(path.resolve('node_modules/better-sqlite3'))
    new Database(':memory:').close()
  } catch (err) {
    problems.push(`better-sqlite3 does not load: ${String(err.message).split('\n')[0]}`)
  }
}
if (problems.length) {
  console.error(problems.join('\n'))
  process.exit(1)
}
EOF
}

# Serialise concurrent runs on this checkout (e.g. two test processes at once).
if command -v flock >/dev/null 2>&1; then
  lock_file="${TMPDIR:-/tmp}/skywarden-pds-install-$(printf %s "$here" | cksum | cut -d' ' -f1).lock"
  exec 9>"$lock_file"
  flock 9
fi

if [ "$force" -eq 0 ] && [ -d node_modules/@atproto/dev-env ] && check 2>/dev/null; then
  exit 0
fi

if [ "$force" -eq 0 ] && [ -d node_modules ]; then
  echo "tests/pds/install.sh: node_modules does not match package-lock.json; reinstalling:" >&2
  check >&2 || true
fi
echo "tests/pds/install.sh: npm ci in $here (node $(node --version), npm $(npm --version))" >&2
start=$(date +%s)
npm ci --no-audit --no-fund >&2 || die "'npm ci' failed (see above). It needs network access to \
the npm registry, and python3, make and a C++ compiler to build better-sqlite3."
check >&2 || die "node_modules still does not match package-lock.json after 'npm ci' (see above). \
If better-sqlite3 does not load, its install script did not run or failed: it must be allowed \
(npm's ignore-scripts off) and needs python3, make and a C++ compiler."
echo "tests/pds/install.sh: installed in $(($(date +%s) - start))s" >&2
