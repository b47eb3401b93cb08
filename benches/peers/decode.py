"""Decodes a file of [u32le length][frame] firehose frames with python `atproto` (the
MarshalX SDK: its own frame parsing, libipld for DAG-CBOR and CAR), the way its firehose client
does for every message: frame → message → for commits, the CAR and every record. Prints frames/s
on one core, best of PASSES."""

import json
import struct
import sys
import time

from atproto import CAR, firehose_models, parse_subscribe_repos_message, models

path = sys.argv[1]
passes = int(sys.argv[2]) if len(sys.argv) > 2 else 5
data = open(path, "rb").read()
frames = []
at = 0
while at + 4 <= len(data):
    (n,) = struct.unpack_from("<I", data, at)
    frames.append(data[at + 4 : at + 4 + n])
    at += 4 + n

best = float("inf")
records = 0
for _ in range(passes):
    start = time.perf_counter()
    records = 0
    for raw in frames:
        frame = firehose_models.Frame.from_bytes(raw)
        msg = parse_subscribe_repos_message(frame)
        if isinstance(msg, models.ComAtprotoSyncSubscribeRepos.Commit) and msg.blocks:
            car = CAR.from_bytes(msg.blocks)
            for op in msg.ops:
                if op.cid is not None and car.blocks.get(op.cid) is not None:
                    records += 1
    best = min(best, time.perf_counter() - start)

print(json.dumps({"decoder": "python atproto", "frames": len(frames), "records": records,
                  "frames_per_s": round(len(frames) / best)}))
