// Decodes a file of [u32le length][frame] firehose frames with the TypeScript stack
// @atproto/sync's Firehose uses for every message: @atproto/xrpc-server's Frame (header and
// body), then for commits @atproto/sync's parseCommitUnauthenticated (readCar with CID checks,
// every record decoded to a lex value). Prints frames/s on one core, best of PASSES.
//
//   node tests/pds/decode-bench.mjs frames.bin [passes]

import { Frame } from '@atproto/xrpc-server'
import { parseCommitUnauthenticated } from '@atproto/sync'
import { readFileSync } from 'node:fs'

const [path, passesArg] = process.argv.slice(2)
const passes = Number(passesArg ?? '5')
const data = readFileSync(path)
const frames = []
for (let at = 0; at + 4 <= data.length; ) {
  const n = data.readUInt32LE(at)
  frames.push(new Uint8Array(data.buffer, data.byteOffset + at + 4, n))
  at += 4 + n
}

let best = Infinity
let records = 0
for (let p = 0; p < passes; p++) {
  const start = process.hrtime.bigint()
  records = 0
  for (const raw of frames) {
    const frame = Frame.fromBytes(raw)
    if (frame.header.t === '#commit') {
      const evts = await parseCommitUnauthenticated(frame.body)
      records += evts.filter((e) => e.record).length
    }
  }
  best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9)
}
console.log(JSON.stringify({ decoder: '@atproto/sync', frames: frames.length, records, frames_per_s: Math.round(frames.length / best) }))
