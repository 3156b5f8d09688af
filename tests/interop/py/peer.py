#!/usr/bin/env python3
"""py-libp2p peer program for libp2p_stream_sync interop tests.

Runs in its own virtual environment (see tests/interop/peers.py), never in the
project's environment.  Command-line contract (same as ../js/peer.mjs):

  listen --muxer yamux|mplex [--perf] [--autonat] [--timeout S]
      (--autonat: also serve py-libp2p's /libp2p/autonat/1.0.0.)
      Listen on /ip4/127.0.0.1/tcp/0 (the chosen security + muxer), print
      exactly one line "LISTEN <multiaddr>/p2p/<peerid>" and serve
      /echo/1.0.0, /ipfs/ping/1.0.0, identify and /perf/1.0.0 until stdin
      closes, SIGTERM or SIGINT arrives, or --timeout seconds pass (0 = no
      limit); exit 0.
  echo <ma> --muxer M --bytes N --streams K [--lockstep] [--chunk C]
  ping <ma> --muxer M
  id   <ma> --muxer M
  perf <ma> --muxer M --upload N --download M
  open <ma> --muxer M --protocol P
  autonat <ma> --muxer M   (asks the listener to dial us back; prints
      "OK autonat status=<ResponseStatus> addr=<multiaddr or ->")
  opens <ma> --muxer M [--concurrency K] [--seconds S]     (bench/run.py)
  rtt   <ma> --muxer M [--count N] [--size B]              (bench/run.py)

opens and rtt speak bench/run.py's line protocol instead of printing one
result line: after dialing and a warm-up they print "READY" and wait for a
line on stdin; "go" runs one measurement and prints "RUN key=value ..." (then
READY again), "quit" or EOF ends. opens: K concurrent tasks looping over open
/echo/1.0.0 + write 1 byte + read it back + close for S seconds; rtt: N round
trips of B bytes on one open echo stream. Both report their own process's CPU
and context switches (getrusage) for the run.

Every command also takes --transport tcp|ws|quic (default tcp; listen then
uses /ip4/127.0.0.1/tcp/0/ws or /ip4/127.0.0.1/udp/0/quic-v1) and
--security noise|tls (default noise; QUIC brings its own TLS 1.3, so
--security and --muxer do not change a QUIC connection).

Circuit relay v2 (py-libp2p's libp2p.relay.circuit_v2): `listen --relay` also
serves the hop protocol (py's default relay limits); `listen --via <relay ma>`
reserves a slot on that relay explicitly (py looks for relays on its own only
at start and every 300 s) and prints "LISTEN <relay ma>/p2p-circuit/p2p/<peerid>"
instead; a client given a /p2p-circuit multiaddr dials through the relay.

Client commands print one result line on stdout: "OK ..." (exit 0),
"UNSUPPORTED <protocol>" (exit 3, `open` only) or "FAIL <reason>" (exit 1).
Every client command has an overall --timeout (default 60 s).
Diagnostics go to stderr.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
import traceback

# --perf is accepted for contract compatibility: the perf service is always on.

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNSUPPORTED = 3

ECHO_PROTOCOL = "/echo/1.0.0"
# --transport -> listen address (py-libp2p picks its transports from these)
LISTEN_ADDRS = {
    "tcp": "/ip4/127.0.0.1/tcp/0",
    "ws": "/ip4/127.0.0.1/tcp/0/ws",
    "quic": "/ip4/127.0.0.1/udp/0/quic-v1",
}
# --transport -> the shape of our LISTEN line's address
LISTEN_PATTERNS = {
    "tcp": r"/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+",
    "ws": r"/ip4/127\.0\.0\.1/tcp/\d+/ws/p2p/\w+",
    "quic": r"/ip4/127\.0\.0\.1/udp/\d+/quic-v1/p2p/\w+",
}


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(msg: str) -> None:
    sys.stderr.write(f"[py-peer] {msg}\n")
    sys.stderr.flush()


def one_line(text: object) -> str:
    return " ".join(str(text).split()) or "error"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="peer.py", description="py-libp2p interop peer")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, default_timeout: float) -> None:
        sp.add_argument("--muxer", choices=["yamux", "mplex"], required=True)
        sp.add_argument("--transport", choices=sorted(LISTEN_ADDRS), default="tcp")
        sp.add_argument("--security", choices=["noise", "tls"], default="noise",
                        help="ignored for --transport quic (QUIC has its own TLS)")
        sp.add_argument("--timeout", type=float, default=default_timeout,
                        help="overall timeout in seconds (0 = none)")

    sp = sub.add_parser("listen")
    common(sp, 0.0)
    sp.add_argument("--perf", action="store_true",
                    help="serve /perf/1.0.0 (always served; accepted for compatibility)")
    sp.add_argument("--relay", action="store_true", help="serve circuit relay v2 (hop)")
    sp.add_argument("--via", default=None,
                    help="reserve a slot on this relay and listen through it")
    sp.add_argument("--autonat", action="store_true",
                    help="also serve /libp2p/autonat/1.0.0 (py-libp2p's AutoNATService)")
    sp.add_argument("--dcutr", action="store_true",
                    help="also run py-libp2p's DCUtR (/libp2p/dcutr, hole punching)")
    sp.add_argument("--listen-ip", default=None,
                    help="listen on this IP (tcp) instead of 127.0.0.1")

    for name in ("echo", "ping", "id", "perf", "open", "autonat", "opens", "rtt", "dcutr"):
        sp = sub.add_parser(name)
        sp.add_argument("multiaddr")
        common(sp, 0.0 if name in ("opens", "rtt") else 60.0)
        sp.add_argument("--listen-ip", default=None,
                        help="listen on this IP (tcp) instead of 127.0.0.1 (dcutr: the "
                             "hole punch dials from the listen port)")
        if name == "echo":
            sp.add_argument("--bytes", type=int, required=True)
            sp.add_argument("--streams", type=int, default=1)
            sp.add_argument("--lockstep", action="store_true")
            sp.add_argument("--chunk", type=int, default=None,
                            help="write size in bytes (and lockstep round size); "
                                 "default 16384, or 4076 (one mplex frame) in "
                                 "lockstep mode")
        elif name == "perf":
            sp.add_argument("--upload", type=int, required=True)
            sp.add_argument("--download", type=int, required=True)
        elif name == "open":
            sp.add_argument("--protocol", required=True)
        elif name == "opens":
            sp.add_argument("--concurrency", type=int, default=1)
            sp.add_argument("--seconds", type=float, default=2.0)
        elif name == "rtt":
            sp.add_argument("--count", type=int, default=2000)
            sp.add_argument("--size", type=int, default=16)
        elif name == "dcutr":
            sp.add_argument("--wait", type=float, default=15.0,
                            help="seconds to wait for a direct connection")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# Everything below imports py-libp2p lazily so `--help` works without it.
# --------------------------------------------------------------------------

class Unsupported(Exception):
    pass


def security_options(security: str, key_pair) -> dict:
    """Exactly one security transport (new_host()'s default offers four)."""
    if security == "tls":
        from libp2p.security.tls.transport import PROTOCOL_ID, TLSTransport
        return {PROTOCOL_ID: TLSTransport(key_pair)}
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
    from libp2p.security.noise.transport import PROTOCOL_ID, Transport
    return {PROTOCOL_ID: Transport(key_pair, noise_privkey=create_x25519().private_key)}


def listen_multiaddr(args: argparse.Namespace):
    import multiaddr
    ip = getattr(args, "listen_ip", None)
    if ip and args.transport == "tcp":
        return multiaddr.Multiaddr(f"/ip4/{ip}/tcp/0")
    return multiaddr.Multiaddr(LISTEN_ADDRS[args.transport])


def make_host(args: argparse.Namespace):
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux
    from libp2p.custom_types import TProtocol

    key_pair = create_new_key_pair()
    # Exactly one muxer: new_host()'s defaults offer both (preferred first).
    if args.muxer == "yamux":
        muxer_opt = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    else:
        muxer_opt = {TProtocol(MPLEX_PROTOCOL_ID): Mplex}
    # new_host() builds exactly the transports its listen addresses need
    # (TCP, WebSocket or QUIC); QUIC ignores sec_opt and muxer_opt.
    return new_host(
        key_pair=key_pair,
        sec_opt=security_options(args.security, key_pair),
        muxer_opt=muxer_opt,
        listen_addrs=[listen_multiaddr(args)],
    )


def quic_stream_of(stream):
    """The QUICStream under a py-libp2p NetStream, or None for TCP/WS."""
    from libp2p.transport.quic.stream import QUICStream
    raw = getattr(stream, "muxed_stream", None)
    return raw if isinstance(raw, QUICStream) else None


async def read_quic_some(raw, n: int) -> bytes:
    """Read up to n bytes from a QUICStream itself; b'' on a clean end.

    Works around two py-libp2p 0.8.1 QUICStream.read() faults (through
    NetStream both surface as StreamReset or an early EOF):
    * once both sides have sent FIN it raises QUICStreamClosedError instead
      of EOF;
    * it checks its buffer, then yields on a lock, then finds the FIN flag
      and raises EOF although the last bytes arrived meanwhile.  All data
      is buffered before that flag is set, so one more read returns them.
    """
    from libp2p.transport.quic.exceptions import QUICStreamClosedError
    for _ in range(2):
        try:
            return await raw.read(n) or b""
        except (EOFError, QUICStreamClosedError):
            if raw.is_reset():
                raise
    return b""


async def read_some(stream, n: int = 65536) -> bytes:
    """Read up to n bytes; b'' on a clean EOF."""
    raw = quic_stream_of(stream)
    if raw is not None:
        return await read_quic_some(raw, n)
    try:
        data = await stream.read(n)
    except EOFError:  # StreamEOF / MuxedStreamEOF / MplexStreamEOF
        return b""
    return data or b""


async def read_exactly(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await read_some(stream, n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf.extend(chunk)
    return bytes(buf)


async def read_to_eof(stream) -> bytes:
    buf = bytearray()
    while True:
        chunk = await read_some(stream)
        if not chunk:
            return bytes(buf)
        buf.extend(chunk)


# ------------------------------ circuit relay ----------------------------

def relay_protocol(host, allow_hop: bool):
    """py-libp2p's circuit relay v2 service (stop handler; hop too if allowed)."""
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
    return CircuitV2Protocol(host, allow_hop=allow_hop)


def relay_transport(host, protocol):
    from libp2p.relay.circuit_v2.config import RelayConfig
    from libp2p.relay.circuit_v2.transport import CircuitV2Transport
    return CircuitV2Transport(host, protocol, RelayConfig())


async def reserve_via(host, protocol, relay_ma: str, nursery) -> str:
    """Reserve a slot on the relay at relay_ma; return our address through it."""
    from libp2p.custom_types import TProtocol
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID

    relay_id = await connect(host, relay_ma)
    stream = await host.new_stream(relay_id, [TProtocol(PROTOCOL_ID)])
    if not await relay_transport(host, protocol).reserve(stream, relay_id, nursery):
        raise RuntimeError(f"relay {relay_id} refused the reservation")
    return f"{relay_ma}/p2p-circuit/p2p/{host.get_id()}"


# ------------------------------ listener ---------------------------------

async def echo_handler(stream) -> None:
    try:
        while True:
            data = await read_some(stream)
            if not data:
                break
            await stream.write(data)
        await stream.close()
    except Exception as exc:  # noqa: BLE001
        err(f"echo handler: {one_line(exc)}")
        try:
            await stream.reset()
        except Exception:  # noqa: BLE001
            pass


async def run_listen(args: argparse.Namespace) -> int:
    import contextlib

    import trio
    from libp2p.perf import PerfService
    from libp2p.tools.anyio_service import background_trio_service

    host = make_host(args)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen_addrs=[listen_multiaddr(args)]))
        relay = None
        if args.relay or args.via:
            relay = relay_protocol(host, allow_hop=args.relay)
            await stack.enter_async_context(background_trio_service(relay))
            await relay.event_started.wait()
        if args.dcutr:
            from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
            dcutr = DCUtRProtocol(host)
            await stack.enter_async_context(background_trio_service(dcutr))
            await dcutr.event_started.wait()
        host.set_stream_handler(ECHO_PROTOCOL, echo_handler)
        if args.autonat:
            from libp2p.host.autonat.autonat import AutoNATService
            AutoNATService(host, serve=True)
        perf = PerfService(host)
        await perf.start()
        pattern = LISTEN_PATTERNS[args.transport]
        addrs = [str(a) for a in host.get_addrs()
                 if re.fullmatch(pattern, str(a)) or args.listen_ip]
        if not addrs:
            out(f"FAIL no loopback listen address in {host.get_addrs()}")
            return EXIT_FAIL

        async with trio.open_nursery() as nursery:
            if args.via:
                try:
                    addrs = [await reserve_via(host, relay, args.via, nursery)]
                except Exception as exc:  # noqa: BLE001
                    err(traceback.format_exc())
                    out(f"FAIL reserve: {one_line(exc)}")
                    nursery.cancel_scope.cancel()
                    return EXIT_FAIL
            out(f"LISTEN {addrs[0]}")

            async def wait_stdin_eof() -> None:
                def _drain() -> None:
                    while os.read(sys.stdin.fileno(), 65536):
                        pass
                try:
                    await trio.to_thread.run_sync(_drain, abandon_on_cancel=True)
                except OSError:
                    return  # no usable stdin: stop as if it closed
                err("stdin closed, shutting down")
                nursery.cancel_scope.cancel()

            async def wait_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for signum in sigs:
                        err(f"signal {signum}, shutting down")
                        nursery.cancel_scope.cancel()
                        return

            async def wait_timeout() -> None:
                await trio.sleep(args.timeout)
                err(f"--timeout {args.timeout}s reached, shutting down")
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait_stdin_eof)
            nursery.start_soon(wait_signal)
            if args.timeout and args.timeout > 0:
                nursery.start_soon(wait_timeout)
        with trio.move_on_after(5):
            await perf.stop()
    return EXIT_OK


# ------------------------------ dialer -----------------------------------

async def connect(host, ma_text: str, relay=None):
    import multiaddr
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import info_from_p2p_addr

    ma = multiaddr.Multiaddr(ma_text)
    if relay is not None:  # through a relay: py's circuit transport dials it
        await relay_transport(host, relay).dial(ma)
        return ID.from_base58(ma_text.rsplit("/p2p/", 1)[1])
    info = info_from_p2p_addr(ma)
    await host.connect(info)
    return info.peer_id


async def new_stream(host, peer_id, protocol: str):
    from libp2p.custom_types import TProtocol
    from libp2p.host.exceptions import StreamFailure

    try:
        return await host.new_stream(peer_id, [TProtocol(protocol)])
    except StreamFailure as exc:
        cause = exc.__cause__
        if cause is not None and "protocols not supported" in str(cause):
            raise Unsupported(protocol) from exc
        raise


async def echo_one(host, peer_id, args, index: int) -> None:
    import trio

    payload = os.urandom(args.bytes)
    stream = await new_stream(host, peer_id, ECHO_PROTOCOL)
    # (QUIC has its own streams: --muxer mplex means nothing there.)
    lockstep = args.lockstep or (args.muxer == "mplex" and args.transport != "quic")
    chunk = max(1, args.chunk or (4076 if lockstep else 16384))
    received = bytearray()
    try:
        if lockstep:
            # One direction at a time.  py-libp2p's mplex cannot do anything
            # else: a pending read holds the stream's ReadWriteLock and blocks
            # every write on that stream (a concurrent reader task deadlocks),
            # and writing everything before reading deadlocks too once the
            # echo fills the TCP buffers (mplex has no flow control and
            # py-libp2p's connection reader blocks, up to 5 s, on any stream
            # whose reader is not waiting, then resets that stream).  So for
            # mplex this client always runs lockstep, --lockstep or not.
            for off in range(0, len(payload), chunk):
                piece = payload[off:off + chunk]
                await stream.write(piece)
                received.extend(await read_exactly(stream, len(piece)))
            await stream.close_write()
            received.extend(await read_to_eof(stream))
        else:
            async def writer() -> None:
                for off in range(0, len(payload), chunk):
                    await stream.write(payload[off:off + chunk])
                await stream.close_write()

            async def reader() -> None:
                received.extend(await read_to_eof(stream))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(reader)
    except BaseException:
        try:
            await stream.reset()
        except Exception:  # noqa: BLE001
            pass
        raise
    try:
        await stream.close()
    except Exception:  # noqa: BLE001
        pass
    if bytes(received) != payload:
        raise AssertionError(
            f"stream {index}: echoed data differs (sent {len(payload)} bytes, "
            f"got {len(received)})")


async def cmd_echo(host, peer_id, args) -> str:
    import trio

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for i in range(args.streams):
            nursery.start_soon(echo_one, host, peer_id, args, i)
    secs = time.monotonic() - start
    return f"OK echo streams={args.streams} bytes={args.bytes} seconds={secs:.3f}"


async def cmd_ping(host, peer_id, args) -> str:
    from libp2p.host.ping import ID as PING_ID, perform_ping_roundtrip

    stream = await new_stream(host, peer_id, PING_ID)
    start = time.monotonic()
    await perform_ping_roundtrip(stream)  # the library's ping (32-byte round trip)
    rtt_ms = (time.monotonic() - start) * 1000.0
    try:
        await stream.close_write()
        await stream.close()
    except Exception:  # noqa: BLE001
        pass
    return f"OK ping rtt_ms={rtt_ms:.3f}"


async def cmd_id(host, peer_id, args) -> str:
    from libp2p.identity.identify.identify import ID as IDENTIFY_ID
    from libp2p.identity.identify.pb.identify_pb2 import Identify
    from libp2p.utils.varint import read_length_prefixed_protobuf

    # py-libp2p runs identify automatically on connect, but keeps only the
    # protocols (not agentVersion) in its peerstore, so run the library's
    # identify exchange once more ourselves and decode the message it reads.
    stream = await new_stream(host, peer_id, IDENTIFY_ID)
    data = await read_length_prefixed_protobuf(stream, use_varint_format=True)
    msg = Identify()
    msg.ParseFromString(data)
    try:
        await stream.close()
    except Exception:  # noqa: BLE001
        pass
    protocols = ",".join(sorted(set(msg.protocols)))
    return f"OK id protocols={protocols} agent={msg.agent_version}"


async def cmd_perf(host, peer_id, args) -> str:
    import multiaddr
    from libp2p.perf import PerfService

    perf = PerfService(host)
    final = None
    start = time.monotonic()
    async for result in perf.measure_performance(
            multiaddr.Multiaddr(args.multiaddr), args.upload, args.download):
        if result["type"] == "final":
            final = result
    secs = time.monotonic() - start
    if final is None:
        raise RuntimeError("perf produced no final result")
    if final["upload_bytes"] != args.upload or final["download_bytes"] != args.download:
        raise RuntimeError(f"perf byte counts differ: {final}")
    return (f"OK perf upload_bytes={final['upload_bytes']} "
            f"download_bytes={final['download_bytes']} seconds={secs:.3f}")


async def cmd_open(host, peer_id, args) -> str:
    stream = await new_stream(host, peer_id, args.protocol)
    try:
        await stream.close()
    except Exception:  # noqa: BLE001
        pass
    return "OK open"


async def cmd_autonat(host, peer_id, args) -> str:
    """Ask the listener to dial us back (py-libp2p's AutoNAT v1 client)."""
    import multiaddr
    from libp2p.host.autonat.autonat import AutoNATService
    from libp2p.host.autonat.pb.autonat_pb2 import Message

    service = AutoNATService(host, serve=False)
    status, addr = await service.query_server(peer_id)
    reached = str(multiaddr.Multiaddr(addr)) if addr else "-"
    return f"OK autonat status={Message.ResponseStatus.Name(status)} addr={reached}"


# ---------------------- bench commands (bench/run.py) ----------------------

async def cmd_dcutr(host, peer_id, args) -> str:
    """Wait (py-libp2p's DCUtR running) for a direct connection to the peer we
    reached through a relay; "dcutr direct <its address>"."""
    import trio

    with trio.move_on_after(args.wait):
        while True:
            conns = host.get_network().connections.get(peer_id) or []
            if not isinstance(conns, list):
                conns = [conns]
            for conn in conns:
                try:
                    addrs = conn.get_transport_addresses()
                except Exception:  # noqa: BLE001
                    continue
                direct = [a for a in addrs if "/p2p-circuit" not in str(a)]
                if direct:
                    return f"dcutr direct {direct[0]}"
            await trio.sleep(0.1)
    raise RuntimeError(f"no direct connection after {args.wait} s")


def usage_self() -> tuple[float, int, int]:
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw


def usage_since(u0: tuple[float, int, int]) -> str:
    cpu, vol, invol = usage_self()
    return f"cpu={cpu - u0[0]:.4f} nvcsw={vol - u0[1]} nivcsw={invol - u0[2]}"


async def bench_loop(run_once) -> None:
    """READY / go / RUN until stdin says anything else or closes."""
    import trio
    while True:
        out("READY")
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "go":
            return
        out(await run_once())


async def open_echo_once(host, peer_id) -> None:
    stream = await new_stream(host, peer_id, ECHO_PROTOCOL)
    try:
        await stream.write(b"x")
        await read_exactly(stream, 1)
        await stream.close()
    except BaseException:
        await stream.reset()
        raise


async def cmd_opens(host, peer_id, args) -> str:
    import statistics
    import trio

    for _ in range(50):  # warm-up
        await open_echo_once(host, peer_id)

    async def run_once() -> str:
        lat: list[float] = []
        errors = [0]
        u0, t0 = usage_self(), time.perf_counter()
        stop_at = t0 + args.seconds

        async def loop() -> None:
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    await open_echo_once(host, peer_id)
                    lat.append(time.perf_counter() - t)
                except Exception as exc:  # noqa: BLE001
                    errors[0] += 1
                    if errors[0] == 1:
                        err(f"opens: {one_line(exc)}")
                    if errors[0] > 1000:
                        return

        async with trio.open_nursery() as nursery:
            for _ in range(max(1, args.concurrency)):
                nursery.start_soon(loop)
        secs = time.perf_counter() - t0
        med = statistics.median(lat) * 1e6 if lat else float("nan")
        return (f"RUN opens={len(lat)} seconds={secs:.6f} {usage_since(u0)} "
                f"median_us={med:.1f} errors={errors[0]}")

    await bench_loop(run_once)
    return "OK opens"


async def cmd_rtt(host, peer_id, args) -> str:
    import statistics

    stream = await new_stream(host, peer_id, ECHO_PROTOCOL)
    msg = b"x" * args.size
    for _ in range(200):  # warm-up
        await stream.write(msg)
        await read_exactly(stream, args.size)

    async def run_once() -> str:
        samples = []
        u0 = usage_self()
        for _ in range(args.count):
            t = time.perf_counter()
            await stream.write(msg)
            await read_exactly(stream, args.size)
            samples.append(time.perf_counter() - t)
        s = sorted(samples)
        p99 = s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]
        return (f"RUN median_us={statistics.median(samples) * 1e6:.2f} "
                f"p99_us={p99 * 1e6:.2f} count={len(samples)} {usage_since(u0)}")

    await bench_loop(run_once)
    await stream.close()
    return "OK rtt"


COMMANDS = {"echo": cmd_echo, "ping": cmd_ping, "id": cmd_id, "perf": cmd_perf,
            "open": cmd_open, "autonat": cmd_autonat, "opens": cmd_opens,
            "rtt": cmd_rtt, "dcutr": cmd_dcutr}


async def run_client(args: argparse.Namespace) -> int:
    import contextlib

    import trio
    from libp2p.tools.anyio_service import background_trio_service

    if "/p2p/" not in args.multiaddr:
        out(f"FAIL multiaddr has no /p2p/<peer id>: {args.multiaddr}")
        return EXIT_FAIL
    timeout = args.timeout if args.timeout and args.timeout > 0 else float("inf")
    result: tuple[int, str] = (EXIT_FAIL, "FAIL no result")
    host = make_host(args)
    try:
        with trio.fail_after(timeout):
            # The dialer listens too (loopback, ephemeral port): py-libp2p's
            # host.run() is what starts the swarm service that dialing needs.
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(
                    host.run(listen_addrs=[listen_multiaddr(args)]))
                relay = None
                if "/p2p-circuit" in args.multiaddr:
                    relay = relay_protocol(host, allow_hop=False)
                    await stack.enter_async_context(background_trio_service(relay))
                    await relay.event_started.wait()
                if args.cmd == "dcutr":  # before the relayed connection: its handler
                    from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
                    dcutr = DCUtRProtocol(host)
                    await stack.enter_async_context(background_trio_service(dcutr))
                    await dcutr.event_started.wait()
                try:
                    peer_id = await connect(host, args.multiaddr, relay)
                except Exception as exc:  # noqa: BLE001
                    err(traceback.format_exc())
                    result = (EXIT_FAIL, f"FAIL dial: {one_line(exc)}")
                else:
                    try:
                        line = await COMMANDS[args.cmd](host, peer_id, args)
                        result = (EXIT_OK, line)
                    except Unsupported as exc:
                        result = (EXIT_UNSUPPORTED, f"UNSUPPORTED {exc}")
                    except Exception as exc:  # noqa: BLE001
                        err(traceback.format_exc())
                        result = (EXIT_FAIL, f"FAIL {args.cmd}: {type(exc).__name__}: "
                                             f"{one_line(exc)}")
                    with trio.move_on_after(5):
                        await host.disconnect(peer_id)
    except trio.TooSlowError:
        if result[0] == EXIT_FAIL and result[1] == "FAIL no result":
            result = (EXIT_FAIL, f"FAIL timeout after {args.timeout}s")
    out(result[1])
    return result[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # py-libp2p configures its own logging on import: warnings and errors go
    # to stderr; LIBP2P_DEBUG=DEBUG (or "libp2p.stream_muxer:DEBUG", ...) for more.
    import trio

    try:
        if args.cmd == "listen":
            code = trio.run(run_listen, args)
        else:
            code = trio.run(run_client, args)
    except KeyboardInterrupt:
        code = EXIT_OK if args.cmd == "listen" else EXIT_FAIL
    except Exception as exc:  # noqa: BLE001
        err(traceback.format_exc())
        out(f"FAIL {type(exc).__name__}: {one_line(exc)}")
        code = EXIT_FAIL
    sys.stdout.flush()
    # py-libp2p can leave non-daemon threads behind; do not wait for them.
    os._exit(code)


if __name__ == "__main__":
    main()
