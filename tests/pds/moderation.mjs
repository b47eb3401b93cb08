// Independent conformance client for skywarden's Ozone-compatible moderation API, written with
// the network's own TypeScript libraries: @atproto/api (the XRPC client), @atproto/xrpc-server
// (createServiceJwt, for service-auth JWTs), @atproto/crypto (the accounts' k256 keys) and
// @atproto/lexicon (independent validation of every request and response body against the
// shared lexicons). None of this code is skywarden's.
//
// It plays one scenario against the service: team setup (admin Basic auth), reports by three
// reporters on an account and on a record, queue queries, moderator actions (label, escalate,
// sticky comment, tags, takedown), role limits of a triage member, an appeal and its
// resolution, a muted reporter, the event log (order, paging, getEvent), getRepo, auth
// refusals (missing / wrong-audience / wrong-lxm / expired JWTs, wrong admin password,
// non-members), sets, and externalId de-duplication. Every expected refusal is checked for its
// HTTP status and for a proper XRPC error body ({"error": string, "message"?: string}).
//
//   ADMIN_PASSWORD=… SERVICE_DID=did:… ACCOUNTS='[{"name","did","key"}…]' \
//     node moderation.mjs --service http://127.0.0.1:PORT --lexicons DIR
//       # ACCOUNTS: reporter1, reporter2, reporter3, moderator, triage, subject; key = 32-byte
//       # k256 private key in hex, matching the public key in the account's DID document.
//       # Prints one JSON line {"ok", "problems", "checked"}; exit 0 when ok, 1 otherwise.
//   node moderation.mjs --selftest --lexicons DIR
//       # loads the lexicons, mints and verifies a JWT, validates sample bodies and exercises
//       # the client helpers against a tiny local stub; same JSON line and exit codes.
//
// Progress and diagnostics go to stderr; stdout carries only the summary line.

import { AtpAgent } from '@atproto/api'
import { Secp256k1Keypair, verifySignature } from '@atproto/crypto'
import { Lexicons, jsonStringToLex } from '@atproto/lexicon'
import { createServiceJwt } from '@atproto/xrpc-server'
import fs from 'node:fs'
import path from 'node:path'
import http from 'node:http'

// ---------------------------------------------------------------------------------------------
// Command line, results

function arg(name, fallback) {
  const i = process.argv.indexOf(name)
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

const problems = []
let checked = 0
let step = 'setup'

function log(...parts) {
  console.error(`[moderation] ${parts.join(' ')}`)
}

// One assertion: counts it, and records `what` (prefixed with the step) when it fails.
function check(cond, what) {
  checked++
  if (!cond) problems.push(`${step}: ${what}`)
  return !!cond
}

function problem(what) {
  problems.push(`${step}: ${what}`)
}

function finish() {
  const ok = problems.length === 0
  console.log(JSON.stringify({ ok, problems, checked }))
  process.exit(ok ? 0 : 1)
}

function show(v) {
  const s = JSON.stringify(v)
  return s === undefined ? 'undefined' : s.length > 400 ? s.slice(0, 400) + '…' : s
}

// JSON with sorted keys, for order-insensitive deep comparison of objects.
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`
  if (v && typeof v === 'object') {
    if (v.constructor && v.constructor.name === 'CID') return JSON.stringify(v.toString())
    if (v instanceof Uint8Array) return JSON.stringify(Buffer.from(v).toString('base64'))
    return `{${Object.keys(v)
      .sort()
      .filter((k) => v[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canon(v[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(v)
}

function sameSet(a, b) {
  return Array.isArray(a) && Array.isArray(b) && canon([...a].sort()) === canon([...b].sort())
}

// ---------------------------------------------------------------------------------------------
// Lexicons (the shared set, independent of the client's bundled schemas)

function loadLexicons(dir) {
  const lex = new Lexicons()
  const files = []
  const walk = (d) => {
    for (const ent of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name)
      if (ent.isDirectory()) walk(p)
      else if (ent.isFile() && ent.name.endsWith('.json')) files.push(p)
    }
  }
  walk(dir)
  files.sort()
  let loaded = 0
  const skipped = []
  for (const f of files) {
    try {
      lex.add(JSON.parse(fs.readFileSync(f, 'utf8')))
      loaded++
    } catch (err) {
      skipped.push(f)
      log(`skipping lexicon ${f}: ${err.message}`)
    }
  }
  log(`loaded ${loaded} lexicons from ${dir}` + (skipped.length ? `, skipped ${skipped.length}` : ''))
  return { lex, loaded, skipped }
}

let lex

function validate(kind, nsid, value, label) {
  try {
    if (kind === 'input') lex.assertValidXrpcInput(nsid, value)
    else if (kind === 'output') lex.assertValidXrpcOutput(nsid, value)
    else lex.assertValidXrpcParams(nsid, value)
    return null
  } catch (err) {
    return `${label ?? nsid} ${kind} does not validate against the shared lexicons: ${err.message}`
  }
}

// ---------------------------------------------------------------------------------------------
// XRPC client with the raw HTTP exchange recorded (real status code, content type, body text):
// @atproto/api folds unknown 4xx codes into 400 and invents an error name when the body is not
// an XRPC error, so refusals are judged from the raw response.

let lastHttp = null

async function recordingFetch(input, init) {
  const res = await fetch(input, init)
  const text = await res.clone().text()
  lastHttp = {
    status: res.status,
    contentType: res.headers.get('content-type') ?? '',
    text,
    url: typeof input === 'string' ? input : (input.url ?? String(input)),
  }
  return res
}

let agent
let service

// Runs one client call. `input` / `params` are what is sent (validated here first);
// `fn(opts)` performs the call. Returns { ok, data, status, error, message, http, err }.
async function xrpc(nsid, { params, input, headers = {}, expectInvalidInput = false }, fn) {
  if (params !== undefined) {
    const p = validate('params', nsid, params)
    if (p) problem(`request: ${p}`)
  }
  if (input !== undefined && !expectInvalidInput) {
    const p = validate('input', nsid, input)
    if (p) problem(`request: ${p}`)
  }
  lastHttp = null
  const opts = { headers }
  if (input !== undefined) opts.encoding = 'application/json'
  try {
    const res = await fn(opts)
    const exchange = lastHttp
    // Independent check of the response against the shared lexicons, from the raw body.
    const def = safeDef(nsid)
    if (def?.output?.schema) {
      let body
      try {
        body = jsonStringToLex(exchange?.text ?? '')
      } catch (err) {
        problem(`${nsid}: response body is not JSON: ${show(exchange?.text)}`)
      }
      if (body !== undefined) {
        const p = validate('output', nsid, body)
        if (p) problem(`response: ${p}; body ${show(exchange?.text)}`)
      }
      if (exchange && !/^application\/json\b/i.test(exchange.contentType))
        problem(`${nsid}: response content-type is ${show(exchange.contentType)}, not application/json`)
    }
    return { ok: true, data: res.data, status: exchange?.status ?? 200, http: exchange }
  } catch (err) {
    const exchange = lastHttp
    if (err?.validationError) {
      // The client's own (bundled) lexicons rejected a 2xx response body.
      problem(
        `${nsid}: @atproto/api rejected the response: ${err.validationError.message}; body ${show(exchange?.text)}`,
      )
      const p = validate('output', nsid, err.responseBody)
      if (p) problem(`response: ${p}`)
      return { ok: true, data: err.responseBody, status: exchange?.status ?? 200, http: exchange, err }
    }
    return {
      ok: false,
      status: exchange?.status ?? err?.status,
      error: err?.error,
      message: err?.message,
      http: exchange,
      err,
    }
  }
}

function safeDef(nsid) {
  try {
    return lex.getDef(nsid)
  } catch {
    return undefined
  }
}

// A call that should succeed; records the failure otherwise. Returns the data or undefined.
function expectOk(what, r) {
  if (
    !check(
      r.ok,
      r.http
        ? `${what}: expected success, got HTTP ${r.status} ${r.error ?? ''} ${r.message ?? ''} body ${show(r.http.text)}`
        : `${what}: expected success, got no HTTP response (${r.message ?? r.err})`,
    )
  )
    return undefined
  return r.data
}

// Checks that a raw response is an XRPC error body; returns the parsed body or undefined.
function checkErrorBody(what, exchange) {
  if (!check(exchange, `${what}: no HTTP response recorded`)) return undefined
  let body
  try {
    body = JSON.parse(exchange.text)
  } catch {
    check(false, `${what}: error body is not JSON: ${show(exchange.text)}`)
    return undefined
  }
  const okShape =
    body &&
    typeof body === 'object' &&
    !Array.isArray(body) &&
    typeof body.error === 'string' &&
    body.error.length > 0 &&
    (body.message === undefined || typeof body.message === 'string')
  check(okShape, `${what}: error body is not {"error": string, "message"?: string}: ${show(exchange.text)}`)
  check(
    /^application\/json\b/i.test(exchange.contentType),
    `${what}: error content-type is ${show(exchange.contentType)}, not application/json`,
  )
  return okShape ? body : undefined
}

// A call that should be refused with `status` (and, when given, XRPC error name `error`).
function expectRefusal(what, r, status, error) {
  if (!check(!r.ok, `${what}: expected HTTP ${status}${error ? ' ' + error : ''}, but it succeeded: ${show(r.data)}`))
    return
  check(
    r.status === status,
    `${what}: expected HTTP ${status}, got ${r.status} ${r.error ?? ''} body ${show(r.http?.text)}`,
  )
  const body = checkErrorBody(what, r.http)
  if (body && error) check(body.error === error, `${what}: expected error ${error}, got ${show(body.error)}`)
  // The client surfaces the same name.
  if (body) check(r.error === body.error, `${what}: client error name ${show(r.error)} != body error ${show(body.error)}`)
}

// Raw fetch of an XRPC method, bypassing the client.
async function rawXrpc(nsid, { method = 'GET', params, body, headers = {} } = {}) {
  const url = new URL(`/xrpc/${nsid}`, service)
  for (const [k, v] of Object.entries(params ?? {})) {
    for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(item))
  }
  const init = { method, headers: { ...headers } }
  if (body !== undefined) {
    init.body = JSON.stringify(body)
    init.headers['content-type'] = 'application/json'
  }
  const res = await fetch(url, init)
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', text: await res.text() }
}

function expectRawRefusal(what, exchange, status, error) {
  check(exchange.status === status, `${what}: expected HTTP ${status}, got ${exchange.status} body ${show(exchange.text)}`)
  const body = checkErrorBody(what, exchange)
  if (body && error) check(body.error === error, `${what}: expected error ${error}, got ${show(body.error)}`)
}

// ---------------------------------------------------------------------------------------------
// Auth

let serviceDid
let adminPassword
const accounts = {}

function basic(password = adminPassword) {
  return `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
}

async function bearer(name, lxm, { aud = serviceDid, exp, iat } = {}) {
  const acct = accounts[name]
  const jwt = await createServiceJwt({ iss: acct.did, aud, lxm, keypair: acct.keypair, exp, iat })
  return `Bearer ${jwt}`
}

async function as(name, lxm, extra) {
  return { authorization: name === 'admin' ? basic() : await bearer(name, lxm, extra) }
}

// ---------------------------------------------------------------------------------------------
// Domain helpers

const T = {
  repoRef: 'com.atproto.admin.defs#repoRef',
  strongRef: 'com.atproto.repo.strongRef',
  roleAdmin: 'tools.ozone.team.defs#roleAdmin',
  roleModerator: 'tools.ozone.team.defs#roleModerator',
  roleTriage: 'tools.ozone.team.defs#roleTriage',
  open: 'tools.ozone.moderation.defs#reviewOpen',
  escalated: 'tools.ozone.moderation.defs#reviewEscalated',
  closed: 'tools.ozone.moderation.defs#reviewClosed',
  ev: (name) => `tools.ozone.moderation.defs#${name}`,
}

function sameSubject(a, b) {
  if (!a || !b) return false
  if (b.$type === T.repoRef) return a.$type === T.repoRef && a.did === b.did
  if (b.$type === T.strongRef) return a.$type === T.strongRef && a.uri === b.uri && (!a.cid || a.cid === b.cid)
  return canon(a) === canon(b)
}

function subjectKey(subject) {
  return subject.$type === T.repoRef ? subject.did : subject.uri
}

async function queryStatuses(params, who = 'moderator') {
  const nsid = 'tools.ozone.moderation.queryStatuses'
  return xrpc(nsid, { params, headers: await as(who, nsid) }, (o) =>
    agent.tools.ozone.moderation.queryStatuses(params, o),
  )
}

// All statuses matching `params`, following cursors.
async function allStatuses(what, params) {
  const out = []
  let cursor
  for (let page = 0; page < 50; page++) {
    const data = expectOk(what, await queryStatuses({ ...params, limit: 100, ...(cursor ? { cursor } : {}) }))
    if (!data) return undefined
    out.push(...(data.subjectStatuses ?? []))
    cursor = data.cursor
    if (!cursor || (data.subjectStatuses ?? []).length === 0) break
  }
  return out
}

// The status of one subject (queried by its did / at-uri).
async function statusOf(what, subject) {
  const list = await allStatuses(what, { subject: subjectKey(subject) })
  if (!list) return undefined
  const found = list.filter((s) => sameSubject(s.subject, subject))
  check(found.length === 1, `${what}: expected one status for ${subjectKey(subject)}, got ${found.length}: ${show(list)}`)
  return found[0]
}

async function emit(who, event, subject, extra = {}) {
  const nsid = 'tools.ozone.moderation.emitEvent'
  const input = { event, subject, createdBy: accounts[who].did, ...extra }
  const r = await xrpc(nsid, { input, headers: await as(who, nsid) }, (o) =>
    agent.tools.ozone.moderation.emitEvent(input, o),
  )
  return r
}

// Emits an event that must succeed; checks the returned modEventView.
async function emitOk(what, who, event, subject, extra) {
  const data = expectOk(what, await emit(who, event, subject, extra))
  if (!data) return undefined
  check(Number.isInteger(data.id), `${what}: event id is not an integer: ${show(data.id)}`)
  check(data.event?.$type === event.$type, `${what}: event $type ${show(data.event?.$type)}, expected ${event.$type}`)
  check(data.createdBy === accounts[who].did, `${what}: createdBy ${show(data.createdBy)}, expected ${accounts[who].did}`)
  check(sameSubject(data.subject, subject), `${what}: subject ${show(data.subject)}, expected ${show(subject)}`)
  return data
}

async function report(who, input) {
  const nsid = 'com.atproto.moderation.createReport'
  return xrpc(nsid, { input, headers: await as(who, nsid) }, (o) => agent.com.atproto.moderation.createReport(input, o))
}

async function reportOk(what, who, input) {
  const data = expectOk(what, await report(who, input))
  if (!data) return undefined
  check(Number.isInteger(data.id), `${what}: id is not an integer: ${show(data.id)}`)
  check(data.reportedBy === accounts[who].did, `${what}: reportedBy ${show(data.reportedBy)}, expected ${accounts[who].did}`)
  check(sameSubject(data.subject, input.subject), `${what}: subject ${show(data.subject)}, expected ${show(input.subject)}`)
  check(data.reasonType === input.reasonType, `${what}: reasonType ${show(data.reasonType)}, expected ${input.reasonType}`)
  return data
}

async function queryEvents(params, who = 'moderator') {
  const nsid = 'tools.ozone.moderation.queryEvents'
  return xrpc(nsid, { params, headers: await as(who, nsid) }, (o) => agent.tools.ozone.moderation.queryEvents(params, o))
}

// Runs a scenario step; an exception ends the step (recorded) and the scenario goes on.
async function runStep(name, fn) {
  step = name
  log(name)
  try {
    await fn()
  } catch (err) {
    problem(`threw ${err?.stack ?? err}`)
  }
}

// ---------------------------------------------------------------------------------------------
// The scenario

async function scenario() {
  const subjectDid = accounts.subject.did
  const account = { $type: T.repoRef, did: subjectDid }
  const record = {
    $type: T.strongRef,
    uri: `at://${subjectDid}/app.bsky.feed.post/3kabcdefghi2a`,
    cid: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm',
  }
  const reports = [
    { who: 'reporter1', reasonType: 'com.atproto.moderation.defs#reasonSpam', reason: 'posts the same link everywhere' },
    { who: 'reporter2', reasonType: 'tools.ozone.report.defs#reasonHarassmentTroll', reason: 'trolls my replies' },
    { who: 'reporter3', reasonType: 'com.atproto.moderation.defs#reasonMisleading', reason: 'fake giveaway' },
  ]
  const appealReason = 'this was a mistake, please review'

  await runStep('step 1', async () => {
    const nsid = 'tools.ozone.server.getConfig'
    const data = expectOk(
      'getConfig as admin',
      await xrpc(nsid, { params: {}, headers: await as('admin') }, (o) => agent.tools.ozone.server.getConfig({}, o)),
    )
    if (data)
      check(data.viewer?.role === T.roleAdmin, `getConfig viewer.role: expected ${T.roleAdmin}, got ${show(data.viewer)}`)
  })

  await runStep('step 2', async () => {
    const add = async (who, role) => {
      const nsid = 'tools.ozone.team.addMember'
      const input = { did: accounts[who].did, role }
      return xrpc(nsid, { input, headers: await as('admin') }, (o) => agent.tools.ozone.team.addMember(input, o))
    }
    for (const [who, role] of [
      ['moderator', T.roleModerator],
      ['triage', T.roleTriage],
    ]) {
      const data = expectOk(`addMember ${who}`, await add(who, role))
      if (data) {
        check(data.did === accounts[who].did, `addMember ${who}: did ${show(data.did)}, expected ${accounts[who].did}`)
        check(data.role === role, `addMember ${who}: role ${show(data.role)}, expected ${role}`)
      }
    }
    const members = []
    let cursor
    for (let page = 0; page < 50; page++) {
      const nsid = 'tools.ozone.team.listMembers'
      const params = { limit: 100, ...(cursor ? { cursor } : {}) }
      const data = expectOk(
        'listMembers',
        await xrpc(nsid, { params, headers: await as('admin') }, (o) => agent.tools.ozone.team.listMembers(params, o)),
      )
      if (!data) break
      members.push(...(data.members ?? []))
      cursor = data.cursor
      if (!cursor || (data.members ?? []).length === 0) break
    }
    for (const [who, role] of [
      ['moderator', T.roleModerator],
      ['triage', T.roleTriage],
    ]) {
      const m = members.find((x) => x.did === accounts[who].did)
      check(m, `listMembers: ${who} (${accounts[who].did}) missing from ${show(members)}`)
      if (m) check(m.role === role, `listMembers: ${who} role ${show(m.role)}, expected ${role}`)
    }
    expectRefusal('addMember moderator again', await add('moderator', T.roleModerator), 400, 'MemberAlreadyExists')
  })

  await runStep('step 3', async () => {
    for (const rep of reports) {
      const input = { reasonType: rep.reasonType, reason: rep.reason, subject: account }
      rep.out = await reportOk(`report by ${rep.who} on the account`, rep.who, input)
    }
    await reportOk('report by reporter1 on the record', 'reporter1', {
      reasonType: 'com.atproto.moderation.defs#reasonSpam',
      reason: 'spam link in this post',
      subject: record,
    })
  })

  await runStep('step 4', async () => {
    const open = await allStatuses('queryStatuses reviewOpen', { reviewState: T.open })
    if (open) {
      for (const [label, subject] of [
        ['account', account],
        ['record', record],
      ]) {
        const s = open.find((x) => sameSubject(x.subject, subject))
        if (!check(s, `queryStatuses reviewOpen: ${label} subject missing from ${show(open)}`)) continue
        check(s.reviewState === T.open, `${label} status reviewState ${show(s.reviewState)}, expected ${T.open}`)
        check(typeof s.lastReportedAt === 'string' && s.lastReportedAt, `${label} status lastReportedAt not set: ${show(s)}`)
      }
      for (const s of open)
        check(s.reviewState === T.open, `queryStatuses reviewOpen returned a ${show(s.reviewState)} status: ${show(s.subject)}`)
    }
    const bySubject = await allStatuses('queryStatuses subject=did', { subject: subjectDid })
    if (bySubject) {
      check(
        bySubject.length === 1 && sameSubject(bySubject[0].subject, account),
        `queryStatuses subject=${subjectDid}: expected exactly the account status, got ${show(bySubject.map((s) => s.subject))}`,
      )
    }
  })

  await runStep('step 5', async () => {
    await emitOk('label', 'moderator', { $type: T.ev('modEventLabel'), createLabelVals: ['spam'], negateLabelVals: [] }, account)
    await emitOk('escalate', 'moderator', { $type: T.ev('modEventEscalate'), comment: 'looks like a spam ring' }, account)
    let s = await statusOf('status after escalate', account)
    if (s) check(s.reviewState === T.escalated, `status after escalate: reviewState ${show(s.reviewState)}, expected ${T.escalated}`)
    await emitOk('sticky comment', 'moderator', { $type: T.ev('modEventComment'), comment: 'keep an eye', sticky: true }, account)
    s = await statusOf('status after sticky comment', account)
    if (s) {
      check(s.comment === 'keep an eye', `status after sticky comment: comment ${show(s.comment)}, expected "keep an eye"`)
      check(s.reviewState === T.escalated, `status after sticky comment: reviewState ${show(s.reviewState)}, expected ${T.escalated}`)
    }
    await emitOk('tag add', 'moderator', { $type: T.ev('modEventTag'), add: ['spam-wave', 'ring'], remove: [] }, account)
    s = await statusOf('status after tag add', account)
    if (s) check(sameSet(s.tags ?? [], ['spam-wave', 'ring']), `tags after add: expected [spam-wave, ring], got ${show(s.tags)}`)
    await emitOk('tag remove', 'moderator', { $type: T.ev('modEventTag'), add: [], remove: ['ring'] }, account)
    s = await statusOf('status after tag remove', account)
    if (s) check(sameSet(s.tags ?? [], ['spam-wave']), `tags after remove: expected [spam-wave], got ${show(s.tags)}`)
    const tagged = await allStatuses('queryStatuses tags=[spam-wave]', { tags: ['spam-wave'] })
    if (tagged)
      check(
        tagged.some((x) => sameSubject(x.subject, account)),
        `queryStatuses tags=[spam-wave]: account missing from ${show(tagged.map((x) => x.subject))}`,
      )
    const untagged = await allStatuses('queryStatuses excludeTags=[spam-wave]', { excludeTags: ['spam-wave'] })
    if (untagged)
      check(
        !untagged.some((x) => sameSubject(x.subject, account)),
        `queryStatuses excludeTags=[spam-wave]: account present in ${show(untagged.map((x) => x.subject))}`,
      )
  })

  await runStep('step 6', async () => {
    expectRefusal(
      'triage takedown',
      await emit('triage', { $type: T.ev('modEventTakedown'), comment: 'triage should not' }, account),
      403,
    )
    expectRefusal(
      'triage label',
      await emit('triage', { $type: T.ev('modEventLabel'), createLabelVals: ['rude'], negateLabelVals: [] }, account),
      403,
    )
    await emitOk('triage acknowledge record', 'triage', { $type: T.ev('modEventAcknowledge'), comment: 'seen' }, record)
    const s = await statusOf('record status after acknowledge', record)
    if (s) check(s.reviewState === T.closed, `record status after acknowledge: reviewState ${show(s.reviewState)}, expected ${T.closed}`)
    // The refused takedown changed nothing.
    const a = await statusOf('account status after refused takedown', account)
    if (a) check(a.takendown !== true, `account is takendown after triage's refused takedown: ${show(a)}`)
  })

  await runStep('step 7', async () => {
    await emitOk('takedown', 'moderator', { $type: T.ev('modEventTakedown'), comment: 'spam ring' }, account)
    const s = await statusOf('status after takedown', account)
    if (s) {
      check(s.takendown === true, `status after takedown: takendown ${show(s.takendown)}, expected true`)
      check(s.reviewState === T.closed, `status after takedown: reviewState ${show(s.reviewState)}, expected ${T.closed}`)
    }
  })

  await runStep('step 8', async () => {
    await reportOk('appeal by the subject', 'subject', {
      reasonType: 'com.atproto.moderation.defs#reasonAppeal',
      reason: appealReason,
      subject: account,
    })
    const s = await statusOf('status after appeal', account)
    if (s) {
      check(s.appealed === true, `status after appeal: appealed ${show(s.appealed)}, expected true`)
      check(s.reviewState === T.escalated, `status after appeal: reviewState ${show(s.reviewState)}, expected ${T.escalated}`)
      check(typeof s.lastAppealedAt === 'string' && s.lastAppealedAt, `status after appeal: lastAppealedAt not set: ${show(s)}`)
      check(s.takendown === true, `status after appeal: takendown ${show(s.takendown)}, expected still true`)
    }
    expectRefusal(
      'appeal by reporter1 on the subject account',
      await report('reporter1', {
        reasonType: 'com.atproto.moderation.defs#reasonAppeal',
        reason: 'appealing for someone else',
        subject: account,
      }),
      // As Ozone: an appeal by another account is forbidden, not malformed.
      403,
    )
  })

  await runStep('step 9', async () => {
    await emitOk('resolve appeal', 'moderator', { $type: T.ev('modEventResolveAppeal'), comment: 'appeal reviewed' }, account)
    let s = await statusOf('status after resolveAppeal', account)
    if (s) check(s.appealed === false || s.appealed === undefined, `status after resolveAppeal: appealed ${show(s.appealed)}, expected false or absent`)
    await emitOk('reverse takedown', 'moderator', { $type: T.ev('modEventReverseTakedown'), comment: 'restored on appeal' }, account)
    s = await statusOf('status after reverseTakedown', account)
    if (s) {
      check(s.takendown === false, `status after reverseTakedown: takendown ${show(s.takendown)}, expected false`)
      check(s.reviewState === T.closed, `status after reverseTakedown: reviewState ${show(s.reviewState)}, expected ${T.closed}`)
    }
  })

  await runStep('step 10', async () => {
    const reporter3 = { $type: T.repoRef, did: accounts.reporter3.did }
    await emitOk('mute reporter3', 'moderator', { $type: T.ev('modEventMuteReporter'), durationInHours: 24 }, reporter3)
    await reportOk('muted reporter3 reports the record', 'reporter3', {
      reasonType: 'com.atproto.moderation.defs#reasonSpam',
      reason: 'still spam',
      subject: record,
    })
    const data = expectOk('queryEvents for the record', await queryEvents({ subject: record.uri, limit: 100 }))
    if (data) {
      const evs = (data.events ?? []).filter(
        (e) => e.event?.$type === T.ev('modEventReport') && e.createdBy === accounts.reporter3.did,
      )
      if (check(evs.length === 1, `queryEvents record: expected one report event by reporter3, got ${show(data.events)}`)) {
        check(
          evs[0].event.isReporterMuted === true,
          `report event by muted reporter3: isReporterMuted ${show(evs[0].event.isReporterMuted)}, expected true`,
        )
      }
    }
    const s = await statusOf('record status after muted report', record)
    if (s) check(s.reviewState === T.closed, `record status after muted report: reviewState ${show(s.reviewState)}, expected ${T.closed} (not re-opened)`)
  })

  let accountEvents
  await runStep('step 11', async () => {
    const expected = [
      'modEventReport',
      'modEventReport',
      'modEventReport',
      'modEventLabel',
      'modEventEscalate',
      'modEventComment',
      'modEventTag',
      'modEventTag',
      'modEventTakedown',
      'modEventReport',
      'modEventResolveAppeal',
      'modEventReverseTakedown',
    ].map(T.ev)
    const data = expectOk(
      'queryEvents subject asc',
      await queryEvents({ subject: subjectDid, sortDirection: 'asc', limit: 100 }),
    )
    if (!data) return
    const events = data.events ?? []
    accountEvents = events
    const types = events.map((e) => e.event?.$type)
    const short = (list) => `[${list.map((t) => String(t).replace('tools.ozone.moderation.defs#', '')).join(', ')}]`
    check(canon(types) === canon(expected), `queryEvents subject asc: event types ${short(types)}, expected ${short(expected)}`)
    for (const e of events) {
      if (!sameSubject(e.subject, account)) check(false, `queryEvents subject=${subjectDid}: event ${e.id} has subject ${show(e.subject)}`)
    }
    for (let i = 1; i < events.length; i++) {
      if (!(events[i - 1].createdAt <= events[i].createdAt))
        check(false, `queryEvents asc: createdAt out of order at ${i}: ${events[i - 1].createdAt} > ${events[i].createdAt}`)
    }
    check(new Set(events.map((e) => e.id)).size === events.length, `queryEvents asc: duplicate ids ${show(events.map((e) => e.id))}`)
    // The reports are the three reporters' then the appeal, with their reason types.
    const reportEvents = events.filter((e) => e.event?.$type === T.ev('modEventReport'))
    const expectReports = [
      ...reports.map((r) => ({ by: accounts[r.who].did, type: r.reasonType })),
      { by: subjectDid, type: 'com.atproto.moderation.defs#reasonAppeal' },
    ]
    check(
      canon(reportEvents.map((e) => ({ by: e.createdBy, type: e.event.reportType }))) === canon(expectReports),
      `report events: got ${show(reportEvents.map((e) => ({ by: e.createdBy, type: e.event.reportType })))}, expected ${show(expectReports)}`,
    )

    // Paging with limit 3 gives the same list, no duplicates.
    const paged = []
    let cursor
    let pages = 0
    for (; pages < 50; pages++) {
      const params = { subject: subjectDid, sortDirection: 'asc', limit: 3, ...(cursor ? { cursor } : {}) }
      const page = expectOk(`queryEvents page ${pages + 1}`, await queryEvents(params))
      if (!page) break
      check((page.events ?? []).length <= 3, `queryEvents page ${pages + 1}: ${page.events?.length} events with limit 3`)
      paged.push(...(page.events ?? []))
      cursor = page.cursor
      if (!cursor || (page.events ?? []).length === 0) break
    }
    check(pages < 50, 'queryEvents paging did not end after 50 pages')
    const ids = events.map((e) => e.id)
    const pagedIds = paged.map((e) => e.id)
    check(canon(pagedIds) === canon(ids), `queryEvents paged by 3: ids ${show(pagedIds)}, expected ${show(ids)}`)
    check(new Set(pagedIds).size === pagedIds.length, `queryEvents paged by 3: duplicate ids ${show(pagedIds)}`)

    // getEvent on the first one.
    if (events.length) {
      const first = events[0]
      const nsid = 'tools.ozone.moderation.getEvent'
      const params = { id: first.id }
      const detail = expectOk(
        'getEvent first',
        await xrpc(nsid, { params, headers: await as('moderator', nsid) }, (o) =>
          agent.tools.ozone.moderation.getEvent(params, o),
        ),
      )
      if (detail) {
        check(detail.id === first.id, `getEvent: id ${show(detail.id)}, expected ${first.id}`)
        check(canon(detail.event) === canon(first.event), `getEvent: event ${show(detail.event)}, expected ${show(first.event)}`)
        check(detail.createdBy === first.createdBy, `getEvent: createdBy ${show(detail.createdBy)}, expected ${first.createdBy}`)
        check(typeof detail.subject?.$type === 'string', `getEvent: subject has no $type: ${show(detail.subject)}`)
        check(Array.isArray(detail.subjectBlobs), `getEvent: subjectBlobs is not an array: ${show(detail.subjectBlobs)}`)
      }
    }
  })

  await runStep('step 12', async () => {
    const nsid = 'tools.ozone.moderation.getRepo'
    let params = { did: subjectDid }
    const data = expectOk(
      'getRepo subject',
      await xrpc(nsid, { params, headers: await as('moderator', nsid) }, (o) => agent.tools.ozone.moderation.getRepo(params, o)),
    )
    if (data) {
      check(data.did === subjectDid, `getRepo: did ${show(data.did)}, expected ${subjectDid}`)
      const st = data.moderation?.subjectStatus
      if (check(st, `getRepo: moderation.subjectStatus missing: ${show(data.moderation)}`))
        check(st.takendown === false, `getRepo: subjectStatus.takendown ${show(st.takendown)}, expected false`)
    }
    params = { did: 'did:plc:unknownunknownunknown00' }
    expectRefusal(
      'getRepo unknown did',
      await xrpc(nsid, { params, headers: await as('moderator', nsid) }, (o) => agent.tools.ozone.moderation.getRepo(params, o)),
      400,
      'RepoNotFound',
    )
  })

  await runStep('step 13', async () => {
    const qs = 'tools.ozone.moderation.queryStatuses'
    const params = { limit: 1 }
    const call = (headers) => xrpc(qs, { params, headers }, (o) => agent.tools.ozone.moderation.queryStatuses(params, o))

    const none = await rawXrpc(qs, { params })
    expectRawRefusal('raw queryStatuses without Authorization', none, 401)
    expectRefusal('queryStatuses without Authorization', await call({}), 401)
    expectRefusal('queryStatuses with wrong-aud JWT', await call(await as('moderator', qs, { aud: 'did:web:not-this-service.example' })), 401)
    expectRefusal('queryStatuses with getRepo lxm', await call(await as('moderator', 'tools.ozone.moderation.getRepo')), 401)
    const now = Math.floor(Date.now() / 1000)
    expectRefusal(
      'queryStatuses with expired JWT',
      await call(await as('moderator', qs, { iat: now - 120, exp: now - 60 })),
      401,
    )
    expectRawRefusal(
      'raw queryStatuses with expired JWT',
      await rawXrpc(qs, { params, headers: await as('moderator', qs, { iat: now - 120, exp: now - 60 }) }),
      401,
    )
    const badPw = await rawXrpc('tools.ozone.server.getConfig', { headers: { authorization: basic(`${adminPassword}-wrong`) } })
    expectRawRefusal('raw getConfig with wrong admin password', badPw, 401)
    expectRefusal('queryStatuses with wrong admin password', await call({ authorization: basic(`${adminPassword}-wrong`) }), 401)
    expectRefusal('queryStatuses by a non-member reporter', await call(await as('reporter1', qs)), 403)

    // emitEvent without subject.
    const ee = 'tools.ozone.moderation.emitEvent'
    const bad = { event: { $type: T.ev('modEventComment'), comment: 'no subject' }, createdBy: accounts.moderator.did }
    check(validate('input', ee, bad) !== null, 'the shared emitEvent lexicon accepts a body without subject')
    expectRefusal(
      'emitEvent without subject',
      await xrpc(ee, { input: bad, headers: await as('moderator', ee), expectInvalidInput: true }, (o) =>
        agent.tools.ozone.moderation.emitEvent(bad, o),
      ),
      400,
      'InvalidRequest',
    )
    expectRawRefusal(
      'raw emitEvent without subject',
      await rawXrpc(ee, { method: 'POST', body: bad, headers: await as('moderator', ee) }),
      400,
      'InvalidRequest',
    )
  })

  await runStep('step 14', async () => {
    const name = 'promo-domains-extra'
    const adminCall = async (nsid, fnName, { input, params }) =>
      xrpc(nsid, { input, params, headers: await as('admin') }, (o) =>
        agent.tools.ozone.set[fnName](input ?? params, o),
      )
    const upserted = expectOk(
      'upsertSet',
      await adminCall('tools.ozone.set.upsertSet', 'upsertSet', { input: { name, description: 'x' } }),
    )
    if (upserted) {
      check(upserted.name === name, `upsertSet: name ${show(upserted.name)}, expected ${name}`)
      check(upserted.description === 'x', `upsertSet: description ${show(upserted.description)}, expected "x"`)
    }
    expectOk(
      'addValues',
      await adminCall('tools.ozone.set.addValues', 'addValues', { input: { name, values: ['spam.example', 'scam.example'] } }),
    )
    const getValues = async (who) => {
      const nsid = 'tools.ozone.set.getValues'
      const params = { name, limit: 100 }
      return xrpc(nsid, { params, headers: await as(who, nsid) }, (o) => agent.tools.ozone.set.getValues(params, o))
    }
    let got = expectOk('getValues', await getValues('admin'))
    if (got) {
      check(sameSet(got.values, ['spam.example', 'scam.example']), `getValues: values ${show(got.values)}, expected [spam.example, scam.example]`)
      check(got.set?.name === name, `getValues: set.name ${show(got.set?.name)}, expected ${name}`)
      check(got.set?.setSize === 2, `getValues: set.setSize ${show(got.set?.setSize)}, expected 2`)
    }
    expectOk(
      'deleteValues',
      await adminCall('tools.ozone.set.deleteValues', 'deleteValues', { input: { name, values: ['scam.example'] } }),
    )
    got = expectOk('getValues after deleteValues', await getValues('admin'))
    if (got) check(sameSet(got.values, ['spam.example']), `getValues after deleteValues: values ${show(got.values)}, expected [spam.example]`)
    const qsParams = { limit: 100 }
    const sets = expectOk('querySets', await adminCall('tools.ozone.set.querySets', 'querySets', { params: qsParams }))
    if (sets) check((sets.sets ?? []).some((s) => s.name === name), `querySets: ${name} missing from ${show(sets.sets)}`)

    // A moderator can read sets.
    got = expectOk('getValues as moderator', await getValues('moderator'))
    if (got) check(sameSet(got.values, ['spam.example']), `getValues as moderator: values ${show(got.values)}, expected [spam.example]`)
    const nsid = 'tools.ozone.set.querySets'
    const modSets = expectOk(
      'querySets as moderator',
      await xrpc(nsid, { params: qsParams, headers: await as('moderator', nsid) }, (o) =>
        agent.tools.ozone.set.querySets(qsParams, o),
      ),
    )
    if (modSets) check((modSets.sets ?? []).some((s) => s.name === name), `querySets as moderator: ${name} missing`)

    // Clean up: deleteSet, after which the set is gone.
    expectOk('deleteSet', await adminCall('tools.ozone.set.deleteSet', 'deleteSet', { input: { name } }))
    expectRefusal('getValues after deleteSet', await getValues('admin'), 400, 'SetNotFound')
  })

  await runStep('step 15', async () => {
    const ev = { $type: T.ev('modEventComment'), comment: 'from the external system' }
    await emitOk('comment with externalId ext-1', 'moderator', ev, account, { externalId: 'ext-1' })
    expectRefusal(
      'second comment with externalId ext-1',
      await emit('moderator', ev, account, { externalId: 'ext-1' }),
      400,
      'DuplicateExternalId',
    )
  })
}

// ---------------------------------------------------------------------------------------------
// Setup

async function importAccounts(list) {
  for (const a of list) {
    if (!a || typeof a.name !== 'string' || typeof a.did !== 'string' || typeof a.key !== 'string')
      throw new Error(`ACCOUNTS entry is not {name, did, key}: ${show(a)}`)
    accounts[a.name] = { did: a.did, keypair: await Secp256k1Keypair.import(a.key.replace(/^0x/, '')) }
  }
}

async function main() {
  const lexDir = arg('--lexicons')
  if (!lexDir) {
    console.error('usage: node moderation.mjs --service URL --lexicons DIR   (or --selftest --lexicons DIR)')
    process.exit(64)
  }
  ;({ lex } = loadLexicons(lexDir))
  if (process.argv.includes('--selftest')) return selftest()

  service = arg('--service')
  serviceDid = process.env.SERVICE_DID
  adminPassword = process.env.ADMIN_PASSWORD
  const missing = [
    !service && '--service',
    !serviceDid && 'SERVICE_DID',
    adminPassword === undefined && 'ADMIN_PASSWORD',
    !process.env.ACCOUNTS && 'ACCOUNTS',
  ].filter(Boolean)
  if (missing.length) {
    console.error(`moderation.mjs: missing ${missing.join(', ')}`)
    process.exit(64)
  }
  try {
    await importAccounts(JSON.parse(process.env.ACCOUNTS))
  } catch (err) {
    problem(`ACCOUNTS: ${err.message}`)
    finish()
  }
  for (const name of ['reporter1', 'reporter2', 'reporter3', 'moderator', 'triage', 'subject'])
    check(accounts[name], `ACCOUNTS has no "${name}"`)
  if (problems.length) finish()

  agent = new AtpAgent({ service, fetch: recordingFetch })
  await scenario()
  finish()
}

// ---------------------------------------------------------------------------------------------
// Self test: the setup pieces and the client helpers, against a stub on 127.0.0.1.

async function selftest() {
  step = 'selftest'
  const names = ['reporter1', 'reporter2', 'reporter3', 'moderator', 'triage', 'subject']
  let list
  if (process.env.ACCOUNTS) {
    list = JSON.parse(process.env.ACCOUNTS)
  } else {
    list = []
    for (const name of names) {
      const kp = await Secp256k1Keypair.create({ exportable: true })
      list.push({ name, did: kp.did().replace('did:key:', 'did:example:'), key: Buffer.from(await kp.export()).toString('hex') })
    }
  }
  await importAccounts(list)
  serviceDid = process.env.SERVICE_DID ?? 'did:web:moderation.selftest.example'
  adminPassword = process.env.ADMIN_PASSWORD ?? 'selftest-password'

  check(safeDef('tools.ozone.moderation.emitEvent'), 'shared lexicons have no tools.ozone.moderation.emitEvent')
  check(safeDef('com.atproto.moderation.createReport'), 'shared lexicons have no com.atproto.moderation.createReport')

  // A service JWT: header, claims, and signature by the account's key.
  const lxm = 'tools.ozone.moderation.queryStatuses'
  const auth = await bearer('moderator', lxm)
  const jwt = auth.replace(/^Bearer /, '')
  const [h, p, sig] = jwt.split('.')
  const header = JSON.parse(Buffer.from(h, 'base64url').toString())
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString())
  check(header.alg === 'ES256K', `jwt alg ${header.alg}`)
  check(claims.iss === accounts.moderator.did, `jwt iss ${claims.iss}`)
  check(claims.aud === serviceDid, `jwt aud ${claims.aud}`)
  check(claims.lxm === lxm, `jwt lxm ${claims.lxm}`)
  check(claims.exp > Date.now() / 1000, `jwt exp ${claims.exp} not in the future`)
  check(
    await verifySignature(accounts.moderator.keypair.did(), Buffer.from(`${h}.${p}`), Buffer.from(sig, 'base64url')),
    'jwt signature does not verify',
  )
  const now = Math.floor(Date.now() / 1000)
  const expired = JSON.parse(
    Buffer.from((await bearer('moderator', lxm, { iat: now - 120, exp: now - 60 })).split('.')[1], 'base64url').toString(),
  )
  check(expired.exp === now - 60, `expired jwt exp ${expired.exp}`)

  // Request and response bodies against the shared lexicons.
  const subjectDid = accounts.subject.did
  check(
    validate('input', 'com.atproto.moderation.createReport', {
      reasonType: 'tools.ozone.report.defs#reasonHarassmentTroll',
      reason: 'x',
      subject: { $type: T.repoRef, did: subjectDid },
    }) === null,
    'a createReport body does not validate',
  )
  check(
    validate('input', 'tools.ozone.moderation.emitEvent', {
      event: { $type: T.ev('modEventTag'), add: ['a'], remove: [] },
      subject: { $type: T.strongRef, uri: `at://${subjectDid}/app.bsky.feed.post/3kabcdefghi2a`, cid: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm' },
      createdBy: accounts.moderator.did,
      externalId: 'ext-1',
    }) === null,
    'an emitEvent body does not validate',
  )
  check(
    validate('input', 'tools.ozone.moderation.emitEvent', { event: { $type: T.ev('modEventComment') }, createdBy: accounts.moderator.did }) !== null,
    'an emitEvent body without subject validates',
  )
  const status = {
    id: 1,
    subject: { $type: T.repoRef, did: subjectDid },
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    reviewState: T.open,
    lastReportedAt: '2026-01-01T00:00:00.000Z',
    tags: ['spam-wave'],
  }
  check(validate('output', 'tools.ozone.moderation.queryStatuses', { subjectStatuses: [status] }) === null, 'a queryStatuses body does not validate')
  check(validate('output', 'tools.ozone.moderation.queryStatuses', { subjectStatuses: [{ ...status, id: 'x' }] }) !== null, 'a bad queryStatuses body validates')

  // The helpers against a stub.
  const stub = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x')
    const send = (code, body, type = 'application/json') => {
      res.writeHead(code, { 'content-type': type })
      res.end(typeof body === 'string' ? body : JSON.stringify(body))
    }
    if (url.pathname === '/xrpc/tools.ozone.server.getConfig') {
      if (req.headers.authorization !== basic()) return send(401, { error: 'AuthenticationRequired', message: 'bad password' })
      return send(200, { viewer: { role: T.roleAdmin } })
    }
    if (url.pathname === '/xrpc/tools.ozone.moderation.queryStatuses') {
      if (!req.headers.authorization) return send(401, { error: 'AuthenticationRequired' })
      if (url.searchParams.get('limit') === '2') return send(200, { subjectStatuses: [{ id: 'not-an-integer' }] })
      return send(200, { subjectStatuses: [status] })
    }
    if (url.pathname === '/xrpc/tools.ozone.moderation.getRepo') return send(422, 'nope', 'text/plain')
    send(404, { error: 'MethodNotImplemented' })
  })
  await new Promise((resolve) => stub.listen(0, '127.0.0.1', resolve))
  service = `http://127.0.0.1:${stub.address().port}`
  agent = new AtpAgent({ service, fetch: recordingFetch })
  try {
    const saved = problems.length
    const cfg = await xrpc('tools.ozone.server.getConfig', { params: {}, headers: await as('admin') }, (o) =>
      agent.tools.ozone.server.getConfig({}, o),
    )
    check(cfg.ok && cfg.data.viewer.role === T.roleAdmin, `stub getConfig: ${show(cfg)}`)
    const bad = await xrpc('tools.ozone.server.getConfig', { params: {}, headers: { authorization: basic('wrong') } }, (o) =>
      agent.tools.ozone.server.getConfig({}, o),
    )
    check(!bad.ok && bad.status === 401 && bad.error === 'AuthenticationRequired', `stub getConfig wrong password: ${show(bad)}`)
    expectRefusal('stub refusal', bad, 401, 'AuthenticationRequired')
    const raw = await rawXrpc('tools.ozone.moderation.queryStatuses', { params: { limit: 1 } })
    expectRawRefusal('stub raw refusal', raw, 401)
    const qs = await queryStatuses({ limit: 1 })
    check(qs.ok && qs.data.subjectStatuses.length === 1, `stub queryStatuses: ${show(qs)}`)
    check(problems.length === saved, `helpers recorded problems on good exchanges: ${show(problems.slice(saved))}`)

    // Bad exchanges must be recorded: an invalid body, and a non-XRPC 422 refusal.
    const before = problems.length
    await queryStatuses({ limit: 2 })
    const invalidRecorded = problems.length > before
    const r422 = await xrpc('tools.ozone.moderation.getRepo', { params: { did: subjectDid }, headers: {} }, (o) =>
      agent.tools.ozone.moderation.getRepo({ did: subjectDid }, o),
    )
    expectRefusal('stub 422', r422, 400, 'RepoNotFound')
    const recorded = problems.splice(before)
    check(invalidRecorded, 'an invalid response body was not recorded')
    check(r422.status === 422, `raw status not kept: ${r422.status}`)
    check(recorded.some((x) => x.includes('expected HTTP 400, got 422')), `422 not reported: ${show(recorded)}`)
    check(recorded.some((x) => x.includes('error body is not JSON')), `non-JSON error body not reported: ${show(recorded)}`)
  } finally {
    stub.close()
  }
  finish()
}

await main()
