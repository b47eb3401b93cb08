#!/usr/bin/env bash
# Decode throughput of skywarden against the network's own decoders, on the same frames in the
# same run: @atproto/sync (Node, the stack its Firehose uses) and python `atproto` (PyPI).
# Installs the peers at pinned versions (tests/pds/install.sh for Node; a venv under
# target/peers for Python), exports the bundled recording of a real PDS (3,443 frames) to a
# plain [u32le length][frame] file, runs each decoder on one core (best of several passes),
# and prints frames/s and the ratios.
#
#   benches/peers/decode.sh [FRAMES_ARCHIVE]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
archive="${1:-testdata/firehose/pds-recording.skwa}"
python_atproto="atproto==0.0.65"
work="$root/target/peers"
mkdir -p "$work"

bash tests/pds/install.sh
if [ ! -x "$work/venv/bin/python" ] || ! "$work/venv/bin/pip" show atproto 2>/dev/null | grep -q "Version: ${python_atproto#atproto==}"; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet "$python_atproto"
fi
cargo build --quiet --release -p skywarden-ingest --example decode_frames
bin="$root/target/release/examples/decode_frames"
"$bin" --export "$archive" "$work/frames.bin" 2>/dev/null

echo "machine: $(nproc) cores, $(uname -m); node $(node --version); $("$work/venv/bin/python" --version); $python_atproto"
ours=$(taskset -c 0 "$bin" "$work/frames.bin" 20)
node=$(cd tests/pds && taskset -c 0 node decode-bench.mjs "$work/frames.bin" 5)
py=$(taskset -c 0 "$work/venv/bin/python" benches/peers/decode.py "$work/frames.bin" 3)
echo "$ours"
echo "$node"
echo "$py"
python3 - "$ours" "$node" "$py" <<'PY'
import json, sys
ours, node, py = (json.loads(a) for a in sys.argv[1:])
assert ours["records"] == node["records"] == py["records"], "the decoders disagree on the records"
for peer in (node, py):
    print(f"skywarden / {peer['decoder']}: {ours['frames_per_s'] / peer['frames_per_s']:.1f}x "
          f"({ours['frames_per_s']} vs {peer['frames_per_s']} frames/s, {ours['records']} records each)")
PY
