#!/usr/bin/env node
// A JS socket (the original's PeerRelay.Socket, peer-relay 0.0.2) behind a JSON-lines
// contract, so the interop tests can drive it against the Rust `Socket`.
//
//   node socket.js [--port PORT] [--bootstrap URL]... [--bind PORT] [--no-populate]
//
// stdout, one JSON object per line:
//   {"event":"ready","id":"<hex>","url":"ws://..."|null,"address":{address,port,family}}
//   {"event":"listening","address":{address,port,family}}
//   {"event":"message","data":"<hex bytes>","rinfo":{address,port,family}}
//   {"event":"error","message":"..."}
//   {"event":"close"}
// stdin, one JSON object per line:
//   {"cmd":"send","to":"<hex id>","port":N,"data":"<hex bytes>"}
//       -> socket.send(buf, 0, buf.length, port, to), the original's full signature
//   {"cmd":"close"}   and EOF: socket.close(), exit 0 after its `close` event
'use strict'

const readline = require('readline')
const PeerRelay = require('peer-relay')

function usage (message) {
  process.stderr.write(`socket.js: ${message}\n` +
    'usage: node socket.js [--port PORT] [--bootstrap URL]... [--bind PORT] [--no-populate]\n')
  process.exit(2)
}

function parsePort (text) {
  const port = Number(text)
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad port ${text}`)
  return port
}

const opts = { port: undefined, bootstrap: [], bind: undefined }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i]
  if (arg === '--port') opts.port = parsePort(argv[++i])
  else if (arg === '--bootstrap') opts.bootstrap.push(argv[++i] || usage('--bootstrap needs a url'))
  else if (arg === '--bind') opts.bind = parsePort(argv[++i])
  // Off: the original's automatic linking to discovered peers, so a chain stays a chain.
  else if (arg === '--no-populate') PeerRelay.prototype._populate = function () {}
  else usage(`unknown argument ${arg}`)
}

const HEX_ID = /^[0-9a-fA-F]{40}$/

function emit (line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}
function error (message) {
  emit({ event: 'error', message: String(message) })
}

process.on('uncaughtException', (err) => {
  error('uncaught exception: ' + (err && err.stack ? err.stack : err))
  process.exit(1)
})

const socket = new PeerRelay.Socket({ port: opts.port, bootstrap: opts.bootstrap })
const id = socket.peer.id.toString('hex')

// Events are held until `ready` is out, which is always the first line.
let readySent = false
const held = []
function later (line) {
  if (readySent) emit(line)
  else held.push(line)
}

socket.on('message', (buf, rinfo) => later({ event: 'message', data: buf.toString('hex'), rinfo }))
socket.on('listening', () => later({ event: 'listening', address: socket.address() }))
socket.on('error', (err) => later({ event: 'error', message: String(err) }))
socket.on('close', () => {
  later({ event: 'close' })
  setImmediate(() => process.exit(0))
})
if (opts.bind !== undefined) socket.bind(opts.bind)

function ready (url) {
  emit({ event: 'ready', id, url: url || null, address: socket.address() })
  readySent = true
  for (const line of held.splice(0)) emit(line)
}

if (opts.port === undefined) {
  setImmediate(() => ready(null))
} else {
  const server = socket.peer.wsConnector._wss
  server.on('listening', () => ready(socket.peer.wsConnector.url))
  server.on('error', (err) => {
    error('cannot listen: ' + err.message)
    process.exit(1)
  })
}

let closing = false
function close () {
  if (closing) return
  closing = true
  // The original's close() calls peer.destroy() without a callback, and its WsConnector then
  // calls that missing callback when it runs no server ("TypeError: cb is not a function").
  // Destroying the peer first with a callback avoids the crash; close() skips the second
  // destroy and emits `close` as usual.
  if (!socket.peer.wsConnector._wss) socket.peer.destroy(() => {})
  socket.close()
}

function command (line) {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    return error('malformed command: ' + err.message)
  }
  if (cmd === null || typeof cmd !== 'object') return error('malformed command: not an object')
  switch (cmd.cmd) {
    case 'send': {
      if (typeof cmd.to !== 'string' || !HEX_ID.test(cmd.to)) return error('`send` needs `to`')
      if (typeof cmd.data !== 'string') return error('`send` needs hex `data`')
      const buf = Buffer.from(cmd.data, 'hex')
      socket.send(buf, 0, buf.length, cmd.port | 0, cmd.to.toLowerCase())
      break
    }
    case 'close':
      close()
      break
    default:
      error(`unknown command ${JSON.stringify(cmd.cmd)}`)
  }
}

const input = readline.createInterface({ input: process.stdin })
input.on('line', command)
input.on('close', close)
