#!/usr/bin/env node
// js-libp2p 2.x peer program for libp2p_stream_sync interop tests.
//
// Command-line contract (same as ../py/peer.py):
//
//   listen --muxer yamux|mplex [--perf] [--autonat] [--timeout S]
//       (--autonat: also serve @libp2p/autonat's /libp2p/autonat/1.0.0.)
//       Listen on /ip4/127.0.0.1/tcp/0 (the chosen security + muxer), print
//       exactly one line "LISTEN <multiaddr>/p2p/<peerid>" and serve
//       /echo/1.0.0, /ipfs/ping/1.0.0, identify and /perf/1.0.0 until stdin
//       closes, SIGTERM or SIGINT arrives, or --timeout seconds pass (0 = no
//       limit); exit 0.
//   echo <ma> --muxer M --bytes N --streams K [--lockstep] [--chunk C]
//   ping <ma> --muxer M
//   id   <ma> --muxer M
//   perf <ma> --muxer M --upload N --download M
//   open <ma> --muxer M --protocol P
//   opens <ma> --muxer M [--concurrency K] [--seconds S]     (bench/run.py)
//   rtt   <ma> --muxer M [--count N] [--size B]              (bench/run.py)
//
// opens and rtt speak bench/run.py's line protocol instead of printing one
// result line: after dialing and a warm-up they print "READY" and wait for a
// line on stdin; "go" runs one measurement and prints "RUN key=value ..."
// (then READY again), "quit" or EOF ends. opens: K concurrent loops of open
// /echo/1.0.0 + write 1 byte + read it back + close for S seconds; rtt: N
// round trips of B bytes on one open echo stream. Both report their own
// process's CPU and context switches (process.resourceUsage()) for the run.
//
// Circuit relay v2 (@libp2p/circuit-relay-v2): `listen --relay` also serves
// the hop protocol (a relay with js's default limits); `listen --via <relay
// ma>` reserves a slot on that relay and prints its relayed address
// "LISTEN <relay ma>/p2p-circuit/p2p/<peerid>" instead; a client given a
// /p2p-circuit multiaddr dials through the relay. Streams may run on limited
// (relayed) connections.
//
// Every command also takes --transport tcp|ws|quic (default tcp; listen then
// uses /ip4/127.0.0.1/tcp/0/ws or /ip4/127.0.0.1/udp/0/quic-v1) and
// --security noise|tls (default noise; QUIC brings its own TLS 1.3, so
// --security and --muxer do not change a QUIC connection).
//
// Client commands print one result line on stdout: "OK ..." (exit 0),
// "UNSUPPORTED <protocol>" (exit 3, `open` only) or "FAIL <reason>" (exit 1).
// Every client command has an overall --timeout (default 60 s).
// Diagnostics go to stderr.

// ---------------------------------------------------------------------------
// Node 20 polyfill: a transitive dependency of js-libp2p 2.x calls
// Promise.withResolvers (Node >= 22).  It must be installed before libp2p is
// loaded, hence the dynamic imports below (static imports are hoisted).
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { webSockets } = await import('@libp2p/websockets')
const { quic } = await import('@chainsafe/libp2p-quic')
const { noise } = await import('@chainsafe/libp2p-noise')
const { tls } = await import('@libp2p/tls')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { mplex } = await import('@libp2p/mplex')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { circuitRelayServer, circuitRelayTransport } = await import('@libp2p/circuit-relay-v2')
const { autoNAT } = await import('@libp2p/autonat')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')
const crypto = await import('node:crypto')

const EXIT_OK = 0
const EXIT_FAIL = 1
const EXIT_UNSUPPORTED = 3

const ECHO_PROTOCOL = '/echo/1.0.0'
const PERF_PROTOCOL = '/perf/1.0.0'
// --transport -> [listen address, libp2p transport factory]
const TRANSPORTS = {
  tcp: ['/ip4/127.0.0.1/tcp/0', () => tcp()],
  ws: ['/ip4/127.0.0.1/tcp/0/ws', () => webSockets()],
  quic: ['/ip4/127.0.0.1/udp/0/quic-v1', () => quic()]
}
const SECURITY = { noise: () => noise(), tls: () => tls() }
const PERF_BLOCK = 65536
const STREAM_LIMIT = 1024

function out (line) {
  process.stdout.write(line + '\n')
}

function err (msg) {
  process.stderr.write(`[js-peer] ${msg}\n`)
}

function oneLine (e) {
  const text = (e != null && e.message != null) ? `${e.name ?? 'Error'}: ${e.message}` : String(e)
  return text.split(/\s+/).join(' ').trim() || 'error'
}

function finish (code, line) {
  if (line != null) out(line)
  // stdout/stderr writes to pipes and files are synchronous on Linux.
  process.exit(code)
}

// --------------------------------- args ----------------------------------

const USAGE = `usage (every command also takes --transport tcp|ws|quic --security noise|tls):
  peer.mjs listen --muxer yamux|mplex [--perf] [--autonat] [--timeout S]
  peer.mjs echo <multiaddr> --muxer M --bytes N --streams K [--lockstep] [--chunk C] [--timeout S]
  peer.mjs ping <multiaddr> --muxer M [--timeout S]
  peer.mjs id   <multiaddr> --muxer M [--timeout S]
  peer.mjs perf <multiaddr> --muxer M --upload N --download M [--timeout S]
  peer.mjs open <multiaddr> --muxer M --protocol P [--timeout S]
  peer.mjs opens <multiaddr> --muxer M [--concurrency K] [--seconds S]
  peer.mjs rtt <multiaddr> --muxer M [--count N] [--size B]
  listen also takes --relay (serve circuit relay v2) or --via <relay multiaddr>`

function usage (msg) {
  process.stderr.write(`peer.mjs: ${msg}\n${USAGE}\n`)
  process.exit(2)
}

function parseArgs (argv) {
  const cmd = argv[0]
  const commands = ['listen', 'echo', 'ping', 'id', 'perf', 'open', 'opens', 'rtt']
  if (!commands.includes(cmd)) usage(`unknown command ${cmd}`)
  const flags = { lockstep: false, perf: false, relay: false, autonat: false }
  const positional = []
  const valued = new Set(['--muxer', '--bytes', '--streams', '--chunk', '--upload', '--download', '--protocol', '--timeout', '--transport', '--security', '--via', '--concurrency', '--seconds', '--count', '--size'])
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--lockstep') flags.lockstep = true
    else if (a === '--perf') flags.perf = true
    else if (a === '--relay') flags.relay = true
    else if (a === '--autonat') flags.autonat = true
    else if (valued.has(a)) {
      if (i + 1 >= argv.length) usage(`${a} needs a value`)
      flags[a.slice(2)] = argv[++i]
    } else if (a.startsWith('--')) usage(`unknown option ${a}`)
    else positional.push(a)
  }
  const int = (name, dflt) => {
    if (flags[name] == null) {
      if (dflt === undefined) usage(`--${name} is required for ${cmd}`)
      return dflt
    }
    const v = Number(flags[name])
    if (!Number.isSafeInteger(v) || v < 0) usage(`--${name} must be a non-negative integer`)
    return v
  }
  const args = { cmd }
  if (flags.muxer !== 'yamux' && flags.muxer !== 'mplex') usage('--muxer yamux|mplex is required')
  args.muxer = flags.muxer
  args.transport = flags.transport ?? 'tcp'
  if (!(args.transport in TRANSPORTS)) usage('--transport must be tcp, ws or quic')
  args.security = flags.security ?? 'noise'
  if (!(args.security in SECURITY)) usage('--security must be noise or tls')
  const t = Number(flags.timeout ?? (['listen', 'opens', 'rtt'].includes(cmd) ? 0 : 60))
  if (!Number.isFinite(t) || t < 0) usage('--timeout must be a number of seconds')
  args.timeout = t
  if (cmd === 'listen') {
    if (positional.length !== 0) usage('listen takes no positional arguments')
    args.relay = flags.relay
    args.via = flags.via
    args.autonat = flags.autonat
    return args
  }
  if (positional.length !== 1) usage(`${cmd} needs exactly one multiaddr`)
  args.multiaddr = positional[0]
  if (cmd === 'echo') {
    args.bytes = int('bytes')
    args.streams = int('streams', 1)
    args.lockstep = flags.lockstep
    args.chunk = Math.max(1, int('chunk', 16384))
  } else if (cmd === 'perf') {
    args.upload = int('upload')
    args.download = int('download')
  } else if (cmd === 'open') {
    if (flags.protocol == null) usage('--protocol is required for open')
    args.protocol = flags.protocol
  } else if (cmd === 'opens') {
    args.concurrency = Math.max(1, int('concurrency', 1))
    args.seconds = Number(flags.seconds ?? 2)
    if (!(args.seconds > 0)) usage('--seconds must be a positive number')
  } else if (cmd === 'rtt') {
    args.count = Math.max(1, int('count', 2000))
    args.size = Math.max(1, int('size', 16))
  }
  return args
}

// --------------------------------- node ----------------------------------

async function makeNode (args, listen) {
  const [listenAddr, transport] = TRANSPORTS[args.transport]
  const listenAddrs = listen ? [listenAddr] : []
  if (args.via != null) listenAddrs.push(`${args.via}/p2p-circuit`)
  // Circuit relay client: to listen via a relay, or to dial a relayed address.
  const circuit = args.via != null || (args.multiaddr ?? '').includes('/p2p-circuit')
  const services = { identify: identify(), ping: ping() }
  if (args.relay) services.relay = circuitRelayServer()
  if (args.autonat) services.autonat = autoNAT()
  return createLibp2p({
    addresses: { listen: listenAddrs },
    // Exactly one transport, security and muxer (QUIC uses neither of the
    // latter two: it has its own TLS 1.3 and streams).
    transports: circuit ? [transport(), circuitRelayTransport()] : [transport()],
    connectionEncrypters: [SECURITY[args.security]()],
    streamMuxers: [args.muxer === 'yamux' ? yamux() : mplex()],
    services,
    connectionManager: {
      // Loopback only; never rate-limit the test's own connections.
      allow: ['/ip4/127.0.0.1'],
      inboundConnectionThreshold: 10000,
      maxIncomingPendingConnections: 1000
    }
  })
}

// ------------------------------- handlers --------------------------------

function handleEcho ({ stream }) {
  // Echo every byte until the remote half-closes its write side, then close.
  stream.sink(stream.source).catch(e => {
    err(`echo handler: ${oneLine(e)}`)
    stream.abort(e)
  })
}

async function handlePerf ({ stream }) {
  // libp2p/specs perf/perf.md, server side.
  try {
    let header = new Uint8Array(0)
    let bytesToSend = null
    for await (const chunk of stream.source) {
      if (bytesToSend == null) {
        const buf = chunk.subarray()
        const need = 8 - header.length
        const merged = new Uint8Array(header.length + Math.min(need, buf.length))
        merged.set(header)
        merged.set(buf.subarray(0, need), header.length)
        header = merged
        if (header.length === 8) {
          bytesToSend = new DataView(header.buffer, header.byteOffset, 8).getBigUint64(0, false)
        }
      }
    }
    if (bytesToSend == null) throw new Error('perf: stream closed before the 8-byte header')
    const block = new Uint8Array(PERF_BLOCK)
    await stream.sink((async function * () {
      let left = bytesToSend
      while (left > 0n) {
        const n = left < BigInt(PERF_BLOCK) ? Number(left) : PERF_BLOCK
        yield n === PERF_BLOCK ? block : block.subarray(0, n)
        left -= BigInt(n)
      }
    })())
    await stream.close()
  } catch (e) {
    err(`perf handler: ${oneLine(e)}`)
    stream.abort(e)
  }
}

// The LISTEN line's shape for each --transport.
function loopbackPattern (transport) {
  const middle = { tcp: 'tcp/\\d+', ws: 'tcp/\\d+/ws', quic: 'udp/\\d+/quic-v1' }[transport]
  return new RegExp(`^/ip4/127\\.0\\.0\\.1/${middle}/p2p/[^/]+$`)
}

async function runListen (args) {
  const node = await makeNode(args, true)
  const opts = {
    maxInboundStreams: STREAM_LIMIT,
    maxOutboundStreams: STREAM_LIMIT,
    runOnLimitedConnection: true
  }
  await node.handle(ECHO_PROTOCOL, handleEcho, opts)
  await node.handle(PERF_PROTOCOL, handlePerf, opts)
  const wanted = args.via != null
    ? new RegExp(`^${args.via}/p2p-circuit/p2p/[^/]+$`)
    : loopbackPattern(args.transport)
  let addrs = node.getMultiaddrs().map(a => a.toString()).filter(a => wanted.test(a))
  for (let waited = 0; addrs.length === 0 && args.via != null && waited < 20000; waited += 100) {
    await new Promise(resolve => setTimeout(resolve, 100)) // the reservation
    addrs = node.getMultiaddrs().map(a => a.toString()).filter(a => wanted.test(a))
  }
  if (addrs.length === 0) {
    await node.stop()
    finish(EXIT_FAIL, `FAIL no loopback listen address in ${node.getMultiaddrs().join(' ')}`)
  }
  out(`LISTEN ${addrs[0]}`)

  let stopping = false
  const stop = async (why) => {
    if (stopping) return
    stopping = true
    err(`${why}, shutting down`)
    const force = setTimeout(() => finish(EXIT_OK), 5000)
    force.unref()
    try { await node.stop() } catch (e) { err(`stop: ${oneLine(e)}`) }
    finish(EXIT_OK)
  }
  process.on('SIGTERM', () => { stop('SIGTERM') })
  process.on('SIGINT', () => { stop('SIGINT') })
  process.stdin.on('end', () => { stop('stdin closed') })
  process.stdin.on('close', () => { stop('stdin closed') })
  process.stdin.on('error', () => { stop('stdin error') })
  process.stdin.resume()
  if (args.timeout > 0) setTimeout(() => { stop(`--timeout ${args.timeout}s reached`) }, args.timeout * 1000)
}

// -------------------------------- client ---------------------------------

class Unsupported extends Error {}

async function newStream (conn, protocol) {
  try {
    return await conn.newStream(protocol, {
      maxOutboundStreams: STREAM_LIMIT,
      runOnLimitedConnection: true
    })
  } catch (e) {
    if (e?.name === 'UnsupportedProtocolError') throw new Unsupported(protocol)
    throw e
  }
}

function concat (chunks, total) {
  const outBuf = new Uint8Array(total)
  let off = 0
  for (const c of chunks) { outBuf.set(c, off); off += c.length }
  return outBuf
}

async function echoOne (conn, args, index) {
  const payload = crypto.randomBytes(args.bytes)
  const stream = await newStream(conn, ECHO_PROTOCOL)
  const chunks = []
  let received = 0
  try {
    if (args.lockstep) {
      // Write a chunk, wait until it has been echoed back, repeat.
      let wake = null
      let readerDone = false
      const notify = () => { if (wake != null) { const w = wake; wake = null; w() } }
      const reader = (async () => {
        try {
          for await (const c of stream.source) {
            const u = c.subarray()
            chunks.push(u)
            received += u.length
            notify()
          }
        } finally {
          readerDone = true
          notify()
        }
      })()
      await stream.sink((async function * () {
        for (let off = 0; off < payload.length; off += args.chunk) {
          const piece = payload.subarray(off, off + args.chunk)
          const want = off + piece.length
          yield piece
          while (received < want && !readerDone) {
            await new Promise(resolve => { wake = resolve })
          }
          if (received < want) throw new Error(`stream ${index}: EOF after ${received} of ${want} bytes in lockstep`)
        }
      })())
      await reader
    } else {
      const reader = (async () => {
        for await (const c of stream.source) {
          const u = c.subarray()
          chunks.push(u)
          received += u.length
        }
      })()
      await stream.sink((async function * () {
        for (let off = 0; off < payload.length; off += args.chunk) {
          yield payload.subarray(off, off + args.chunk)
        }
      })())
      await reader
    }
  } catch (e) {
    stream.abort(e)
    throw e
  }
  await stream.close().catch(() => {})
  const got = concat(chunks, received)
  if (received !== payload.length || !Buffer.from(got).equals(payload)) {
    throw new Error(`stream ${index}: echoed data differs (sent ${payload.length} bytes, got ${received})`)
  }
}

async function cmdEcho (node, conn, args) {
  const start = performance.now()
  const tasks = []
  for (let i = 0; i < args.streams; i++) tasks.push(echoOne(conn, args, i))
  const results = await Promise.allSettled(tasks)
  const failed = results.find(r => r.status === 'rejected')
  if (failed != null) throw failed.reason
  const secs = (performance.now() - start) / 1000
  return `OK echo streams=${args.streams} bytes=${args.bytes} seconds=${secs.toFixed(3)}`
}

async function cmdPing (node, conn, args) {
  try {
    const rtt = await node.services.ping.ping(conn.remoteAddr.encapsulate(`/p2p/${conn.remotePeer}`))
    return `OK ping rtt_ms=${Number(rtt).toFixed(3)}`
  } catch (e) {
    if (e?.name === 'UnsupportedProtocolError') throw new Unsupported('/ipfs/ping/1.0.0')
    throw e
  }
}

async function cmdId (node, conn, args, identified) {
  // js-libp2p runs identify by itself on every new connection; wait for the
  // outcome (a failed identify is only logged, so bound the wait).
  const waitS = args.timeout > 0 ? Math.max(1, args.timeout - 2) : 30
  let timer
  const result = await Promise.race([
    identified,
    new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no completed identify from ${conn.remotePeer} within ${waitS}s (DEBUG=libp2p:identify* shows why)`)), waitS * 1000)
    })
  ]).finally(() => clearTimeout(timer))
  const protocols = [...new Set(result.protocols)].sort()
  return `OK id protocols=${protocols.join(',')} agent=${result.agentVersion}`
}

async function cmdPerf (node, conn, args) {
  const start = performance.now()
  const stream = await newStream(conn, PERF_PROTOCOL)
  let downloaded = 0
  let uploaded = 0
  try {
    const reader = (async () => {
      for await (const c of stream.source) downloaded += c.byteLength
    })()
    const header = new Uint8Array(8)
    new DataView(header.buffer).setBigUint64(0, BigInt(args.download), false)
    const block = new Uint8Array(PERF_BLOCK)
    await stream.sink((async function * () {
      yield header
      let left = args.upload
      while (left > 0) {
        const n = Math.min(left, PERF_BLOCK)
        yield n === PERF_BLOCK ? block : block.subarray(0, n)
        left -= n
        uploaded += n
      }
    })())
    await reader
  } catch (e) {
    stream.abort(e)
    throw e
  }
  await stream.close().catch(() => {})
  const secs = (performance.now() - start) / 1000
  if (downloaded !== args.download) throw new Error(`perf: expected ${args.download} bytes back, got ${downloaded}`)
  return `OK perf upload_bytes=${uploaded} download_bytes=${downloaded} seconds=${secs.toFixed(3)}`
}

async function cmdOpen (node, conn, args) {
  const stream = await newStream(conn, args.protocol)
  await stream.close().catch(() => {})
  return 'OK open'
}

// ------------------------- bench commands (bench/run.py) -------------------

// Lines from stdin, one at a time (null at EOF).
function stdinLines () {
  const pending = []
  const waiters = []
  let buffered = ''
  let ended = false
  const deliver = (line) => {
    const w = waiters.shift()
    if (w != null) w(line)
    else pending.push(line)
  }
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (d) => {
    buffered += d
    let i
    while ((i = buffered.indexOf('\n')) >= 0) {
      deliver(buffered.slice(0, i).trim())
      buffered = buffered.slice(i + 1)
    }
  })
  const end = () => { if (!ended) { ended = true; deliver(null) } }
  process.stdin.on('end', end)
  process.stdin.on('close', end)
  return () => pending.length > 0 ? Promise.resolve(pending.shift()) : new Promise(resolve => waiters.push(resolve))
}

// "cpu=.. nvcsw=.. nivcsw=.." since the resourceUsage() sample u0.
function usageSince (u0) {
  const u = process.resourceUsage()
  const cpu = (u.userCPUTime + u.systemCPUTime - u0.userCPUTime - u0.systemCPUTime) / 1e6
  return `cpu=${cpu.toFixed(4)} nvcsw=${u.voluntaryContextSwitches - u0.voluntaryContextSwitches} ` +
    `nivcsw=${u.involuntaryContextSwitches - u0.involuntaryContextSwitches}`
}

function median (values) {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

function percentile (values, q) {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))]
}

const ONE_BYTE = new Uint8Array([120])

// Open /echo/1.0.0, write one byte, read it back, close.
async function openEchoOnce (conn) {
  const stream = await newStream(conn, ECHO_PROTOCOL)
  try {
    let got = 0
    await Promise.all([
      stream.sink([ONE_BYTE]),
      (async () => { for await (const c of stream.source) got += c.byteLength })()
    ])
    if (got !== 1) throw new Error(`open: echoed ${got} bytes instead of 1`)
  } catch (e) {
    stream.abort(e)
    throw e
  }
  await stream.close().catch(() => {})
}

// A stream kept open for lockstep round trips: roundTrip(msg) resolves when
// msg.length bytes have come back.
function lockstepStream (stream) {
  let wakeWriter = null
  const outbox = []
  let received = 0
  let want = 0
  let wakeReader = null
  let failed = null
  const sink = stream.sink((async function * () {
    while (true) {
      while (outbox.length === 0) await new Promise(resolve => { wakeWriter = resolve })
      const m = outbox.shift()
      if (m == null) return
      yield m
    }
  })()).catch(e => { failed = e; if (wakeReader != null) wakeReader() })
  const reader = (async () => {
    try {
      for await (const c of stream.source) {
        received += c.byteLength
        if (received >= want && wakeReader != null) { const w = wakeReader; wakeReader = null; w() }
      }
    } catch (e) { failed = e }
    failed = failed ?? new Error('echo stream ended')
    if (wakeReader != null) wakeReader()
  })()
  const push = (m) => { outbox.push(m); if (wakeWriter != null) { const w = wakeWriter; wakeWriter = null; w() } }
  return {
    async roundTrip (msg) {
      want += msg.length
      const done = new Promise(resolve => { wakeReader = resolve })
      push(msg)
      if (received < want) await done
      else wakeReader = null
      if (received < want) throw failed ?? new Error('echo stream ended')
    },
    async close () { push(null); await sink; await stream.close().catch(() => {}); await reader }
  }
}

async function benchLoop (nextLine, runOnce) {
  while (true) {
    out('READY')
    const line = await nextLine()
    if (line !== 'go') return
    out(await runOnce())
  }
}

async function cmdOpens (node, conn, args) {
  const nextLine = stdinLines()
  for (let i = 0; i < 50; i++) await openEchoOnce(conn) // warm-up
  await benchLoop(nextLine, async () => {
    const lat = []
    let errors = 0
    const u0 = process.resourceUsage()
    const t0 = performance.now()
    const stopAt = t0 + args.seconds * 1000
    const loop = async () => {
      while (performance.now() < stopAt) {
        const t = performance.now()
        try {
          await openEchoOnce(conn)
          lat.push(performance.now() - t)
        } catch (e) {
          if (++errors === 1) err(`opens: ${oneLine(e)}`)
          if (errors > 1000) return
        }
      }
    }
    await Promise.all(Array.from({ length: args.concurrency }, loop))
    const secs = (performance.now() - t0) / 1000
    return `RUN opens=${lat.length} seconds=${secs.toFixed(6)} ${usageSince(u0)} ` +
      `median_us=${(median(lat) * 1000).toFixed(1)} errors=${errors}`
  })
  return 'OK opens'
}

async function cmdRtt (node, conn, args) {
  const nextLine = stdinLines()
  const lock = lockstepStream(await newStream(conn, ECHO_PROTOCOL))
  const msg = new Uint8Array(args.size).fill(120)
  for (let i = 0; i < 200; i++) await lock.roundTrip(msg) // warm-up
  await benchLoop(nextLine, async () => {
    const samples = []
    const u0 = process.resourceUsage()
    for (let i = 0; i < args.count; i++) {
      const t = performance.now()
      await lock.roundTrip(msg)
      samples.push((performance.now() - t) * 1000)
    }
    return `RUN median_us=${median(samples).toFixed(2)} p99_us=${percentile(samples, 0.99).toFixed(2)} ` +
      `count=${samples.length} ${usageSince(u0)}`
  })
  await lock.close()
  return 'OK rtt'
}

const COMMANDS = { echo: cmdEcho, ping: cmdPing, id: cmdId, perf: cmdPerf, open: cmdOpen, opens: cmdOpens, rtt: cmdRtt }

async function runClient (args) {
  let ma, expected
  try {
    ma = multiaddr(args.multiaddr)
    const id = ma.getPeerId()
    if (id == null) throw new Error('multiaddr has no /p2p/<peer id>')
    expected = peerIdFromString(id)
  } catch (e) {
    finish(EXIT_FAIL, `FAIL bad multiaddr ${args.multiaddr}: ${oneLine(e)}`)
  }
  if (args.timeout > 0) {
    setTimeout(() => finish(EXIT_FAIL, `FAIL timeout after ${args.timeout}s`), args.timeout * 1000).unref()
  }
  const node = await makeNode(args, false)
  // Identify runs automatically on every new connection; catch its event.
  const identified = new Promise((resolve) => {
    node.addEventListener('peer:identify', (evt) => {
      if (evt.detail.peerId.equals(expected)) resolve(evt.detail)
    })
  })
  let code = EXIT_FAIL
  let line
  let conn
  try {
    const c = await node.dial(ma)
    // js-libp2p 2.x does not make Noise/TLS check the dialed /p2p/ id (the
    // upgrader never hands the expected peer to the encrypter), so a wrong id
    // yields a working connection to someone else: check it here.
    if (!c.remotePeer.equals(expected)) {
      await c.close().catch(() => {})
      throw new Error(`peer id mismatch: dialed ${expected}, remote is ${c.remotePeer}`)
    }
    conn = c
  } catch (e) {
    err(e?.stack ?? String(e))
    line = `FAIL dial: ${oneLine(e)}`
  }
  if (conn != null) {
    try {
      line = await COMMANDS[args.cmd](node, conn, args, identified)
      code = EXIT_OK
    } catch (e) {
      if (e instanceof Unsupported) {
        code = EXIT_UNSUPPORTED
        line = `UNSUPPORTED ${e.message}`
      } else {
        err(e?.stack ?? String(e))
        line = `FAIL ${args.cmd}: ${oneLine(e)}`
      }
    }
  }
  const force = setTimeout(() => finish(code, line), 3000)
  force.unref()
  try { await node.stop() } catch (e) { err(`stop: ${oneLine(e)}`) }
  finish(code, line)
}

const args = parseArgs(process.argv.slice(2))
process.on('unhandledRejection', (e) => { err(`unhandled rejection: ${e?.stack ?? e}`) })
try {
  if (args.cmd === 'listen') await runListen(args)
  else await runClient(args)
} catch (e) {
  err(e?.stack ?? String(e))
  finish(EXIT_FAIL, `FAIL ${oneLine(e)}`)
}
