// Independent checks of skywarden's labels with the network's own TypeScript libraries:
// @atproto/crypto (signatures), @ipld/dag-cbor (the signed bytes), @atproto/lexicon with
// @atproto/api's schemas (shapes), @atproto/api (queryLabels) and @atproto/xrpc-server's
// Subscription (subscribeLabels). None of this code is skywarden's.
//
//   node labels.mjs verify  < labels.jsonl     # {"didKey", "label"} per line → one result per line,
//                                              # then labels signed here with k256 and p256 keys
//   node labels.mjs client --service URL --expect N [--uri-pattern P]
//       # fetches the DID document from URL/.well-known/did.json, queries labels, subscribes
//       # from cursor 0 until N labels arrived, and checks every label; prints one JSON summary

import { verifySignature, Secp256k1Keypair, P256Keypair } from '@atproto/crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { Lexicons } from '@atproto/lexicon'
import { schemas, AtpAgent } from '@atproto/api'
import { Subscription } from '@atproto/xrpc-server'
import readline from 'node:readline'

const lex = new Lexicons(schemas)

function b64decode(s) {
  return new Uint8Array(Buffer.from(s, 'base64'))
}

function b64encode(bytes) {
  return Buffer.from(bytes).toString('base64').replace(/=+$/, '')
}

// A label as XRPC JSON ({"$bytes"} sig) → the unsigned object and the signature bytes.
function fromJson(label) {
  const { sig, ...rest } = label
  return { unsigned: rest, sig: sig ? b64decode(sig.$bytes) : undefined }
}

// A label as received in a CBOR frame (sig already bytes).
function fromFrame(label) {
  const { sig, ...rest } = label
  return { unsigned: rest, sig }
}

async function check(didKey, unsigned, sig) {
  const problems = []
  try {
    const full = { ...unsigned, sig }
    // com.atproto.label.defs#label
    const res = lex.validate('com.atproto.label.defs#label', full)
    if (!res.success) problems.push(`lexicon: ${res.error?.message ?? res.error}`)
  } catch (err) {
    problems.push(`lexicon: ${err.message}`)
  }
  if (!sig) {
    problems.push('no sig')
  } else {
    try {
      const ok = await verifySignature(didKey, dagCbor.encode(unsigned), sig)
      if (!ok) problems.push('signature does not verify')
    } catch (err) {
      problems.push(`signature does not verify: ${err.message}`)
    }
  }
  return problems
}

async function verifyMode() {
  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) {
    if (!line.trim()) continue
    const { didKey, label } = JSON.parse(line)
    const { unsigned, sig } = fromJson(label)
    const problems = await check(didKey, unsigned, sig)
    console.log(JSON.stringify({ type: 'verified', uri: label.uri, val: label.val, problems }))
  }
  // Labels signed here, for skywarden to verify.
  for (const [curve, Keypair] of [
    ['k256', Secp256k1Keypair],
    ['p256', P256Keypair],
  ]) {
    const keypair = await Keypair.create()
    const unsigned = {
      ver: 1,
      src: 'did:plc:ar7c4by46qjdydhdevvrndac',
      uri: 'at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3l2s5xxv2ze2c',
      cid: 'bafyreifepiu23okq5zuyvyhsoiazv2ayrqp2l4idi4cr2yhlpuclelg7l4',
      val: 'spam',
      cts: '2026-12-01T12:00:00.000Z',
      exp: '2026-12-08T12:00:00.000Z',
    }
    const sig = await keypair.sign(dagCbor.encode(unsigned))
    console.log(
      JSON.stringify({
        type: 'signed',
        curve,
        didKey: keypair.did(),
        label: { ...unsigned, sig: { $bytes: b64encode(sig) } },
      }),
    )
  }
}

function arg(name, fallback) {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}

async function clientMode() {
  const service = arg('--service')
  const expect = Number(arg('--expect', '1'))
  const pattern = arg('--uri-pattern', '*')
  const problems = []

  const doc = await (await fetch(`${service}/.well-known/did.json`)).json()
  const vm = (doc.verificationMethod ?? []).find((m) => m.id.endsWith('#atproto_label'))
  if (!vm) throw new Error(`no #atproto_label key in ${JSON.stringify(doc)}`)
  const didKey = `did:key:${vm.publicKeyMultibase}`
  const endpoint = (doc.service ?? []).find((s) => s.id === '#atproto_labeler')
  if (!endpoint) problems.push('DID document has no #atproto_labeler service')

  // queryLabels through @atproto/api: the client validates the output against the lexicon.
  const agent = new AtpAgent({ service })
  const queried = []
  let cursor
  do {
    const res = await agent.com.atproto.label.queryLabels({ uriPatterns: [pattern], limit: 2, cursor })
    for (const label of res.data.labels) {
      queried.push(label)
      // @atproto/api hands bytes back as Uint8Array.
      const { sig, ...unsigned } = label
      for (const p of await check(didKey, unsigned, sig)) problems.push(`queryLabels ${label.uri} ${label.val}: ${p}`)
    }
    cursor = res.data.cursor
  } while (cursor)

  // subscribeLabels from the beginning, with the network's own subscription client.
  const streamed = []
  const sub = new Subscription({
    service: service.replace(/^http/, 'ws'),
    method: 'com.atproto.label.subscribeLabels',
    getParams: () => ({ cursor: 0 }),
    validate: (value) => {
      try {
        return lex.assertValidXrpcMessage('com.atproto.label.subscribeLabels', value)
      } catch (err) {
        problems.push(`subscribeLabels frame: ${err.message}`)
        return undefined
      }
    },
  })
  const timer = setTimeout(() => {
    console.log(JSON.stringify({ type: 'timeout', streamed: streamed.length, problems }))
    process.exit(2)
  }, 60_000)
  let lastSeq = 0
  for await (const msg of sub) {
    if (msg.$type !== 'com.atproto.label.subscribeLabels#labels') continue
    if (msg.seq <= lastSeq) problems.push(`seq ${msg.seq} after ${lastSeq}`)
    lastSeq = msg.seq
    for (const label of msg.labels) {
      const { unsigned, sig } = fromFrame(label)
      for (const p of await check(didKey, unsigned, sig)) problems.push(`subscribeLabels ${label.uri} ${label.val}: ${p}`)
      streamed.push({ seq: msg.seq, uri: label.uri, val: label.val, neg: label.neg ?? false, src: label.src })
    }
    if (streamed.length >= expect) break
  }
  clearTimeout(timer)
  console.log(
    JSON.stringify({
      type: 'client',
      didKey,
      queried: queried.map((l) => ({ uri: l.uri, val: l.val, src: l.src, cid: l.cid })),
      streamed,
      problems,
    }),
  )
  process.exit(0)
}

const mode = process.argv[2]
if (mode === 'verify') await verifyMode()
else if (mode === 'client') await clientMode()
else {
  console.error('usage: node labels.mjs verify|client …')
  process.exit(64)
}
