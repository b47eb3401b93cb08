#!/usr/bin/env python3
"""End-to-end pipeline benchmark: `skywarden serve` consuming the simulator's firehose over a
real WebSocket on loopback, with the default ruleset and the SQLite effect log.

The simulator pre-generates EVENTS signed frames (`simulate --rate 0`, simulated time from
2026-01-01T00:00:00Z: the same frames as `simulate --out`) and serves them as fast as `serve`
reads. For each partition count, a fresh `serve --relay ws://… --cursor 0` runs until
every event is evaluated and its effects are durable (`skywarden_lag_events` back to 0), and then
until the sinks have carried out every logged effect (the label sink's and the moderation
queue's cursors at the last effect). Printed per run, at both points: events/s end to end and
events per CPU-second of `serve` (user + system); p50/p99 of dispatch-to-durable latency (from
`skywarden_event_latency_seconds`) and peak RSS (VmHWM). With --profile, `perf record` samples
`serve` during the 1-partition run and the top symbols and heaviest skywarden call paths are
printed; every run prints CPU time by thread.

    cargo build --release -p skywarden
    python3 benches/peers/pipeline.py [--events 100000] [--accounts 10000] [--profile]
        [--no-abuse] [--rules DIR] [--partitions 1 2] [--repeat N] [--compare OTHER_BIN]

With --repeat and --compare (another build), every configuration runs N times, the builds
alternating run by run against the same simulator, and the medians are printed at the end: on a
noisy machine only such alternations resolve a change of a few per cent.

With --calibrate (after `bash benches/peers/decode.sh` has installed the peers and exported the
recorded frames), the two peer decoders run on one core between the pipeline runs, and the
medians are also printed scaled to the reference speeds the targets in BENCHMARKS.md are stated
at (@atproto/sync 8.5 k and python `atproto` 27 k frames/s on frames from a real PDS): this VM's speed moves by up to 2x
from day to day, so a target in events per CPU-second is only comparable at a known speed.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import time

from harness import BIN, ROOT, cpu_seconds, free_port, metrics, wait_port

# The reference speeds of the peer decoders on frames recorded from a real PDS.
REFERENCE_FRAMES_PER_S = {"@atproto/sync": 8_500, "python atproto": 27_000}


def value(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def quantile(text, q):
    buckets = [(float(le), float(n)) for le, n in re.findall(
        r'^skywarden_event_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M) if le != "+Inf"]
    total = value(text, "skywarden_event_latency_seconds_count") or 0
    for le, n in buckets:
        if total and n >= q * total:
            return le
    return None


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def thread_cpu(pid):
    """CPU seconds per thread name (tokio workers, SQLite connection threads, the main thread
    that polls the source), summed over threads of the same name."""
    by_name = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        by_name[name] = by_name.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return sorted(by_name.items(), key=lambda kv: -kv[1])


def calibrate():
    """Frames/s of each peer decoder on one core, on the frames `decode.sh` exported."""
    frames = os.path.join(ROOT, "target", "peers", "frames.bin")
    python = os.path.join(ROOT, "target", "peers", "venv", "bin", "python")
    if not (os.path.exists(frames) and os.path.exists(python)):
        sys.exit("--calibrate needs the peers: run `bash benches/peers/decode.sh` once first")
    node = subprocess.run(["taskset", "-c", "0", "node", "decode-bench.mjs", frames, "3"],
                          cwd=os.path.join(ROOT, "tests", "pds"), capture_output=True, text=True, check=True)
    py = subprocess.run(["taskset", "-c", "0", python, os.path.join(ROOT, "benches", "peers", "decode.py"), frames, "3"],
                        capture_output=True, text=True, check=True)
    speeds = {}
    for out in (node.stdout, py.stdout):
        r = json.loads(out.strip().splitlines()[-1])
        speeds[r["decoder"]] = r["frames_per_s"]
    print("  calibration: " + ", ".join(
        f"{name} {fps:,.0f} frames/s ({fps / REFERENCE_FRAMES_PER_S[name]:.2f}x reference)"
        for name, fps in speeds.items()))
    return speeds


def run(binary, relay_port, events, partitions, profile, rules, frequency):
    data = tempfile.mkdtemp(prefix="skywarden-pipeline-")
    http = free_port()
    serve = subprocess.Popen(
        [binary, "serve", "--relay", f"ws://127.0.0.1:{relay_port}", "--cursor", "0",
         "--data-dir", data, "--listen", f"127.0.0.1:{http}", "--partitions", str(partitions),
         "--labeler", "true"] + (["--rules", rules] if rules else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    perf = None
    if profile:
        perf_data = os.path.join(data, "perf.data")
        # DWARF unwinding: the release build has no frame pointers.
        perf = subprocess.Popen(["perf", "record", "-F", str(frequency), "--call-graph", "dwarf,8192", "-o", perf_data,
                                 "-p", str(serve.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    text = ""
    seen = 0
    while True:
        # Each scrape costs `serve` some CPU: polled slowly at first, then often enough near the
        # end that a run of a second or two is timed to a few per cent.
        time.sleep(0.01 if seen >= 0.9 * events else 0.2)
        text = metrics(http)
        seen = sum(float(n) for n in re.findall(r"^skywarden_events_total\{[^}]*\} (\S+)$", text, re.M))
        # End to end: every event received and its effects durable.
        if seen >= events and value(text, "skywarden_lag_events") == 0:
            break
        cursor = seen
        if time.time() - start > 600 or serve.poll() is not None:
            serve.kill()
            sys.exit(f"serve did not reach {events} (at {cursor})")
    elapsed = time.time() - start
    cpu = cpu_seconds(serve.pid)
    # Then until the sinks have carried out every logged effect: the label sink and the
    # moderation queue (the engine sink) read the effect log behind the engine.
    db = sqlite3.connect(f"file:{os.path.join(data, 'skywarden.db')}?mode=ro", uri=True, timeout=10)
    while True:
        (last_effect,) = db.execute("SELECT coalesce(max(id), 0) FROM effects").fetchone()
        cursors = dict(db.execute("SELECT sink, last_id FROM sink_cursors").fetchall())
        if all(cursors.get(sink, 0) >= last_effect for sink in ("labels", "moderation")):
            break
        if time.time() - start > 900:
            sys.exit(f"the sinks did not catch up: {cursors}, last effect {last_effect}")
        time.sleep(0.2)
    db.close()
    queue = sqlite3.connect(f"file:{os.path.join(data, 'moderation.db')}?mode=ro", uri=True, timeout=10)
    (filed,) = queue.execute("SELECT count(*) FROM mod_events").fetchone()
    queue.close()
    drained = time.time() - start
    drained_cpu = cpu_seconds(serve.pid)
    rss = peak_rss_mb(serve.pid)
    threads = thread_cpu(serve.pid)
    if perf:
        perf.send_signal(2)
        perf.wait()
    serve.terminate()
    serve.wait()
    counted = sum(float(n) for n in re.findall(r"^skywarden_events_total\{[^}]*\} (\S+)$", text, re.M))
    print(f"partitions {partitions}: {counted:.0f} events in {elapsed:.1f} s = {counted / elapsed:,.0f} events/s, "
          f"{counted / cpu:,.0f} events per CPU-second, latency p50 <= {quantile(text, 0.5)} s, "
          f"p99 <= {quantile(text, 0.99)} s")
    print(f"  with the sinks caught up ({last_effect} effects logged, {filed} moderation events filed): "
          f"{drained:.1f} s = {counted / drained:,.0f} events/s, {counted / drained_cpu:,.0f} events per CPU-second, "
          f"peak RSS {rss:.0f} MB")
    print("  CPU by thread: " + ", ".join(f"{name} {t:.2f} s" for name, t in threads))
    result = {"events_per_s": counted / drained, "per_cpu_s": counted / drained_cpu, "rss_mb": rss}
    if perf:
        report = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--percent-limit", "2",
                                 "--stdio", "--sort", "symbol"], capture_output=True, text=True).stdout
        print("top symbols (perf, 1-partition run):")
        for line in report.splitlines():
            if re.match(r"^\s+\d+\.\d+%", line):
                print("  " + " ".join(line.split()))
        callers = subprocess.run(["perf", "report", "-i", perf_data, "--children", "--percent-limit", "4",
                                  "--stdio", "--sort", "symbol", "-g", "none"], capture_output=True, text=True).stdout
        print("heaviest call paths, self + children (perf):")
        for line in callers.splitlines():
            if (re.match(r"^\s+\d+\.\d+%", line) and "inlined" not in line
                    and re.search(r"skywarden_\w+::\w+|sqlite3_step|tungstenite", line)):
                print("  " + " ".join(line.split()[:2] + line.split()[3:])[:160])
    shutil.rmtree(data, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-frequency", type=int, default=200,
                    help="perf samples per second with --profile")
    ap.add_argument("--no-abuse", action="store_true",
                    help="ordinary traffic only: the simulator injects no abuse scenarios")
    ap.add_argument("--rules", help="a rules directory instead of the default ruleset")
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every configuration this many times and print the medians")
    ap.add_argument("--compare", metavar="BIN",
                    help="another build of skywarden, run alternately with the first on the same simulator")
    ap.add_argument("--calibrate", action="store_true",
                    help="run the peer decoders between runs and print the medians at reference speed")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p skywarden")
    builds = [BIN] + ([args.compare] if args.compare else [])
    relay = free_port()
    t0 = time.time()
    # A fixed simulated start (the archive default): with `now`, a run that straddles an hour
    # boundary splits the rules' hourly windows and fires differently from the next run.
    sim = subprocess.Popen([BIN, "simulate", "--seed", "7", "--accounts", str(args.accounts),
                            "--events", str(args.events), "--rate", "0", "--start", "2026-01-01T00:00:00Z",
                            "--listen", f"127.0.0.1:{relay}"] + (["--no-abuse"] if args.no_abuse else []),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(relay, 900)
        print(f"simulator: {args.events} frames from {args.accounts} accounts generated in {time.time() - t0:.0f} s; "
              f"{os.cpu_count()} cores")
        results = {}
        calibrations = []
        for repetition in range(args.repeat):
            if args.calibrate:
                calibrations.append(calibrate())
            for partitions in args.partitions:
                # Builds alternate run by run, so both see the same moments of a noisy machine.
                for binary in builds:
                    if len(builds) > 1 or args.repeat > 1:
                        print(f"{binary} (run {repetition + 1} of {args.repeat})")
                    profile = args.profile and repetition == 0 and partitions == args.partitions[0]
                    r = run(binary, relay, args.events, partitions, profile, args.rules, args.profile_frequency)
                    results.setdefault((binary, partitions), []).append(r)
        if args.calibrate:
            calibrations.append(calibrate())
        if len(builds) > 1 or args.repeat > 1 or args.calibrate:
            print("medians, sinks caught up:")
            for (binary, partitions), runs in results.items():
                per_cpu = sorted(r["per_cpu_s"] for r in runs)
                print(f"  {binary}, partitions {partitions}: "
                      f"{statistics.median(r['events_per_s'] for r in runs):,.0f} events/s, "
                      f"{statistics.median(per_cpu):,.0f} events per CPU-second "
                      f"(runs: {', '.join(f'{v:,.0f}' for v in per_cpu)})")
                if calibrations:
                    # Scaled by each peer's median speed over the calibrations around the runs.
                    scaled = [
                        f"{statistics.median(per_cpu) * REFERENCE_FRAMES_PER_S[name] / statistics.median(c[name] for c in calibrations):,.0f} by {name}"
                        for name in REFERENCE_FRAMES_PER_S
                    ]
                    print(f"    at the reference speed: {', '.join(scaled)} events per CPU-second")
    finally:
        sim.kill()


if __name__ == "__main__":
    main()
