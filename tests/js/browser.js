#!/usr/bin/env node
// A browser peer: the original peer-relay 0.0.2's bundle.js in a page of Debian's Chromium
// (driven by playwright-core; no browser is downloaded), behind the same JSON-lines contract
// as peer.js and the Rust `peer-relay --json` binary.
//
//   node browser.js [--bootstrap URL]... [--no-populate]
//
// The page has no server (browsers only dial out); it links to others over WebRTC through
// simple-peer, with the signals relayed through the network. One shim: simple-peer 6.4.4
// calls the callback form `pc.getStats(callback)`, which Chromium removed (it throws, so
// `connect` is never emitted); that call is answered with an empty report. Nothing else of
// the original is changed.
//
// stdout: {"event":"ready"|"peer"|"peer-removed"|"message"|"error", ...} one per line
// stdin:  {"cmd":"send"|"connect"|"disconnect"|"destroy", ...} one per line; EOF = destroy
'use strict'

const fs = require('fs')
const http = require('http')
const os = require('os')
const path = require('path')
const readline = require('readline')
const { chromium } = require('playwright-core')

const CHROMIUM = process.env.PEER_RELAY_CHROMIUM || '/usr/bin/chromium'
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

function usage (message) {
  process.stderr.write(`browser.js: ${message}\n` +
    'usage: node browser.js [--bootstrap URL]... [--no-populate]\n')
  process.exit(2)
}

const opts = { bootstrap: [], populate: true }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i]
  if (arg === '--bootstrap') opts.bootstrap.push(argv[++i] || usage('--bootstrap needs a url'))
  else if (arg === '--no-populate') opts.populate = false
  else if (arg === '--json' || arg === '--wrtc') continue // always JSON; always WebRTC
  else usage(`unknown argument ${arg}`)
}

function emit (line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}
function error (message) {
  emit({ event: 'error', message: String(message) })
}

// Runs in the page before any of its scripts.
function shim () {
  const getStats = RTCPeerConnection.prototype.getStats
  RTCPeerConnection.prototype.getStats = function (selector, ...rest) {
    if (typeof selector === 'function') {
      setTimeout(() => selector({ result: () => [] }), 0)
      return Promise.resolve()
    }
    return getStats.call(this, selector, ...rest)
  }
}

// Runs in the page: starts the peer and reports through window.__emit.
function start (opts) {
  /* global PeerRelay */
  if (!opts.populate) PeerRelay.prototype._populate = function () {}
  const peer = new PeerRelay({ bootstrap: opts.bootstrap })
  window.__peer = peer
  let lastPathLen = null
  const onMessage = peer.router._onMessage
  peer.router._onMessage = function (msg) {
    lastPathLen = msg && Array.isArray(msg.path) ? msg.path.length : null
    return onMessage.call(this, msg)
  }
  const hex = (id) => id.toString('hex')
  const transportOf = (id) => {
    const channel = peer.peers.get(id)
    return channel && channel._sp ? 'webrtc' : 'websocket'
  }
  peer.on('peer', (id) => window.__emit({ event: 'peer', id: hex(id), transport: transportOf(id) }))
  peer.on('message', (data, from) => window.__emit({
    event: 'message', from: hex(from), data: data, path_len: lastPathLen
  }))
  peer.peers.on('removed', (channel) => window.__emit({ event: 'peer-removed', id: hex(channel.id) }))
  window.__command = function (cmd) {
    const id = (value) => {
      if (typeof value !== 'string' || !/^[0-9a-fA-F]{40}$/.test(value)) {
        throw new Error(`\`${cmd.cmd}\` needs 40 hex characters`)
      }
      return peer.id.constructor.from(value, 'hex')
    }
    switch (cmd.cmd) {
      case 'send': peer.send(id(cmd.to), cmd.data); break
      case 'connect': peer.connect(id(cmd.id)); break
      case 'disconnect': peer.disconnect(id(cmd.id)); break
      default: throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`)
    }
  }
  return hex(peer.id)
}

async function main () {
  const bundle = fs.readFileSync(require.resolve('peer-relay/bundle.js'))
  const page = '<!doctype html><meta charset="utf-8"><title>peer-relay</title>' +
    '<script src="/bundle.js"></script>'
  // Served from loopback: a secure context, and the page may open ws://127.0.0.1 sockets.
  const server = http.createServer((req, res) => {
    if (req.url === '/bundle.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' })
      res.end(bundle)
    } else {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end(page)
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-relay-chromium-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS
  })
  let closing = false
  async function close (status) {
    if (closing) return
    closing = true
    await context.close().catch(() => {})
    server.close()
    fs.rmSync(profile, { recursive: true, force: true })
    process.exit(status)
  }
  const tab = context.pages()[0] || await context.newPage()
  tab.on('pageerror', (err) => error('uncaught exception: ' + (err && err.stack ? err.stack : err)))
  tab.on('console', (msg) => {
    if (msg.type() === 'error') process.stderr.write(`page: ${msg.text()}\n`)
  })
  await tab.exposeFunction('__emit', (line) => emit(line))
  await tab.addInitScript(shim)
  await tab.goto(`http://127.0.0.1:${server.address().port}/`)
  const id = await tab.evaluate(start, opts)
  emit({ event: 'ready', id: id, url: null })

  const input = readline.createInterface({ input: process.stdin, terminal: false })
  input.on('line', async (line) => {
    if (line.trim() === '') return
    let cmd
    try {
      cmd = JSON.parse(line)
    } catch (err) {
      return error('malformed command: ' + err.message)
    }
    if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) {
      return error('malformed command: not an object')
    }
    if (cmd.cmd === 'destroy') {
      await tab.evaluate(() => new Promise((resolve) => window.__peer.destroy(resolve)))
        .catch(() => {})
      return close(0)
    }
    try {
      await tab.evaluate((cmd) => window.__command(cmd), cmd)
    } catch (err) {
      error(err.message)
    }
  })
  input.on('close', () => close(0))
}

main().catch((err) => {
  error('uncaught exception: ' + (err && err.stack ? err.stack : err))
  process.exit(1)
})
