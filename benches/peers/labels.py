#!/usr/bin/env python3
"""Frame-in to label-out latency: `skywarden serve` (the default ruleset plus one rule that
labels every reply, so labels flow steadily; SQLite; the labeler on)
consuming the simulator's firehose over loopback at a fixed rate, with a subscriber on its
`subscribeLabels` measuring when each record label arrives against when the frame that
caused it left the simulator.

The simulator pre-generates the frames (`simulate --pregenerate`) and releases each at its own
timestamp from the first subscriber on, so the rate is not bounded by the generator; the
subscriber is `tests/pds/label-latency.mjs` (@atproto/xrpc-server's Subscription). Printed:
the event rate actually served and consumed, labels/s, p50/p90/p99/max latency, serve's CPU.

    cargo build --release -p skywarden
    python3 benches/peers/labels.py [--rate 10000] [--seconds 20]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from harness import BIN, ROOT, cpu_seconds, free_port, metrics, wait_port


BENCH_RULE = """
[[rule]]
name = "bench-label-replies"
description = "Labels every reply: a steady stream of record labels to time."
on = ["create:post"]
when = "record.post.is_reply"

[[rule.action]]
label = "reply"
"""


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=10000, help="simulated events per second")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--accounts", type=int, default=5000)
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(ROOT, "tests/pds/install.sh")], check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="skywarden-labels-bench-")
    rules = os.path.join(work, "rules")
    shutil.copytree(os.path.join(ROOT, "rules"), rules)
    with open(os.path.join(rules, "bench-label-replies.toml"), "w") as f:
        f.write(BENCH_RULE)
    sim_port, http_port = free_port(), free_port()
    events = args.rate * (args.seconds + 5)
    sim_log = open(os.path.join(work, "sim.log"), "w+")
    sim = subprocess.Popen(
        [BIN, "simulate", "--listen", f"127.0.0.1:{sim_port}", "--rate", str(args.rate), "--pregenerate",
         "--events", str(events), "--accounts", str(args.accounts)],
        stderr=sim_log,
    )
    serve = None
    try:
        print(f"pre-generating {events} frames…", file=sys.stderr)
        wait_port(sim_port, 600)
        serve = subprocess.Popen(
            [BIN, "serve", "--relay", f"ws://127.0.0.1:{sim_port}", "--plc", f"http://127.0.0.1:{sim_port}",
             "--cursor", "0", "--rules", rules, "--listen", f"127.0.0.1:{http_port}", "--data-dir", os.path.join(work, "data"),
             "--log-format", "text"],
            stderr=open(os.path.join(work, "serve.log"), "w"),
        )
        offset = None
        deadline = time.time() + 60
        while offset is None and time.time() < deadline:
            sim_log.seek(0)
            m = re.search(r"offset_micros=(-?\d+)", sim_log.read())
            offset = int(m.group(1)) if m else None
            time.sleep(0.05)
        if offset is None:
            sys.exit("the simulator did not start releasing")
        wait_port(http_port, 60)
        cpu0, t0 = cpu_seconds(serve.pid), time.time()
        m0 = metrics(http_port)
        out = subprocess.run(
            ["node", "label-latency.mjs", "--service", f"http://127.0.0.1:{http_port}", "--offset", str(offset),
             "--seconds", str(args.seconds)],
            cwd=os.path.join(ROOT, "tests/pds"), capture_output=True, text=True, check=True,
        )
        cpu1, t1 = cpu_seconds(serve.pid), time.time()
        m1 = metrics(http_port)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        consumed = (metric(m1, "skywarden_events_total") - metric(m0, "skywarden_events_total")) / (t1 - t0)
        lag = metric(m1, "skywarden_lag_events")
        print(f"rate set: {args.rate} simulated events/s; consumed by serve: {consumed:.0f} frames/s; lag at end: {lag:.0f} events")
        print(f"serve CPU: {(cpu1 - cpu0) / (t1 - t0):.2f} cores")
        print(f"labels: {result['labels']} ({result['labels_per_s']}/s), {result['timed']} timed (record labels)")
        print(f"frame-in to label-out: p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
    finally:
        for p in (serve, sim):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
