// Frame-in to label-out latency on subscribeLabels, measured with the network's own
// subscription client (@atproto/xrpc-server's Subscription). A record's key is a TID of its
// creation time in the simulated network, and the simulator releases each frame at that time
// plus a fixed offset (printed by `skywarden simulate --pregenerate`): so a label on a record
// went out as a frame at tid_time(rkey) + offset, and its latency is arrival minus that.
// Labels on accounts (no TID) are counted, not timed.
//
//   node label-latency.mjs --service http://127.0.0.1:PORT --offset MICROS --seconds N [--warmup S]
//     # prints one JSON line: labels, timed, p50/p90/p99/max latency in ms, labels/s
import { Subscription } from '@atproto/xrpc-server'

function arg(name, fallback) {
  const i = process.argv.indexOf(name)
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

const service = arg('--service')
const offset = Number(arg('--offset'))
const seconds = Number(arg('--seconds', '20'))
const warmup = Number(arg('--warmup', '2'))
if (!service || !Number.isFinite(offset)) {
  console.error('usage: node label-latency.mjs --service URL --offset MICROS [--seconds N] [--warmup S]')
  process.exit(64)
}

const B32 = '234567abcdefghijklmnopqrstuvwxyz'
// The microseconds of a TID (13 base32-sortable characters: 53 bits of µs, 10 of clock id).
function tidMicros(tid) {
  if (!/^[2-7a-j][2-7a-z]{12}$/.test(tid)) return null
  let v = 0n
  for (const c of tid) v = (v << 5n) | BigInt(B32.indexOf(c))
  return Number(v >> 10n)
}

const nowMicros = () => (performance.timeOrigin + performance.now()) * 1000

const sub = new Subscription({
  service: service.replace(/^http/, 'ws'),
  method: 'com.atproto.label.subscribeLabels',
  getParams: () => ({}),
  validate: (v) => v,
})
const started = nowMicros()
const latencies = []
let labels = 0
const done = new Promise((resolve) => setTimeout(resolve, seconds * 1000))
const reading = (async () => {
  for await (const msg of sub) {
    if (msg.$type !== 'com.atproto.label.subscribeLabels#labels') continue
    const at = nowMicros()
    for (const label of msg.labels) {
      labels += 1
      if (!label.uri.startsWith('at://') || at - started < warmup * 1e6) continue
      const t = tidMicros(label.uri.split('/').pop())
      if (t !== null) latencies.push((at - (t + offset)) / 1000)
    }
  }
})()
await Promise.race([done, reading])
latencies.sort((a, b) => a - b)
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.round((latencies.length - 1) * p))] : null)
const round = (x) => (x === null ? null : Math.round(x * 100) / 100)
console.log(
  JSON.stringify({
    labels,
    timed: latencies.length,
    labels_per_s: Math.round(labels / seconds),
    p50_ms: round(pct(0.5)),
    p90_ms: round(pct(0.9)),
    p99_ms: round(pct(0.99)),
    max_ms: round(pct(1)),
  }),
)
process.exit(0)
