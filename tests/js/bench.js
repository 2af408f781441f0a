#!/usr/bin/env node
// The end peers of the relay benchmark's JS chain, A -> B -> C (B is a plain `peer.js
// --no-populate`). Original peer-relay 0.0.2 with automatic linking switched off, so A never
// links C directly.
//
//   node bench.js sink   --bootstrap URL --count N
//   node bench.js source --bootstrap URL --count N --to HEX
//
// Both print {"event":"ready","id":...} and {"event":"peer","id":...} lines. The source sends
// N `user` messages {"seq":i,"pad":"..."} to HEX as fast as it can once it is linked and
// prints {"event":"started","at":ms}. The sink prints {"event":"done",...} once it has N
// distinct messages, or on any stdin line (the harness gave up waiting).
'use strict'

const readline = require('readline')
const PeerRelay = require('peer-relay')

PeerRelay.prototype._populate = function () {}

const args = process.argv.slice(2)
const role = args[0]
function flag (name) {
  const at = args.indexOf(name)
  return at === -1 ? undefined : args[at + 1]
}
const count = Number(flag('--count'))
const bootstrap = flag('--bootstrap')
if ((role !== 'sink' && role !== 'source') || !(count > 0) || !bootstrap) {
  process.stderr.write('usage: node bench.js sink|source --bootstrap URL --count N [--to HEX]\n')
  process.exit(2)
}

// Wall-clock milliseconds with sub-millisecond precision, comparable across processes.
const now = () => performance.timeOrigin + performance.now()
const emit = (line) => process.stdout.write(JSON.stringify(line) + '\n')

const peer = new PeerRelay({ bootstrap: [bootstrap] })
process.stdin.resume()
emit({ event: 'ready', id: peer.id.toString('hex'), url: null })

if (role === 'sink') {
  const seen = new Uint8Array(count)
  let distinct = 0
  let duplicates = 0
  let first = null
  let last = null
  let reported = false
  const report = () => {
    if (reported) return
    reported = true
    emit({ event: 'done', received: distinct, duplicates, first, last })
  }
  peer.on('peer', (id) => emit({ event: 'peer', id: id.toString('hex') }))
  peer.on('message', (data) => {
    last = now()
    if (first === null) first = last
    const seq = data && data.seq
    if (!Number.isInteger(seq) || seq < 0 || seq >= count) return
    if (seen[seq]) {
      duplicates++
      return
    }
    seen[seq] = 1
    if (++distinct === count) report()
  })
  readline.createInterface({ input: process.stdin }).on('line', report)
} else {
  const to = Buffer.from(flag('--to'), 'hex')
  const pad = 'x'.repeat(40)
  peer.on('peer', (id) => {
    emit({ event: 'peer', id: id.toString('hex') })
    emit({ event: 'started', at: now() })
    for (let seq = 0; seq < count; seq++) peer.send(to, { seq, pad })
  })
}

process.stdin.on('end', () => process.exit(0))
