// Side-by-side benchmark of the Ozone moderation API: skywarden's and the real @atproto/ozone,
// driven by this one client over HTTP (node:http, keep-alive, admin Basic auth). Three modes:
//
//   node benches/peers/moderation.mjs ozone-host --db URL --ready FILE [--subjects N] [--seed S]
//       Starts a real Ozone through @atproto/dev-env's TestNetwork (PLC, PDS, AppView, Ozone and
//       its daemon, one Node process, every server on 127.0.0.1) on the Postgres database URL
//       (schemas ozone_bench and appview_bench), registers the workload's subjects as AppView
//       actors, writes {"url","password","did"} to FILE once it serves, and runs until
//       SIGTERM/SIGINT.
//
//   node benches/peers/moderation.mjs run --system NAME --service URL --password PW --out FILE
//       [--subjects 4000] [--events 20000] [--serial 4000] [--callers 8] [--requests 200]
//       [--warmup 20] [--seed 7]
//       Loads the workload through emitEvent (the first --serial events with one caller, the
//       rest with --callers concurrent callers), then measures queryStatuses/queryEvents latency
//       for the queue views (--requests sequential requests each after --warmup), and writes
//       the results to FILE. The workload depends only on --subjects, --events and --seed.
//
//   node benches/peers/moderation.mjs report A.json B.json [--json FILE]
//       Prints the comparison table of two `run` results (A is the one compared, B the
//       reference); the merged results go to FILE and, as one JSON line, to the last line of
//       stdout.
//
// The workload: SUBJECTS accounts (com.atproto.admin.defs#repoRef, did:plc: + 24 base32
// characters) and EVENTS events. New subjects arrive evenly over the stream (one every
// EVENTS/SUBJECTS events); the other events pick a subject already seen, with a skew (a few
// subjects get many events). Types, by weight: report 40 (#reasonSpam, from one of 100 reporter
// DIDs; on a taken-down subject, one in five is instead its appeal, #reasonAppeal by the subject
// itself), acknowledge 12, escalate 10, comment 13, tag 14 (add `spam-wave` 30 % of them, add
// `needs-review` 40 %, remove `needs-review` 30 %), label 8 (createLabelVals ['spam']),
// takedown 3 (a takedown of a subject already taken down becomes a comment). Events of one
// subject are always sent in order, one at a time, also with concurrent callers.

import { createRequire } from 'node:module'
import http from 'node:http'
import fs from 'node:fs'
import net from 'node:net'
import dns from 'node:dns'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const pdsHarness = path.resolve(here, '../../tests/pds')

function arg(name, fallback) {
  const i = process.argv.indexOf(name)
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

function log(...parts) {
  console.error(`[moderation-bench] ${parts.join(' ')}`)
}

function die(message) {
  console.error(`[moderation-bench] error: ${message}`)
  process.exit(1)
}

// ---------------------------------------------------------------------------------------------
// Ozone, as dev-env starts it

async function ozoneHost() {
  const db = arg('--db')
  const ready = arg('--ready')
  if (!db || !ready) die('ozone-host needs --db URL --ready FILE')
  process.env.LOG_ENABLED = 'false'
  // TestNetwork asserts that REDIS_HOST is set, but none of its services (PDS, AppView, Ozone)
  // connects to Redis in this version.
  process.env.REDIS_HOST = process.env.REDIS_HOST || '127.0.0.1:6379'
  bindLoopback()
  const require = createRequire(path.join(pdsHarness, 'package.json'))
  const dev = require('@atproto/dev-env')
  const started = Date.now()
  const network = await dev.TestNetwork.create({ dbPostgresUrl: db, dbPostgresSchema: 'bench' })
  const url = network.ozone.url.replace('//localhost:', '//127.0.0.1:')
  // The AppView knows the subject accounts (as it would once their PDS has created them; they
  // have no posts). Ozone asks the AppView for a new subject's posts to tag its languages
  // (`lang:und` when it has none); for an account the AppView does not know, that call fails,
  // no tag is set, and Ozone repeats the call on every later event of the subject.
  const { subjects } = workload(Number(arg('--subjects', '4000')), 0, Number(arg('--seed', '7')))
  const pg = require('pg')
  const sql = new pg.Client({ connectionString: db })
  await sql.connect()
  await sql.query(
    `INSERT INTO appview_bench.actor (did, handle, "indexedAt")
     SELECT did, 'subject' || n || '.bench.test', $2 FROM unnest($1::text[]) WITH ORDINALITY AS t(did, n)`,
    [subjects, new Date().toISOString()],
  )
  await sql.end()
  log(`ozone up at ${url} in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  let closing = false
  const close = async () => {
    if (closing) return
    closing = true
    try {
      await network.close()
    } catch (err) {
      log('close:', err?.message ?? err)
    }
    process.exit(0)
  }
  process.on('SIGTERM', close)
  process.on('SIGINT', close)
  fs.writeFileSync(
    ready + '.tmp',
    JSON.stringify({
      url,
      password: dev.ADMIN_PASSWORD ?? 'admin-pass',
      did: network.ozone.ctx.cfg.service.did,
    }),
  )
  fs.renameSync(ready + '.tmp', ready)
  setInterval(() => {}, 1 << 30)
}

// Every server binds 127.0.0.1 only (Express' app.listen(port) binds all interfaces otherwise);
// `localhost` URLs resolve to the same loopback address.
function bindLoopback() {
  const LOOPBACK = '127.0.0.1'
  const orig = net.Server.prototype.listen
  net.Server.prototype.listen = function listen(...args) {
    const cb = typeof args[args.length - 1] === 'function' ? args.pop() : undefined
    const first = args[0]
    let opts
    if (first === undefined || first === null) {
      opts = { port: 0, host: LOOPBACK }
    } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      opts = { port: Number(first), host: LOOPBACK }
      const backlog = args.find((a, i) => i > 0 && typeof a === 'number')
      if (backlog !== undefined) opts.backlog = backlog
    } else if (
      typeof first === 'object' &&
      !first._handle &&
      first.fd === undefined &&
      first.path === undefined &&
      !(first instanceof net.Server) &&
      !(first instanceof net.Socket)
    ) {
      opts = { ...first, host: LOOPBACK }
      if (opts.port === undefined) opts.port = 0
    } else {
      return orig.apply(this, cb ? [...args, cb] : args)
    }
    return cb ? orig.call(this, opts, cb) : orig.call(this, opts)
  }
  dns.setDefaultResultOrder('ipv4first')
}

// ---------------------------------------------------------------------------------------------
// The workload

function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const DEFS = 'tools.ozone.moderation.defs'
const MIX = [
  ['report', 40],
  ['acknowledge', 12],
  ['escalate', 10],
  ['comment', 13],
  ['tag', 14],
  ['label', 8],
  ['takedown', 3],
]

function workload(subjectCount, eventCount, seed) {
  const rand = mulberry32(seed)
  const b32 = 'abcdefghijklmnopqrstuvwxyz234567'
  const did = () => {
    let s = 'did:plc:'
    for (let i = 0; i < 24; i++) s += b32[Math.floor(rand() * 32)]
    return s
  }
  const subjects = Array.from({ length: subjectCount }, did)
  const reporters = Array.from({ length: 100 }, did)
  const moderator = did()
  const order = subjects.map((_, i) => i)
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  const total = MIX.reduce((n, [, w]) => n + w, 0)
  const pick = () => {
    let r = rand() * total
    for (const [type, w] of MIX) {
      if ((r -= w) < 0) return type
    }
    return MIX[0][0]
  }
  const takendown = new Uint8Array(subjectCount)
  const events = []
  const counts = {}
  let introduced = 0
  for (let k = 0; k < eventCount; k++) {
    // New subjects arrive evenly over the stream; the others are picked among those already
    // seen, the earliest ones more often.
    const due = Math.ceil(((k + 1) * subjectCount) / eventCount)
    const s = introduced < due ? order[introduced++] : order[Math.floor(introduced * rand() ** 3)]
    let type = pick()
    if (type === 'takedown' && takendown[s]) type = 'comment'
    let event
    let createdBy = moderator
    switch (type) {
      case 'report':
        if (takendown[s] && rand() < 0.2) {
          // A taken-down account appeals (an appeal is a report by the subject itself).
          type = 'appeal'
          event = { $type: `${DEFS}#modEventReport`, reportType: 'com.atproto.moderation.defs#reasonAppeal', comment: `please restore ${k}` }
          createdBy = subjects[s]
        } else {
          event = { $type: `${DEFS}#modEventReport`, reportType: 'com.atproto.moderation.defs#reasonSpam', comment: `spam wave ${k}` }
          createdBy = reporters[k % reporters.length]
        }
        break
      case 'acknowledge':
        event = { $type: `${DEFS}#modEventAcknowledge`, comment: `checked ${k}` }
        break
      case 'escalate':
        event = { $type: `${DEFS}#modEventEscalate`, comment: `needs a second look ${k}` }
        break
      case 'comment':
        event = { $type: `${DEFS}#modEventComment`, comment: `note ${k}` }
        break
      case 'tag': {
        const r = rand()
        event =
          r < 0.3
            ? { $type: `${DEFS}#modEventTag`, add: ['spam-wave'], remove: [] }
            : r < 0.7
              ? { $type: `${DEFS}#modEventTag`, add: ['needs-review'], remove: [] }
              : { $type: `${DEFS}#modEventTag`, add: [], remove: ['needs-review'] }
        break
      }
      case 'label':
        event = { $type: `${DEFS}#modEventLabel`, createLabelVals: ['spam'], negateLabelVals: [] }
        break
      case 'takedown':
        event = { $type: `${DEFS}#modEventTakedown`, comment: `spam account ${k}` }
        takendown[s] = 1
        break
    }
    counts[type] = (counts[type] ?? 0) + 1
    events.push({
      s,
      body: JSON.stringify({
        event,
        subject: { $type: 'com.atproto.admin.defs#repoRef', did: subjects[s] },
        createdBy,
      }),
    })
  }
  return { subjects, events, counts }
}

// ---------------------------------------------------------------------------------------------
// The client: node:http with keep-alive; one socket per concurrent caller.

function client(service, password, sockets) {
  const url = new URL(service)
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets })
  const auth = 'Basic ' + Buffer.from(`admin:${password}`).toString('base64')
  return (method, nsid, payload) =>
    new Promise((resolve, reject) => {
      let reqPath = `/xrpc/${nsid}`
      const headers = { authorization: auth }
      if (method === 'GET' && payload) {
        const q = new URLSearchParams()
        for (const [k, v] of Object.entries(payload)) {
          for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one))
        }
        reqPath += `?${q}`
      } else if (method === 'POST') {
        headers['content-type'] = 'application/json'
        headers['content-length'] = Buffer.byteLength(payload)
      }
      const start = process.hrtime.bigint()
      const req = http.request(
        { host: url.hostname, port: url.port, path: reqPath, method, headers, agent },
        (res) => {
          const chunks = []
          res.on('data', (c) => chunks.push(c))
          res.on('end', () => {
            const ms = Number(process.hrtime.bigint() - start) / 1e6
            resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(), ms })
          })
          res.on('error', reject)
        },
      )
      req.setTimeout(60_000, () => req.destroy(new Error(`${nsid}: no answer in 60 s`)))
      req.on('error', reject)
      if (method === 'POST') req.write(payload)
      req.end()
    })
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i]
}

const round = (x, digits = 2) => (x === null ? null : Number(x.toFixed(digits)))

// ---------------------------------------------------------------------------------------------
// One system: load, then measure

async function run() {
  const system = arg('--system')
  const service = arg('--service')
  const password = arg('--password')
  const out = arg('--out')
  if (!system || !service || !password || !out) die('run needs --system --service --password --out')
  const subjectCount = Number(arg('--subjects', '4000'))
  const eventCount = Number(arg('--events', '20000'))
  const serial = Math.min(eventCount, Number(arg('--serial', '4000')))
  const callers = Number(arg('--callers', '8'))
  const requests = Number(arg('--requests', '200'))
  const warmup = Number(arg('--warmup', '20'))
  const seed = Number(arg('--seed', '7'))

  const { subjects, events, counts } = workload(subjectCount, eventCount, seed)
  log(`${system}: workload ${subjectCount} subjects, ${eventCount} events ${JSON.stringify(counts)}`)
  const call = client(service, password, Math.max(callers, 1))
  const errors = { count: 0, samples: [] }
  const failed = (what, res) => {
    errors.count++
    if (errors.samples.length < 5) errors.samples.push(`${what}: ${res.status} ${res.body.slice(0, 300)}`)
  }

  // emitEvent, phase by phase. A subject's events are chained, so they reach the service in
  // workload order and never concurrently, whatever the number of callers.
  async function load(from, to, n) {
    const tails = new Map()
    const lat = []
    let next = from
    let done = 0
    let lastLog = Date.now()
    const start = process.hrtime.bigint()
    const worker = async () => {
      while (next < to) {
        const ev = events[next++]
        const prev = tails.get(ev.s) ?? Promise.resolve()
        const mine = prev.then(async () => {
          const res = await call('POST', 'tools.ozone.moderation.emitEvent', ev.body)
          lat.push(res.ms)
          if (res.status !== 200) failed('emitEvent', res)
        })
        tails.set(ev.s, mine)
        await mine
        if (tails.get(ev.s) === mine) tails.delete(ev.s)
        done++
        if (Date.now() - lastLog > 10_000) {
          lastLog = Date.now()
          log(`${system}: ${n} caller(s): ${done}/${to - from} events`)
        }
        if (errors.count > 100 && errors.count > done / 10) {
          die(`${system}: too many emitEvent errors (${errors.count}), e.g. ${errors.samples.join(' | ')}`)
        }
      }
    }
    await Promise.all(Array.from({ length: n }, worker))
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    lat.sort((a, b) => a - b)
    const phase = {
      callers: n,
      events: to - from,
      seconds: round(seconds, 3),
      events_per_s: round((to - from) / seconds, 1),
      p50_ms: round(quantile(lat, 0.5)),
      p99_ms: round(quantile(lat, 0.99)),
    }
    log(`${system}: emitEvent ${JSON.stringify(phase)}`)
    return phase
  }

  const phases = []
  phases.push(await load(0, serial, 1))
  if (serial < eventCount) phases.push(await load(serial, eventCount, callers))
  if (errors.count) log(`${system}: ${errors.count} emitEvent errors, e.g. ${errors.samples.join(' | ')}`)

  // The views. The busiest subject stands for "one subject".
  const perSubject = new Uint32Array(subjectCount)
  for (const ev of events) perSubject[ev.s]++
  let busiest = 0
  for (let i = 1; i < subjectCount; i++) if (perSubject[i] > perSubject[busiest]) busiest = i
  const busy = subjects[busiest]
  const QS = 'tools.ozone.moderation.queryStatuses'
  const QE = 'tools.ozone.moderation.queryEvents'
  const open = { reviewState: `${DEFS}#reviewOpen`, sortField: 'lastReportedAt', sortDirection: 'desc', limit: 50 }

  // The cursor of page 11 of the open queue (10 pages in), or of the deepest page there is.
  let cursor
  let depth = 0
  for (let page = 0; page < 10; page++) {
    const res = await call('GET', QS, cursor ? { ...open, cursor } : open)
    if (res.status !== 200) die(`${system}: queryStatuses (paging): ${res.status} ${res.body.slice(0, 300)}`)
    const body = JSON.parse(res.body)
    if (!body.cursor || body.subjectStatuses.length < open.limit) break
    cursor = body.cursor
    depth++
  }

  const views = [
    ['open, lastReportedAt desc', QS, open],
    ['escalated', QS, { reviewState: `${DEFS}#reviewEscalated`, limit: 50 }],
    ['takendown', QS, { takendown: true, limit: 50 }],
    ['appealed', QS, { appealed: true, limit: 50 }],
    ['tags=spam-wave', QS, { tags: ['spam-wave'], limit: 50 }],
    [`open, cursor ${depth} pages deep`, QS, cursor ? { ...open, cursor } : open],
    ['subject=<did>', QS, { subject: busy, limit: 50 }],
    ['queryEvents subject=<did>', QE, { subject: busy, limit: 50 }],
    ['queryEvents latest', QE, { limit: 50 }],
  ]
  const results = []
  for (const [name, nsid, params] of views) {
    const lat = []
    let rows = 0
    for (let i = 0; i < warmup + requests; i++) {
      const res = await call('GET', nsid, params)
      if (res.status !== 200) die(`${system}: ${name}: ${res.status} ${res.body.slice(0, 300)}`)
      if (i >= warmup) lat.push(res.ms)
      if (i === 0) {
        const body = JSON.parse(res.body)
        rows = (body.subjectStatuses ?? body.events ?? []).length
      }
    }
    lat.sort((a, b) => a - b)
    const view = {
      view: name,
      requests,
      rows,
      p50_ms: round(quantile(lat, 0.5)),
      p99_ms: round(quantile(lat, 0.99)),
      mean_ms: round(lat.reduce((a, b) => a + b, 0) / lat.length),
    }
    log(`${system}: ${JSON.stringify(view)}`)
    results.push(view)
  }

  // How many subjects each queue holds (paged through, untimed): the two systems should agree.
  const totals = {}
  for (const [name, params] of [
    ['open', { reviewState: `${DEFS}#reviewOpen` }],
    ['escalated', { reviewState: `${DEFS}#reviewEscalated` }],
    ['closed', { reviewState: `${DEFS}#reviewClosed` }],
    ['takendown', { takendown: true }],
    ['appealed', { appealed: true }],
    ['tags=spam-wave', { tags: ['spam-wave'] }],
  ]) {
    let n = 0
    let c
    for (let page = 0; page < 1000; page++) {
      const res = await call('GET', QS, { ...params, limit: 100, ...(c ? { cursor: c } : {}) })
      if (res.status !== 200) die(`${system}: counting ${name}: ${res.status} ${res.body.slice(0, 300)}`)
      const body = JSON.parse(res.body)
      n += body.subjectStatuses.length
      c = body.cursor
      if (!c || body.subjectStatuses.length === 0) break
    }
    totals[name] = n
  }
  log(`${system}: queue sizes ${JSON.stringify(totals)}`)

  const result = {
    system,
    workload: { subjects: subjectCount, events: eventCount, serial, callers, seed, counts },
    emitEvent: phases,
    emitEvent_errors: errors,
    views: results,
    queue_sizes: totals,
    cursor_depth_pages: depth,
  }
  fs.writeFileSync(out, JSON.stringify(result, null, 1))
}

// ---------------------------------------------------------------------------------------------
// The table

function report() {
  const [aPath, bPath] = process.argv.slice(3).filter((x) => !x.startsWith('--'))
  const jsonOut = arg('--json')
  if (!aPath || !bPath) die('report needs two result files')
  const a = JSON.parse(fs.readFileSync(aPath, 'utf8'))
  const b = JSON.parse(fs.readFileSync(bPath, 'utf8'))
  const extra = process.env.BENCH_META ? JSON.parse(process.env.BENCH_META) : {}
  const ratio = (x, y) => (x && y ? y / x : null)
  const fmt = (x) => (x === null || x === undefined ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(1))
  const lines = []
  const w = a.workload
  lines.push(
    `workload: ${w.subjects} subjects, ${w.events} events (${Object.entries(w.counts)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}); first ${w.serial} events with 1 caller, the rest with ${w.callers}`,
  )
  lines.push('')
  lines.push(`emitEvent                      ${a.system.padStart(12)} ${b.system.padStart(12)}   ${a.system}/${b.system}`)
  const phases = []
  for (let i = 0; i < a.emitEvent.length; i++) {
    const pa = a.emitEvent[i]
    const pb = b.emitEvent[i]
    const r = ratio(pb.events_per_s, pa.events_per_s)
    phases.push({ callers: pa.callers, events: pa.events, [a.system]: pa, [b.system]: pb, ratio: r && round(r) })
    lines.push(
      `  ${`${pa.callers} caller(s), ${pa.events} ev`.padEnd(28)} ${`${fmt(pa.events_per_s)}/s`.padStart(12)} ${`${fmt(pb.events_per_s)}/s`.padStart(12)}   ${r ? r.toFixed(1) + 'x' : '-'}`,
    )
    lines.push(
      `    ${'p50 / p99 ms'.padEnd(26)} ${`${fmt(pa.p50_ms)}/${fmt(pa.p99_ms)}`.padStart(12)} ${`${fmt(pb.p50_ms)}/${fmt(pb.p99_ms)}`.padStart(12)}`,
    )
  }
  lines.push(`  errors                       ${String(a.emitEvent_errors.count).padStart(12)} ${String(b.emitEvent_errors.count).padStart(12)}`)
  lines.push('')
  lines.push(
    `${'view (limit 50)'.padEnd(30)} ${`${a.system} p50/p99 ms`.padStart(22)} ${`${b.system} p50/p99 ms`.padStart(22)}  p50 ratio  p99 ratio  rows`,
  )
  const views = []
  for (const va of a.views) {
    const vb = b.views.find((v) => v.view === va.view) ?? b.views[a.views.indexOf(va)]
    const r50 = ratio(va.p50_ms, vb.p50_ms)
    const r99 = ratio(va.p99_ms, vb.p99_ms)
    views.push({ view: va.view, [a.system]: va, [b.system]: vb, p50_ratio: r50 && round(r50), p99_ratio: r99 && round(r99) })
    lines.push(
      `${va.view.padEnd(30)} ${`${fmt(va.p50_ms)} / ${fmt(va.p99_ms)}`.padStart(22)} ${`${fmt(vb.p50_ms)} / ${fmt(vb.p99_ms)}`.padStart(22)}  ${(r50 ? r50.toFixed(1) + 'x' : '-').padStart(9)}  ${(r99 ? r99.toFixed(1) + 'x' : '-').padStart(9)}  ${va.rows}/${vb.rows}`,
    )
  }
  lines.push(`(${a.views[0].requests} requests per view after ${'warm-up'}; ratio = ${b.system} time / ${a.system} time; rows = ${a.system}/${b.system} on the first page)`)
  lines.push('')
  lines.push(`queue sizes (${a.system} / ${b.system}): ${Object.keys(a.queue_sizes).map((k) => `${k} ${a.queue_sizes[k]}/${b.queue_sizes[k]}`).join(', ')}`)
  console.log(lines.join('\n'))
  const merged = { ...extra, workload: a.workload, emitEvent: phases, views, queue_sizes: { [a.system]: a.queue_sizes, [b.system]: b.queue_sizes }, errors: { [a.system]: a.emitEvent_errors, [b.system]: b.emitEvent_errors } }
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(merged, null, 1))
  console.log(JSON.stringify(merged))
}

// ---------------------------------------------------------------------------------------------

const mode = process.argv[2]
if (mode === 'ozone-host') await ozoneHost()
else if (mode === 'run') await run()
else if (mode === 'report') report()
else die('usage: moderation.mjs ozone-host|run|report … (see the header of this file)')
