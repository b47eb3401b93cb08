#!/usr/bin/env python3
"""What each file of a ruleset costs: `serve --archive` replays of one simulated recording
with the whole ruleset, with each file left out in turn, and with a single rule that never
fires (the floor: decoding, the stream guard, dispatch, account state and the effect log,
without the rules' work). A file's cost is the CPU the whole ruleset takes minus the CPU
without it: its rules, its counters and the text features only it reads.

A file that another file needs (a counter or list it declares is read elsewhere) cannot be
left out alone; it is reported as such and measured only as part of the whole.

The replays read a zstd-compressed archive, so every configuration pays for decompression too,
and each ends with a checkpoint (the counters' snapshot): both are in the floor, or in the cost
of the file whose counters are written. Configurations alternate round by round and the medians
are printed: on a noisy machine only alternations resolve a few per cent.

    cargo build --release -p skywarden
    python3 benches/peers/rule_cost.py [--events 300000] [--accounts 10000] [--rules DIR]
        [--rounds 3] [--no-abuse]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from harness import BIN, ROOT

NEVER = """[[rule]]
name = "never"
description = "A rule that never fires: the floor without the rules' work."
on = ["post"]
when = "false"

[[rule.action]]
tag = ["never"]
"""


def replay(archive, rules, scratch):
    """CPU seconds (user + system) of one `serve --archive` replay from cursor 0."""
    data = tempfile.mkdtemp(dir=scratch)
    command = [BIN, "serve", "--archive", archive, "--cursor", "0", "--data-dir", data,
               "--listen", "127.0.0.1:0", "--partitions", "1", "--labeler", "true",
               "--checkpoint-interval-ms", "100000000"] + (["--rules", rules] if rules else [])
    log_path = os.path.join(data, "serve.log")
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log_path, "rb") as log:
            sys.exit(f"serve failed ({' '.join(command)}):\n{log.read().decode()[-2000:]}")
    shutil.rmtree(data, ignore_errors=True)
    return usage


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300000)
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--rules", default=os.path.join(ROOT, "rules"),
                        help="the ruleset to cost (default: the repository's, the built-in one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-abuse", action="store_true", help="ordinary traffic only")
    args = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: cargo build --release -p skywarden")

    scratch = tempfile.mkdtemp(prefix="skywarden-rule-cost-")
    try:
        archive = os.path.join(scratch, "sim.skwa")
        subprocess.run([BIN, "simulate", "--seed", "7", "--accounts", str(args.accounts),
                        "--events", str(args.events), "--start", "2026-01-01T00:00:00Z",
                        "--out", archive] + (["--no-abuse"] if args.no_abuse else []),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        configs = {"whole ruleset": args.rules}
        floor = os.path.join(scratch, "floor")
        os.mkdir(floor)
        with open(os.path.join(floor, "never.toml"), "w") as f:
            f.write(NEVER)
        configs["floor (one rule that never fires)"] = floor
        needed = []
        for name in sorted(os.listdir(args.rules)):
            if not name.endswith(".toml"):
                continue
            without = os.path.join(scratch, "without-" + name[:-5])
            shutil.copytree(args.rules, without)
            os.remove(os.path.join(without, name))
            check = subprocess.run([BIN, "rules", "check", without], capture_output=True, text=True)
            if check.returncode != 0:
                needed.append(name)
                continue
            configs["without " + name] = without

        cpu = {label: [] for label in configs}
        for round_ in range(args.rounds):
            for label, rules in configs.items():
                usage = replay(archive, rules, scratch)
                cpu[label].append(usage.ru_utime + usage.ru_stime)
            print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)

        whole = statistics.median(cpu["whole ruleset"])
        per_event = 1e6 / args.events
        print(f"{args.events} simulated frames from {args.accounts} accounts"
              f"{' (ordinary traffic only)' if args.no_abuse else ''}, ruleset {args.rules}, "
              f"{args.rounds} alternated rounds, medians of `serve --archive` CPU (user + system)")
        print(f"{'configuration':44} {'CPU s':>7} {'µs/event':>9} {'cost s':>7} {'share':>6}")
        for label, runs in cpu.items():
            median = statistics.median(runs)
            if label == "whole ruleset":
                cost, share = "", ""
            else:
                delta = whole - median
                cost, share = f"{delta:7.3f}", f"{100 * delta / whole:5.1f}%"
            print(f"{label:44} {median:7.3f} {median * per_event:9.2f} {cost:>7} {share:>6}"
                  f"   runs {', '.join(f'{r:.3f}' for r in runs)}")
        if needed:
            print("needed by other files, not left out alone: " + ", ".join(needed))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
