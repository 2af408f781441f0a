#!/usr/bin/env node
// A JS peer (the original peer-relay 0.0.2) behind the same JSON-lines contract as the Rust
// `peer-relay --json` binary, so tests drive both the same way.
//
//   node peer.js [PORT [URL...]] [--port PORT] [--bootstrap URL]... [--no-populate] [--wrtc]
//
// stdout: {"event":"ready"|"peer"|"peer-removed"|"message"|"error", ...} one per line
// stdin:  {"cmd":"send"|"connect"|"disconnect"|"destroy", ...} one per line; EOF = destroy
//
// --no-populate switches off the original's automatic linking to discovered peers (its
// `_populate`), so that a chain A - B - C stays a chain. --wrtc gives the original
// `@roamhq/wrtc` as its `wrtc` option, so it links over WebRTC. Nothing else is changed.
// `peer` lines say the link's transport and `message` lines the envelope's path length (1 =
// direct), read from the original's own objects.
'use strict'

const readline = require('readline')
const PeerRelay = require('peer-relay')
const Router = require('peer-relay/lib/router')

// The path length of the envelope being delivered: the router emits `message` synchronously
// from `_onMessage`, so the envelope seen last is the one delivered.
let lastPathLen = null
const routerOnMessage = Router.prototype._onMessage
Router.prototype._onMessage = function (msg) {
  lastPathLen = msg && Array.isArray(msg.path) ? msg.path.length : null
  return routerOnMessage.call(this, msg)
}

function usage (message) {
  process.stderr.write(`peer.js: ${message}\n` +
    'usage: node peer.js [PORT [URL...]] [--port PORT] [--bootstrap URL]... [--no-populate] [--wrtc]\n')
  process.exit(2)
}

function parseArgs (argv) {
  const opts = { port: undefined, bootstrap: [], populate: true, wrtc: false }
  const positional = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--port') opts.port = parsePort(argv[++i])
    else if (arg === '--bootstrap') opts.bootstrap.push(argv[++i] || usage('--bootstrap needs a url'))
    else if (arg === '--no-populate') opts.populate = false
    else if (arg === '--wrtc') opts.wrtc = true
    else if (arg === '--json') continue // always JSON; accepted for symmetry with the Rust CLI
    else if (arg.startsWith('--')) usage(`unknown flag ${arg}`)
    else positional.push(arg)
  }
  if (positional.length > 0) {
    if (opts.port !== undefined) usage('PORT given twice')
    opts.port = parsePort(positional[0])
    opts.bootstrap = positional.slice(1).concat(opts.bootstrap)
  }
  return opts
}

function parsePort (text) {
  const port = Number(text)
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad port ${text}`)
  return port
}

const HEX_ID = /^[0-9a-fA-F]{40}$/

const opts = parseArgs(process.argv.slice(2))
if (!opts.populate) PeerRelay.prototype._populate = function () {}

// Nothing but `ready` may come first: hold events until it is out.
let readySent = false
const held = []
function emit (line) {
  if (!readySent && line.event !== 'ready') {
    held.push(line)
    return
  }
  process.stdout.write(JSON.stringify(line) + '\n')
}
function ready (url) {
  emit({ event: 'ready', id: peer.id.toString('hex'), url: url || null })
  readySent = true
  for (const line of held.splice(0)) emit(line)
}
function error (message) {
  emit({ event: 'error', message: String(message) })
}

// A throw inside the original (e.g. on a frame it cannot handle) would crash a real JS node:
// report it and die the same way, so a test notices.
process.on('uncaughtException', (err) => {
  error('uncaught exception: ' + (err && err.stack ? err.stack : err))
  process.exit(1)
})

const peer = new PeerRelay({
  port: opts.port,
  bootstrap: opts.bootstrap,
  wrtc: opts.wrtc ? require('@roamhq/wrtc') : undefined
})

function transportOf (id) {
  const channel = peer.peers.get(id)
  return channel && channel._sp ? 'webrtc' : 'websocket'
}
peer.on('peer', (id) => emit({ event: 'peer', id: id.toString('hex'), transport: transportOf(id) }))
peer.on('message', (data, from) => emit({
  event: 'message', from: from.toString('hex'), data: data, path_len: lastPathLen
}))
// The original emits nothing when a link closes; its routing table does.
peer.peers.on('removed', (channel) => emit({ event: 'peer-removed', id: channel.id.toString('hex') }))

if (opts.port === undefined) {
  setImmediate(() => ready(null))
} else {
  const server = peer.wsConnector._wss
  server.on('listening', () => ready(peer.wsConnector.url))
  server.on('error', (err) => {
    error('cannot listen: ' + err.message)
    process.exit(1)
  })
}

let destroying = false
function destroy () {
  if (destroying) return
  destroying = true
  peer.destroy(() => setImmediate(() => process.exit(0)))
}

function command (line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    return error('malformed command: ' + err.message)
  }
  if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) {
    return error('malformed command: not an object')
  }
  const id = (field) => {
    const value = cmd[field]
    if (typeof value !== 'string' || !HEX_ID.test(value)) {
      throw new Error(`\`${cmd.cmd}\` needs \`${field}\`: 40 hex characters`)
    }
    return Buffer.from(value, 'hex')
  }
  try {
    switch (cmd.cmd) {
      case 'send':
        if (!('data' in cmd)) throw new Error('`send` needs `data`')
        peer.send(id('to'), cmd.data)
        break
      case 'connect':
        peer.connect(id('id'))
        break
      case 'disconnect':
        peer.disconnect(id('id'))
        break
      case 'destroy':
        destroy()
        break
      default:
        throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`)
    }
  } catch (err) {
    error(err.message)
  }
}

const input = readline.createInterface({ input: process.stdin, terminal: false })
input.on('line', (line) => {
  if (line.trim() !== '') command(line)
})
input.on('close', destroy)
