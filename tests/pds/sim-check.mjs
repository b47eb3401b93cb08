// An independent check of skywarden's simulated network, with the network's own libraries:
// @atproto/xrpc-server's Subscription reads subscribeRepos from the simulator, @atproto/lexicon
// (with @atproto/api's schemas) checks every message's shape, @atproto/identity resolves each
// account's signing key from the simulator's PLC directory, and @atproto/repo's verifyProofs
// checks each commit's signature and proves every op against the signed MST root (the same
// check @atproto/sync's Firehose makes). None of this code is skywarden's.
//
//   node sim-check.mjs --service ws://127.0.0.1:PORT --plc http://127.0.0.1:PORT --until SEQ
//
// Prints one JSON summary: frames by type, commits and ops verified, and every problem.

import { Subscription } from '@atproto/xrpc-server'
import { verifyProofs } from '@atproto/repo'
import { IdResolver } from '@atproto/identity'
import { Lexicons } from '@atproto/lexicon'
import { schemas } from '@atproto/api'

function arg(name, fallback) {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}

const service = arg('--service')
const plcUrl = arg('--plc')
const until = Number(arg('--until', '1000'))
const lex = new Lexicons(schemas)
const idResolver = new IdResolver({ plcUrl })
const keys = new Map()
const problems = []
const frames = {}
let commits = 0
let opsVerified = 0
// Declared before the subscription reads it.
var lastSeq = 0

async function keyFor(did) {
  if (!keys.has(did)) keys.set(did, await idResolver.did.resolveAtprotoKey(did))
  return keys.get(did)
}

const sub = new Subscription({
  service,
  method: 'com.atproto.sync.subscribeRepos',
  // Resume after the last frame seen, as a consumer must when the connection drops (the
  // client's keep-alive gives up on a reader busier than its heartbeat).
  getParams: () => ({ cursor: lastSeq }),
  validate: (value) => {
    try {
      return lex.assertValidXrpcMessage('com.atproto.sync.subscribeRepos', value)
    } catch (err) {
      problems.push(`message shape: ${err.message}`)
      return value
    }
  },
})

const timer = setTimeout(() => {
  problems.push(`timed out at seq ${lastSeq}`)
  finish(2)
}, 120_000)

function finish(code) {
  clearTimeout(timer)
  console.log(JSON.stringify({ frames, commits, opsVerified, lastSeq, problems: problems.slice(0, 20), problemCount: problems.length }))
  process.exit(code)
}

for await (const msg of sub) {
  const type = msg.$type.split('#')[1]
  frames[type] = (frames[type] ?? 0) + 1
  if (msg.seq <= lastSeq) problems.push(`seq ${msg.seq} after ${lastSeq}`)
  lastSeq = msg.seq
  if (type === 'commit') {
    commits += 1
    const claims = msg.ops.map((op) => {
      const [collection, rkey] = op.path.split('/')
      return { collection, rkey, cid: op.action === 'delete' ? null : op.cid }
    })
    try {
      const key = await keyFor(msg.repo)
      const res = await verifyProofs(msg.blocks, claims, msg.repo, key)
      opsVerified += res.verified.length
      for (const u of res.unverified) problems.push(`seq ${msg.seq}: op ${u.collection}/${u.rkey} not proven`)
    } catch (err) {
      problems.push(`seq ${msg.seq}: ${err.message}`)
    }
  }
  if (msg.seq >= until) break
}
finish(0)
