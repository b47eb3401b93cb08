#!/usr/bin/env node
// skywarden PDS test harness.
//
// Starts a real AT Protocol PDS + PLC (from @atproto/dev-env) on 127.0.0.1 and
// performs scripted repo mutations / account events on command. Driven by JSON
// lines: commands on stdin (`phase1`, `phase2`, `exit`), replies on stdout.
// stdout carries ONLY the protocol's JSON lines; every log goes to stderr.
// See README.md in this directory.

import net from 'node:net'
import dns from 'node:dns'
import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'
import readline from 'node:readline'

// ---------------------------------------------------------------------------
// stdout discipline: keep the real writer for the protocol, send everything
// else (console.log from libraries, stray writes) to stderr.
// ---------------------------------------------------------------------------
const protocolWrite = process.stdout.write.bind(process.stdout)
process.stdout.write = (chunk, encoding, cb) =>
  process.stderr.write(chunk, encoding, cb)
for (const m of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[m] = (...args) => console.error(...args)
}

function emit(obj) {
  return new Promise((resolve) => protocolWrite(JSON.stringify(obj) + '\n', resolve))
}

function log(...args) {
  console.error('[harness]', ...args)
}

// Logging of the atproto libraries is configured from the environment when
// they are first imported, so set it before the dynamic imports below.
// HARNESS_LOG=1 turns the pino logs on (written to stderr).
if (process.env.HARNESS_LOG === '1') {
  process.env.LOG_ENABLED = 'true'
  process.env.LOG_DESTINATION = '/dev/stderr'
  process.env.LOG_LEVEL = process.env.LOG_LEVEL || 'info'
} else {
  process.env.LOG_ENABLED = 'false'
}

// ---------------------------------------------------------------------------
// Bind every server to 127.0.0.1 only (Express' app.listen(port) would bind
// all interfaces otherwise).
// ---------------------------------------------------------------------------
const LOOPBACK = '127.0.0.1'
const origListen = net.Server.prototype.listen
net.Server.prototype.listen = function patchedListen(...args) {
  const cb = typeof args[args.length - 1] === 'function' ? args.pop() : undefined
  let first = args[0]
  let opts
  if (first === undefined || first === null) {
    opts = { port: 0, host: LOOPBACK }
  } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    opts = { port: Number(first), host: LOOPBACK }
    // listen(port, host?, backlog?)
    const backlog = args.find((a, i) => i > 0 && typeof a === 'number')
    if (backlog !== undefined) opts.backlog = backlog
  } else if (typeof first === 'object' && !first._handle && first.fd === undefined && first.path === undefined &&
             !(first instanceof net.Server) && !(first instanceof net.Socket)) {
    opts = { ...first, host: LOOPBACK }
    if (opts.port === undefined) opts.port = 0
  } else {
    // unix socket path, handle or fd: leave untouched
    return origListen.apply(this, cb ? [...args, cb] : args)
  }
  return cb ? origListen.call(this, opts, cb) : origListen.call(this, opts)
}
// Libraries reach our own servers through http://localhost:PORT; make sure
// that resolves to the IPv4 loopback we bind to.
dns.setDefaultResultOrder('ipv4first')

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    origListen.call(srv, { port: 0, host: LOOPBACK }, () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

// ---------------------------------------------------------------------------
// args
// ---------------------------------------------------------------------------
function parseArgs(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--data-dir') out.dataDir = argv[++i]
    else if (a.startsWith('--data-dir=')) out.dataDir = a.slice('--data-dir='.length)
    else throw new Error(`unknown argument: ${a}`)
  }
  if (!out.dataDir) throw new Error('usage: node harness.mjs --data-dir DIR')
  return out
}

// ---------------------------------------------------------------------------
// tiny PNG encoder (solid colour), so the blobs are real, distinct images
// ---------------------------------------------------------------------------
const CRC_TABLE = (() => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c >>> 0
  }
  return t
})()
function crc32(buf) {
  let c = 0xffffffff
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}
function pngChunk(type, data) {
  const len = Buffer.alloc(4)
  len.writeUInt32BE(data.length)
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(td))
  return Buffer.concat([len, td, crc])
}
function solidPng(width, height, [r, g, b]) {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 2 // colour type: truecolour
  const raw = Buffer.alloc((width * 3 + 1) * height)
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1)
    raw[row] = 0 // filter: none
    for (let x = 0; x < width; x++) {
      raw[row + 1 + x * 3] = r
      raw[row + 2 + x * 3] = g
      raw[row + 3 + x * 3] = b
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ])
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------
let network = null
let shuttingDown = false

async function shutdown(code) {
  if (shuttingDown) return
  shuttingDown = true
  const timer = setTimeout(() => {
    log('network close timed out; exiting anyway')
    process.exit(code)
  }, 15000)
  timer.unref()
  try {
    if (network) await network.close()
  } catch (err) {
    log('error while closing network:', err)
  }
  clearTimeout(timer)
  process.exit(code)
}

async function fail(err) {
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
  log('fatal:', err)
  if (!shuttingDown) {
    await emit({ type: 'error', message })
    await shutdown(1)
  }
}

process.on('uncaughtException', (err) => { fail(err) })
process.on('unhandledRejection', (err) => { fail(err) })
process.on('SIGTERM', () => { shutdown(0) })
process.on('SIGINT', () => { shutdown(0) })

async function main() {
  const args = parseArgs(process.argv.slice(2))
  const t0 = Date.now()

  const dataDir = path.resolve(args.dataDir)
  fs.mkdirSync(dataDir, { recursive: true })
  // The PLC is in-memory, so PDS state from an earlier run can never be
  // reused: start from empty harness-owned sub-directories.
  const pdsDir = path.join(dataDir, 'pds')
  const blobDir = path.join(dataDir, 'blobs')
  for (const d of [pdsDir, blobDir]) {
    fs.rmSync(d, { recursive: true, force: true })
    fs.mkdirSync(d, { recursive: true })
  }

  const { TestNetworkNoAppView } = await import('@atproto/dev-env')
  const { AtpAgent } = await import('@atproto/api')

  const plcPort = await freePort()
  const pdsPort = await freePort()
  network = await TestNetworkNoAppView.create({
    plc: { port: plcPort },
    pds: {
      port: pdsPort,
      dataDirectory: pdsDir,
      blobstoreDiskLocation: blobDir,
      rateLimitsEnabled: false,
    },
  })
  const pdsUrl = `http://${LOOPBACK}:${pdsPort}`
  const plcUrl = `http://${LOOPBACK}:${plcPort}`
  const adminAuth = network.pds.adminAuth() // Basic admin:admin-pass
  log(`network up in ${((Date.now() - t0) / 1000).toFixed(2)}s: pds ${pdsUrl} plc ${plcUrl}`)

  const scenario = new Scenario({ AtpAgent, pdsUrl, plcUrl, adminAuth, network })
  await emit({ type: 'ready', pdsUrl, plcUrl })

  // Commands are handled strictly one after another.
  const rl = readline.createInterface({ input: process.stdin, terminal: false })
  let queue = Promise.resolve()
  rl.on('line', (line) => {
    queue = queue.then(() => handle(line.trim(), scenario)).catch(fail)
  })
  rl.on('close', () => {
    queue = queue.then(() => shutdown(0)).catch(fail)
  })
}

async function handle(cmd, scenario) {
  if (shuttingDown || cmd === '') return
  if (cmd === 'exit') return shutdown(0)
  if (cmd !== 'phase1' && cmd !== 'phase2' && cmd !== 'abuse') throw new Error(`unknown command: ${JSON.stringify(cmd)}`)
  const t = Date.now()
  const actions = await scenario[cmd]()
  const lastSeq = await network.pds.ctx.sequencer.curr()
  const { keys, didDocKeys } = await scenario.signingKeys()
  log(`${cmd} done in ${((Date.now() - t) / 1000).toFixed(2)}s, ${actions.length} actions, lastSeq=${lastSeq}`)
  await emit({ type: 'done', phase: cmd, actions, lastSeq, keys, didDocKeys })
}

// ---------------------------------------------------------------------------
// the scripted scenario
// ---------------------------------------------------------------------------
const POST = 'app.bsky.feed.post'
const PROFILE = 'app.bsky.actor.profile'
const LIKE = 'app.bsky.feed.like'
const REPOST = 'app.bsky.feed.repost'
const FOLLOW = 'app.bsky.graph.follow'
const BLOCK = 'app.bsky.graph.block'
const FACET = 'app.bsky.richtext.facet'

const rkeyOf = (uri) => uri.split('/').pop()
const utf8len = (s) => Buffer.byteLength(s, 'utf8')

// Builds post text from segments and records facets with UTF-8 byte offsets.
function richText(segments) {
  let text = ''
  const facets = []
  for (const seg of segments) {
    if (typeof seg === 'string') {
      text += seg
      continue
    }
    const byteStart = utf8len(text)
    text += seg.text
    facets.push({
      $type: FACET,
      index: { byteStart, byteEnd: utf8len(text) },
      features: [{ $type: `${FACET}#${seg.kind}`, ...seg.feature }],
    })
  }
  return { text, facets }
}

// What a facet feature points at: the mentioned DID, the link URI or the tag.
const featureTarget = (feat) => feat.did ?? feat.uri ?? feat.tag ?? null

function postFields(record) {
  const embed = record.embed ?? null
  let quoteUri = null
  if (embed?.$type === 'app.bsky.embed.record') quoteUri = embed.record.uri
  if (embed?.$type === 'app.bsky.embed.recordWithMedia') quoteUri = embed.record.record.uri
  let images = 0
  if (embed?.$type === 'app.bsky.embed.images') images = embed.images.length
  const externalUri = embed?.$type === 'app.bsky.embed.external' ? embed.external.uri : null
  const facetFeatures = []
  const facetTargets = []
  const facetSlices = []
  const textBytes = Buffer.from(record.text, 'utf8')
  for (const f of record.facets ?? []) {
    // The facet's UTF-8 byte range of the text, decoded (what a consumer's slice must return).
    facetSlices.push(textBytes.subarray(f.index.byteStart, f.index.byteEnd).toString('utf8'))
    for (const feat of f.features) {
      facetFeatures.push(feat.$type)
      facetTargets.push(featureTarget(feat))
    }
  }
  return {
    text: record.text,
    facets: (record.facets ?? []).length,
    facetFeatures,
    facetTargets,
    facetSlices,
    embed: embed ? embed.$type : null,
    externalUri,
    replyParent: record.reply?.parent?.uri ?? null,
    replyRoot: record.reply?.root?.uri ?? null,
    quoteUri,
    images,
    langs: record.langs ?? [],
  }
}

function fieldsFor(collection, record) {
  switch (collection) {
    case POST: return postFields(record)
    case PROFILE: return { displayName: record.displayName ?? null, description: record.description ?? null }
    case LIKE:
    case REPOST: return { subject: record.subject.uri }
    case FOLLOW:
    case BLOCK: return { subject: record.subject }
    default: return {}
  }
}

class Scenario {
  constructor({ AtpAgent, pdsUrl, plcUrl, adminAuth, network }) {
    this.AtpAgent = AtpAgent
    this.pdsUrl = pdsUrl
    this.plcUrl = plcUrl
    this.adminAuth = adminAuth
    this.network = network
    this.users = {} // name -> { agent, did, handle }
    this.refs = {} // name -> { uri, cid }
    this.phasesRun = new Set()
    this.clock = Date.parse('2024-01-01T00:00:00.000Z')
  }

  now() {
    // strictly increasing, deterministic-looking createdAt values
    this.clock += 1000
    return new Date(this.clock).toISOString()
  }

  // Each account's current atproto signing key, read from the PLC directory: the DID
  // document's verification method `#atproto`. The dev-env PLC serves it in the legacy form
  // (`EcdsaSecp256k1VerificationKey2019`, uncompressed key without multicodec prefix), so it
  // is normalised to a Multikey (`zQ3sh...`, as in `type: Multikey` documents and `did:key`),
  // and cross-checked against the PLC's own `/data` view of the DID.
  // Returns { keys: {did: multikey}, didDocKeys: {did: {type, publicKeyMultibase}} }.
  async signingKeys() {
    const { getDidKeyFromMultibase } = await import('@atproto/identity')
    const keys = {}
    const didDocKeys = {}
    const getJson = async (url) => {
      const res = await fetch(url)
      if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status} ${await res.text()}`)
      return res.json()
    }
    for (const { did } of Object.values(this.users)) {
      const doc = await getJson(`${this.plcUrl}/${encodeURIComponent(did)}`)
      const vm = (doc.verificationMethod ?? []).find(
        (m) => typeof m.id === 'string' && (m.id === '#atproto' || m.id.endsWith('#atproto')),
      )
      if (!vm?.publicKeyMultibase) {
        throw new Error(`DID document of ${did} has no #atproto publicKeyMultibase: ${JSON.stringify(doc)}`)
      }
      const didKey = getDidKeyFromMultibase(vm)
      if (!didKey?.startsWith('did:key:')) {
        throw new Error(`cannot read the #atproto key of ${did}: ${JSON.stringify(vm)}`)
      }
      const data = await getJson(`${this.plcUrl}/${encodeURIComponent(did)}/data`)
      if (data.verificationMethods?.atproto !== didKey) {
        throw new Error(`#atproto key of ${did}: DID document says ${didKey}, PLC data says ${data.verificationMethods?.atproto}`)
      }
      keys[did] = didKey.slice('did:key:'.length)
      didDocKeys[did] = { type: vm.type, publicKeyMultibase: vm.publicKeyMultibase }
    }
    return { keys, didDocKeys }
  }

  async createAccount(name, actions) {
    const handle = `${name}.test`
    const agent = new this.AtpAgent({ service: this.pdsUrl })
    const res = await agent.createAccount({
      handle,
      email: `${name}@example.test`,
      password: `${name}-password`,
    })
    const did = res.data.did
    this.users[name] = { agent, did, handle }
    actions.push({ kind: 'account_created', did, handle })
  }

  async create(name, collection, record, actions, { rkey, refName } = {}) {
    const { agent, did } = this.users[name]
    const res = rkey
      ? await agent.com.atproto.repo.putRecord({ repo: did, collection, rkey, record })
      : await agent.com.atproto.repo.createRecord({ repo: did, collection, record })
    const ref = { uri: res.data.uri, cid: res.data.cid }
    if (refName) this.refs[refName] = ref
    actions.push({
      kind: 'create', did, collection, rkey: rkeyOf(ref.uri), cid: ref.cid,
      fields: fieldsFor(collection, record),
    })
    return ref
  }

  async update(name, collection, rkey, record, actions) {
    const { agent, did } = this.users[name]
    const res = await agent.com.atproto.repo.putRecord({ repo: did, collection, rkey, record })
    actions.push({
      kind: 'update', did, collection, rkey, cid: res.data.cid,
      fields: fieldsFor(collection, record),
    })
    return { uri: res.data.uri, cid: res.data.cid }
  }

  async delete(name, refName, actions) {
    const { agent, did } = this.users[name]
    const uri = this.refs[refName].uri
    const [, , , collection, rkey] = uri.split('/')
    await agent.com.atproto.repo.deleteRecord({ repo: did, collection, rkey })
    actions.push({ kind: 'delete', did, collection, rkey, cid: null, fields: null })
  }

  async post(name, record, actions, refName) {
    return this.create(name, POST, { $type: POST, createdAt: this.now(), ...record }, actions, { refName })
  }

  async phase1() {
    if (this.phasesRun.has('phase1')) throw new Error('phase1 already ran')
    this.phasesRun.add('phase1')
    const actions = []
    for (const name of ['alice', 'bob', 'carol', 'dave']) await this.createAccount(name, actions)
    const { alice, bob, carol, dave } = this.users

    // alice's profile
    await this.create('alice', PROFILE, {
      $type: PROFILE,
      displayName: 'Alice',
      description: 'Just testing skywarden',
      createdAt: this.now(),
    }, actions, { rkey: 'self', refName: 'aliceProfile' })

    // alice: plain post
    const alicePost = await this.post('alice', {
      text: 'Hello from Alice, plain and simple',
      langs: ['en'],
    }, actions, 'alicePost')

    // bob: mention + link + tag facets, after non-ASCII text (byte != char offsets)
    const rt = richText([
      'Grüße 🌍 an ',
      { text: '@alice.test', kind: 'mention', feature: { did: alice.did } },
      ', lies ',
      { text: 'https://example.com/page', kind: 'link', feature: { uri: 'https://example.com/page' } },
      ' ',
      { text: '#skywarden', kind: 'tag', feature: { tag: 'skywarden' } },
    ])
    const bobPost = await this.post('bob', { text: rt.text, facets: rt.facets, langs: ['de', 'en'] }, actions, 'bobPost')

    // carol: two images
    const imgs = []
    for (const [i, color] of [[1, [255, 0, 0]], [2, [0, 0, 255]]]) {
      const png = solidPng(4, 4, color)
      const up = await carol.agent.com.atproto.repo.uploadBlob(png, { encoding: 'image/png' })
      imgs.push({ alt: `test image ${i}`, image: up.data.blob, aspectRatio: { width: 4, height: 4 } })
    }
    await this.post('carol', {
      text: 'Two tiny pictures',
      embed: { $type: 'app.bsky.embed.images', images: imgs },
      langs: ['en'],
    }, actions, 'carolImages')

    // bob replies to alice
    const bobReply = await this.post('bob', {
      text: 'Replying to Alice',
      reply: { root: alicePost, parent: alicePost },
      langs: ['en'],
    }, actions, 'bobReply')

    // carol quotes bob's post
    await this.post('carol', {
      text: 'Quoting Bob',
      embed: { $type: 'app.bsky.embed.record', record: bobPost },
      langs: ['en'],
    }, actions, 'carolQuote')

    // alice replies to bob's reply with an external embed
    await this.post('alice', {
      text: 'Replying to Bob with a link card',
      reply: { root: alicePost, parent: bobReply },
      embed: {
        $type: 'app.bsky.embed.external',
        external: {
          uri: 'https://example.com/article',
          title: 'An example article',
          description: 'Card description',
        },
      },
      langs: ['en'],
    }, actions, 'aliceReply')

    // likes
    await this.create('bob', LIKE, { $type: LIKE, subject: alicePost, createdAt: this.now() }, actions, { refName: 'bobLike' })
    await this.create('carol', LIKE, { $type: LIKE, subject: alicePost, createdAt: this.now() }, actions, { refName: 'carolLike' })
    // follows
    await this.create('alice', FOLLOW, { $type: FOLLOW, subject: bob.did, createdAt: this.now() }, actions, { refName: 'aliceFollowsBob' })
    await this.create('bob', FOLLOW, { $type: FOLLOW, subject: alice.did, createdAt: this.now() }, actions, { refName: 'bobFollowsAlice' })
    await this.create('carol', FOLLOW, { $type: FOLLOW, subject: alice.did, createdAt: this.now() }, actions, { refName: 'carolFollowsAlice' })
    // repost
    await this.create('carol', REPOST, { $type: REPOST, subject: bobPost, createdAt: this.now() }, actions, { refName: 'carolRepost' })
    // block
    await this.create('dave', BLOCK, { $type: BLOCK, subject: carol.did, createdAt: this.now() }, actions, { refName: 'daveBlocksCarol' })

    // alice updates her profile
    await this.update('alice', PROFILE, 'self', {
      $type: PROFILE,
      displayName: 'Alice Updated',
      description: 'Now with a longer bio ✨',
      createdAt: this.now(),
    }, actions)

    void dave
    return actions
  }

  async phase2() {
    if (!this.phasesRun.has('phase1')) throw new Error('phase2 requires phase1 first')
    if (this.phasesRun.has('phase2')) throw new Error('phase2 already ran')
    this.phasesRun.add('phase2')
    const actions = []
    const { bob, carol, dave } = this.users

    await this.delete('carol', 'carolLike', actions)
    await this.delete('alice', 'alicePost', actions)
    await this.delete('bob', 'bobFollowsAlice', actions)

    // dave changes handle -> #identity
    await dave.agent.com.atproto.identity.updateHandle({ handle: 'dave2.test' })
    dave.handle = 'dave2.test'
    actions.push({ kind: 'identity', did: dave.did, handle: 'dave2.test' })

    // carol deactivates -> #account active=false status=deactivated
    await carol.agent.com.atproto.server.deactivateAccount({})
    actions.push({ kind: 'account', did: carol.did, active: false, status: 'deactivated' })

    await this.post('alice', { text: 'after the gap', langs: ['en'] }, actions, 'aliceAfterGap')

    // admin takedown of bob -> #account active=false status=takendown
    const admin = new this.AtpAgent({ service: this.pdsUrl })
    await admin.com.atproto.admin.updateSubjectStatus(
      {
        subject: { $type: 'com.atproto.admin.defs#repoRef', did: bob.did },
        takedown: { applied: true, ref: 'test' },
      },
      { headers: { authorization: this.adminAuth }, encoding: 'application/json' },
    )
    actions.push({ kind: 'takedown', did: bob.did })

    await this.post('dave', { text: 'last post', langs: ['en'] }, actions, 'daveLast')
    return actions
  }

  // Abuse and ordinary use side by side, for the engine's end-to-end test: a GTUBE post, one
  // message replied into many threads, 3,100 follows in a few commits, and two ordinary
  // accounts posting, replying, liking and following. Independent of phase1/phase2.
  async abuse() {
    if (this.phasesRun.has('abuse')) throw new Error('abuse already ran')
    this.phasesRun.add('abuse')
    const actions = []
    for (const name of ['gina', 'hank', 'gtuber', 'replier', 'follower']) {
      await this.createAccount(name, actions)
    }
    const { gina, hank } = this.users

    // Ordinary use.
    const ginaPosts = []
    for (let i = 0; i < 4; i++) {
      ginaPosts.push(await this.post('gina', { text: `Gina's garden diary, day ${i + 1}: the tomatoes are finally red`, langs: ['en'] }, actions))
    }
    const hankPost = await this.post('hank', { text: 'Hank here. Anyone up for a bike ride on Sunday?', langs: ['en'] }, actions)
    await this.post('hank', { text: 'Lovely tomatoes!', reply: { root: ginaPosts[0], parent: ginaPosts[0] }, langs: ['en'] }, actions)
    await this.post('gina', { text: 'Count me in for Sunday', reply: { root: hankPost, parent: hankPost }, langs: ['en'] }, actions)
    await this.create('hank', LIKE, { $type: LIKE, subject: ginaPosts[1], createdAt: this.now() }, actions)
    await this.create('gina', LIKE, { $type: LIKE, subject: hankPost, createdAt: this.now() }, actions)
    await this.create('hank', FOLLOW, { $type: FOLLOW, subject: gina.did, createdAt: this.now() }, actions)
    await this.create('gina', FOLLOW, { $type: FOLLOW, subject: hank.did, createdAt: this.now() }, actions)

    // The GTUBE string in a post.
    await this.post('gtuber', {
      text: 'limited offer XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X',
      langs: ['en'],
    }, actions, 'gtubePost')

    // The same unsolicited reply into eight of gina's and hank's threads.
    const targets = [...ginaPosts, hankPost, ...ginaPosts.slice(0, 3)]
    for (const target of targets) {
      await this.post('replier', {
        text: 'Your account is at risk! Message me on WhatsApp to recover it',
        reply: { root: target, parent: target },
        langs: ['en'],
      }, actions)
    }

    // 3,100 follows of made-up accounts in 16 commits.
    const { agent, did } = this.users.follower
    const base32 = 'abcdefghijklmnopqrstuvwxyz234567'
    let n = 0
    for (let batch = 0; batch < 16; batch++) {
      const writes = []
      for (let i = 0; i < 200 && n < 3100; i++, n++) {
        let id = ''
        for (let k = 0, v = n; k < 24; k++, v = Math.floor(v / 32)) id = base32[v % 32] + id
        writes.push({
          $type: 'com.atproto.repo.applyWrites#create',
          collection: FOLLOW,
          value: { $type: FOLLOW, subject: `did:plc:${id}`, createdAt: this.now() },
        })
      }
      if (writes.length === 0) break
      await agent.com.atproto.repo.applyWrites({ repo: did, writes })
    }
    actions.push({ kind: 'bulk_follows', did, count: n })
    return actions
  }
}

main().catch(fail)
