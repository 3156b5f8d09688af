"""The QUIC engine, sans-IO: a client engine and a server endpoint through memory.

The libp2p certificate both ways (every host key type), refusals (wrong peer, no
client certificate, no libp2p extension, wrong ALPN), streams with data, FIN and
reset, bulk data with a sha256 check, many streams, the FIN-only frame defect,
back-pressure both ways, keepalive and idle timeout on a fake clock.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time

import pytest

pytest.importorskip("aioquic")  # the optional extra; tests/engines/test_quic_extra.py

from aioquic.quic import events as quic_events  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.connection import QuicConnection  # noqa: E402
from aioquic.quic.packet import QuicStreamFrame  # noqa: E402
from aioquic.quic.stream import QuicStreamSender  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from libp2p_stream_sync.engines.muxer_events import (  # noqa: E402
    DataReceived, SendWindowUpdated, SessionTerminated, StreamClosedError, StreamEnded,
    StreamLimitError, StreamOpened, StreamReset,
)
from libp2p_stream_sync.engines.quic import (  # noqa: E402
    ALPN, BAD_CERTIFICATE, HandshakeComplete, QuicIdentity, QuicMuxer,
)
from libp2p_stream_sync.engines.tls_certificate import (  # noqa: E402
    InvalidCertificate, PeerIdMismatch,
)
from libp2p_stream_sync.identity import Keypair, KeyType  # noqa: E402

from quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair  # noqa: E402

KEY_TYPES = [KeyType.ED25519, KeyType.SECP256K1, KeyType.ECDSA, KeyType.RSA]
_KEYS: dict[KeyType, Keypair] = {}


def key(key_type: KeyType = KeyType.ED25519) -> Keypair:
    """One cached host key per type (RSA generation is slow)."""
    if key_type not in _KEYS:
        _KEYS[key_type] = Keypair.generate(key_type)
    return _KEYS[key_type]


def connected(**kw) -> Pair:
    pair = Pair(**kw)
    pair.handshake()
    assert pair.client.is_verified and pair.server.is_verified
    return pair


def of(events: list, kind: type, sid: int | None = None) -> list:
    return [e for e in events if isinstance(e, kind)
            and (sid is None or getattr(e, "stream_id", None) == sid)]


def received(events: list, sid: int) -> bytes:
    return b"".join(e.data for e in of(events, DataReceived, sid))


# -- handshake --------------------------------------------------------------------------

@pytest.mark.parametrize("client_type", KEY_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("server_type", KEY_TYPES, ids=lambda t: t.name)
def test_handshake_verifies_both_certificates(client_type, server_type):
    pair = connected(client_key=key(client_type), server_key=key(server_type))
    assert pair.client.remote_peer_id == key(server_type).peer_id
    assert pair.server.remote_peer_id == key(client_type).peer_id
    assert of(pair.client_events, HandshakeComplete) == [
        HandshakeComplete(key(server_type).peer_id)]
    assert of(pair.server_events, HandshakeComplete) == [
        HandshakeComplete(key(client_type).peer_id)]


def test_handshake_cpu_per_side():
    """Figures for the report: CPU of one handshake on each side (identities cached)."""
    client_id, server_id = QuicIdentity(key()), QuicIdentity(key(KeyType.ECDSA))
    pair = Pair(client_key=key(), server_key=key(KeyType.ECDSA),
                client_kwargs={"identity": client_id},
                endpoint_kwargs={"identity": server_id})
    cpu = {"client": 0.0, "server": 0.0}
    for _ in range(50):
        t = time.process_time()
        out = pair.client.datagrams_to_send(pair.now)
        cpu["client"] += time.process_time() - t
        t = time.process_time()
        for data, _ in out:
            pair.endpoint.receive_datagram(data, CLIENT_ADDR, pair.now)
        back = pair.endpoint.datagrams_to_send(pair.now)
        cpu["server"] += time.process_time() - t
        t = time.process_time()
        for data, _ in back:
            pair.client.receive_datagram(data, SERVER_ADDR, pair.now)
        cpu["client"] += time.process_time() - t
        pair.now += 1e-5
        if pair.client.is_verified and pair.endpoint.connections[0].is_verified:
            break
    assert pair.client.is_verified and pair.endpoint.connections[0].is_verified
    print(f"\nQUIC handshake CPU: client {cpu['client'] * 1e3:.1f} ms, "
          f"server {cpu['server'] * 1e3:.1f} ms")


def test_wrong_expected_peer_is_refused():
    pair = Pair(expected_peer=Keypair.generate().peer_id)
    pair.run(until=lambda: pair.client.is_terminated and not pair.endpoint.connections)
    assert isinstance(pair.client.handshake_error, PeerIdMismatch)
    assert not of(pair.client_events, HandshakeComplete)
    (ended,) = of(pair.client_events, SessionTerminated)
    assert ended.error is not None
    with pytest.raises(StreamLimitError):
        pair.client.open_stream()
    # the server learnt it from our CONNECTION_CLOSE and never verified the client
    assert not of(pair.server_events, HandshakeComplete)
    assert of(pair.server_events, SessionTerminated)


def _raw_client(certificate=None, private_key=None, alpn=(ALPN,)) -> QuicConnection:
    config = QuicConfiguration(is_client=True, alpn_protocols=list(alpn),
                               verify_mode=ssl.CERT_NONE, certificate=certificate,
                               private_key=private_key)
    return QuicConnection(configuration=config)


def _raw_pair(raw: QuicConnection) -> Pair:
    """A Pair whose client is a plain aioquic connection (driven through a shim)."""
    class Shim:
        is_verified = False

        def __init__(self):
            self.events = []

        @property
        def is_terminated(self):
            return any(isinstance(e, quic_events.ConnectionTerminated) for e in self.events)

        def datagrams_to_send(self, now):
            return raw.datagrams_to_send(now)

        def drain(self):
            while (event := raw.next_event()) is not None:
                self.events.append(event)
            return []

        def receive_datagram(self, data, addr, now):
            raw.receive_datagram(data, addr, now)
            return self.drain()

        def get_timer(self):
            return raw.get_timer()

        def handle_timer(self, now):
            raw.handle_timer(now)
            return self.drain()

    raw.connect(SERVER_ADDR, now=0.0)
    return Pair(client=Shim())


def test_client_without_certificate_is_refused():
    """aioquic's server would accept an empty client Certificate; we close."""
    pair = _raw_pair(_raw_client())
    pair.run(until=lambda: pair.client.is_terminated)
    closes = [e for e in pair.client.events if isinstance(e, quic_events.ConnectionTerminated)]
    assert closes[0].error_code == BAD_CERTIFICATE
    assert "no certificate" in closes[0].reason_phrase
    assert not of(pair.server_events, HandshakeComplete)
    assert not pair.endpoint.connections  # nothing kept for it


def test_certificate_without_libp2p_extension_is_refused():
    cert_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")])
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    plain = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .serial_number(1).public_key(cert_key.public_key())
             .not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=1))
             .sign(cert_key, hashes.SHA256()))
    pair = Pair(endpoint_kwargs={"identity": QuicIdentity(key(), cert_key, plain)})
    pair.run(until=lambda: pair.client.is_terminated)
    assert isinstance(pair.client.handshake_error, InvalidCertificate)
    assert "extension" in str(pair.client.handshake_error)


def test_wrong_alpn_is_refused():
    pair = _raw_pair(_raw_client(alpn=("h3",)))
    pair.run(until=lambda: pair.client.is_terminated and not pair.endpoint.connections)
    assert not of(pair.server_events, HandshakeComplete)
    assert not pair.endpoint.connections


def test_the_server_sends_a_certificate_request():
    """Without our hook aioquic's server never asks, and the client sends nothing."""
    identity = QuicIdentity(key())
    raw = _raw_client(identity.certificate, identity.cert_key)
    pair = _raw_pair(raw)
    pair.run(until=lambda: pair.endpoint.connections and pair.server.is_verified)
    assert pair.server.remote_peer_id == key().peer_id


# -- streams ----------------------------------------------------------------------------

def test_streams_both_ways_with_data_and_fin():
    pair = connected()
    sid = pair.client.open_stream()
    assert pair.client.send_data(sid, b"ping") == 4
    pair.client.close_stream(sid)
    pair.run()
    assert of(pair.server_events, StreamOpened) == [StreamOpened(sid)]
    assert received(pair.server_events, sid) == b"ping"
    assert of(pair.server_events, StreamEnded, sid)
    with pytest.raises(StreamClosedError):
        pair.client.send_data(sid, b"more")
    pair.server.consumed(sid, 4)
    pair.server.send_data(sid, b"pong")
    pair.server.close_stream(sid)
    # the server opens one too
    back = pair.server.open_stream()
    pair.server.send_data(back, b"hello")
    pair.run()
    assert received(pair.client_events, sid) == b"pong"
    assert of(pair.client_events, StreamEnded, sid)
    assert of(pair.client_events, StreamOpened) == [StreamOpened(back)]
    assert received(pair.client_events, back) == b"hello"
    assert pair.client.stream_count == 1 and pair.server.stream_count == 1  # sid is done


def test_reset_sends_reset_stream_and_stop_sending():
    pair = connected()
    sid = pair.client.open_stream()
    pair.client.send_data(sid, b"x" * 1000)
    pair.run()
    pair.server.send_data(sid, b"y" * 1000)
    pair.client.reset_stream(sid)
    pair.run()
    assert of(pair.server_events, StreamReset, sid)
    with pytest.raises(StreamClosedError):
        pair.server.send_data(sid, b"z")
    with pytest.raises(StreamClosedError):
        pair.client.reset_stream(sid)
    assert pair.client.stream_count == pair.server.stream_count == 0


def test_peer_stop_sending_alone_ends_the_stream():
    """A peer's STOP_SENDING (e.g. go-libp2p CloseRead) resets our sending side."""
    pair = connected()
    sid = pair.client.open_stream()
    pair.client.send_data(sid, b"abc")
    pair.run()
    pair.server._conn.stop_stream(sid, 0)  # a peer that only stops reading
    pair.run()
    assert of(pair.client_events, StreamReset, sid)
    with pytest.raises(StreamClosedError):
        pair.client.send_data(sid, b"x")


def _transfer(pair: Pair, sender: QuicMuxer, receiver_events: list, receiver: QuicMuxer,
              sid: int, data: bytes) -> bytes:
    """Write ``data`` on ``sid`` as the window allows; read and consume on the other
    side; return what arrived (FIN seen)."""
    got = bytearray()
    off, ended = 0, False
    view = memoryview(data)
    for _ in range(400_000):
        while off < len(data):
            n = sender.send_data(sid, view[off:off + 65536])
            off += n
            if not n:
                break
        if off == len(data) and sid in sender._streams and not sender._streams[sid].local_closed:
            sender.close_stream(sid)
        for event in receiver_events:
            if isinstance(event, DataReceived) and event.stream_id == sid:
                got += event.data
                receiver.consumed(sid, len(event.data))
            elif isinstance(event, StreamEnded) and event.stream_id == sid:
                ended = True
        receiver_events.clear()
        if ended:
            return bytes(got)
        pair.step()
        pair.now += 1e-5
        pair.fire_timers()
    raise AssertionError(f"transfer stalled at {len(got)} of {len(data)}")


def test_16_mib_on_one_stream_with_sha256():
    pair = connected()
    data = os.urandom(16 * 1024 * 1024)
    sid = pair.client.open_stream()
    pair.client_events.clear()
    wall, cpu, wire = time.perf_counter(), time.process_time(), pair.wire_bytes
    got = _transfer(pair, pair.client, pair.server_events, pair.server, sid, data)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    mib = len(data) / 2 ** 20
    print(f"\nQUIC in memory: {mib / wall:.1f} MiB/s, {cpu / mib * 1e3:.0f} ms CPU per MiB "
          f"(both sides), {(pair.wire_bytes - wire) / len(data):.3f} wire bytes per byte")


def test_100_streams_each_way():
    pair = connected()
    sids = [pair.client.open_stream() for _ in range(100)]
    for i, sid in enumerate(sids):
        pair.client.send_data(sid, f"request {i}".encode())
        pair.client.close_stream(sid)
    pair.run()
    assert len(of(pair.server_events, StreamOpened)) == 100
    for i, sid in enumerate(sids):
        assert received(pair.server_events, sid) == f"request {i}".encode()
        pair.server.consumed(sid, len(f"request {i}"))
        pair.server.send_data(sid, f"reply {i}".encode() * 100)
        pair.server.close_stream(sid)
    pair.run()
    for i, sid in enumerate(sids):
        assert received(pair.client_events, sid) == f"reply {i}".encode() * 100
    assert len(of(pair.client_events, StreamEnded)) == 100
    assert pair.client.stream_count == pair.server.stream_count == 0


def test_open_stream_limit():
    pair = connected(client_kwargs={"max_streams": 3})
    for _ in range(3):
        pair.client.open_stream()
    with pytest.raises(StreamLimitError):
        pair.client.open_stream()


def test_peer_opening_streams_beyond_our_limit_is_closed():
    """Our MAX_STREAMS is max_streams; a peer ignoring it gets STREAM_LIMIT_ERROR."""
    pair = connected(client_kwargs={"max_streams": 1000}, server_kwargs={"max_streams": 4})
    pair.client._conn._remote_max_streams_bidi = 10 ** 6  # a peer that ignores the limit
    for _ in range(6):
        pair.client.send_data(pair.client.open_stream(), b"x")
    pair.run(until=lambda: pair.client.is_terminated)
    assert len(of(pair.server_events, StreamOpened)) <= 4
    (ended,) = of(pair.client_events, SessionTerminated)
    assert ended.error is not None


def test_streams_wait_at_the_peer_limit_then_go_on():
    pair = connected(client_kwargs={"max_streams": 100}, server_kwargs={"max_streams": 4})
    sids = [pair.client.open_stream() for _ in range(8)]
    for sid in sids:
        pair.client.send_data(sid, b"hi")
        pair.client.close_stream(sid)
    pair.run()
    opened = [e.stream_id for e in of(pair.server_events, StreamOpened)]
    assert len(opened) == 4
    for sid in opened:  # finishing streams lets the client open more
        pair.server.close_stream(sid)
    pair.run()
    assert len(of(pair.server_events, StreamOpened)) == 8


# -- the FIN-only STREAM frame defect ---------------------------------------------------

def _fins_after_data(pair: Pair, count: int) -> int:
    """Open ``count`` streams, deliver data on each, then FIN them all at once (one
    FIN-only STREAM frame per stream, packed into full packets). Streams that ended."""
    sids = [pair.client.open_stream() for _ in range(count)]
    for sid in sids:
        pair.client.send_data(sid, b"d" * 37)
    pair.run()
    assert len(of(pair.server_events, StreamOpened)) == count
    for sid in sids:
        pair.client.close_stream(sid)
    pair.run()
    for _ in range(5):  # plenty of loss-recovery time: a lost FIN would be resent
        pair.advance_to_next_timer()
        pair.run()
    return len(of(pair.server_events, StreamEnded))


def test_fin_only_frames_are_not_lost_when_packets_fill():
    pair = connected(client_kwargs={"max_streams": 256}, server_kwargs={"max_streams": 256})
    assert _fins_after_data(pair, 250) == 250


def test_the_fin_defect_reproduced_with_the_old_get_frame(monkeypatch):
    """aioquic < 1.7 handed out a FIN-only frame even without room for it; the packet
    builder then refused it and the FIN was never sent again. The test above catches
    that behaviour (put back here): streams never end."""
    fixed = QuicStreamSender.get_frame

    def old_get_frame(self, max_size, max_offset=None):
        if max_size < 0 and len(self._pending) == 0 and self._pending_eof:
            self._pending_eof = False
            return QuicStreamFrame(fin=True, offset=self._buffer_fin)
        return fixed(self, max_size, max_offset)

    monkeypatch.setattr(QuicStreamSender, "get_frame", old_get_frame)
    pair = connected(client_kwargs={"max_streams": 256}, server_kwargs={"max_streams": 256})
    assert _fins_after_data(pair, 250) < 250


def test_fin_only_frame_waits_for_room():
    """Unit view of the fix in 1.7.2: no room, no FIN handed out; room, FIN."""
    sender = QuicStreamSender(stream_id=0, writable=True)
    sender.write(b"abc")
    assert sender.get_frame(100).data == b"abc"
    sender.write(b"", end_stream=True)
    assert sender.get_frame(-1) is None
    frame = sender.get_frame(0)
    assert frame is not None and frame.fin and frame.offset == 3


# -- flow control and back-pressure -----------------------------------------------------

def test_send_window_drops_to_zero_when_the_peer_does_not_read_and_resumes():
    window, buffer = 64 * 1024, 32 * 1024
    pair = connected(client_kwargs={"send_buffer": buffer},
                     server_kwargs={"stream_window": window})
    sid = pair.client.open_stream()
    sent = 0
    for _ in range(200):
        sent += pair.client.send_data(sid, b"z" * 8192)
        pair.run()
        if pair.client.send_window(sid) == 0:
            break
    assert pair.client.send_window(sid) == 0
    held = sum(len(e.data) for e in of(pair.server_events, DataReceived, sid))
    assert held <= window  # the non-reading receiver holds at most its window
    assert sent <= window + buffer
    pair.client_events.clear()
    pair.server.consumed(sid, held)  # the application reads: MAX_STREAM_DATA
    pair.run()
    assert of(pair.client_events, SendWindowUpdated, sid)
    assert pair.client.send_window(sid) > 0


def test_consumed_rejects_more_than_was_delivered():
    pair = connected()
    sid = pair.client.open_stream()
    pair.client.send_data(sid, b"abc")
    pair.run()
    with pytest.raises(ValueError):
        pair.server.consumed(sid, 4)
    pair.server.consumed(sid, 3)
    pair.server.consumed(12345, 10)  # unknown stream: no-op


# -- keepalive and idle timeout ---------------------------------------------------------

def test_silent_peer_is_detected_by_the_idle_timeout():
    kw = {"idle_timeout": 6.0, "keepalive_interval": 2.0}
    pair = connected(client_kwargs=kw, server_kwargs=kw)
    start = pair.now
    pair.drop = lambda data, to_server: not to_server  # the server goes silent
    for _ in range(1000):
        if pair.client.is_terminated:
            break
        pair.advance_to_next_timer(limit=1.0)
        pair.step()
    assert pair.client.is_terminated
    (ended,) = of(pair.client_events, SessionTerminated)
    assert "idle" in ended.reason.lower()
    assert 5.0 <= pair.now - start <= 8.0


@pytest.mark.parametrize("keepalive, alive", [(2.0, True), (None, False)])
def test_keepalive_keeps_an_idle_connection_open(keepalive, alive):
    kw = {"idle_timeout": 6.0, "keepalive_interval": keepalive}
    pair = connected(client_kwargs=kw, server_kwargs={"idle_timeout": 6.0,
                                                      "keepalive_interval": None})
    end = pair.now + 30.0
    while pair.now < end and not pair.client.is_terminated:
        pair.advance_to_next_timer(limit=1.0)
        pair.run()
    assert pair.client.is_terminated is not alive
    assert bool(pair.endpoint.connections) is alive


def test_close_reaches_the_peer():
    pair = connected()
    pair.client.close(0, "bye")
    pair.run(until=lambda: pair.client.is_terminated and not pair.endpoint.connections)
    (ended,) = of(pair.server_events, SessionTerminated)
    assert ended.error is None and ended.reason == "bye"


def test_go_away_resets_new_inbound_streams_and_keeps_old_ones():
    pair = connected()
    old = pair.client.open_stream()
    pair.client.send_data(old, b"before")
    pair.run()
    pair.server.go_away()
    with pytest.raises(StreamLimitError):
        pair.server.open_stream()
    new = pair.client.open_stream()
    pair.client.send_data(new, b"after")
    pair.client.send_data(old, b" and still")
    pair.run()
    assert of(pair.client_events, StreamReset, new)
    assert [e.stream_id for e in of(pair.server_events, StreamOpened)] == [old]
    assert received(pair.server_events, old) == b"before and still"
    assert pair.server.has_flow_control and pair.server.outbound_unacked == 0


def test_peer_opening_a_unidirectional_stream_is_closed():
    """libp2p uses bidirectional streams only: we allow the peer no unidirectional one."""
    pair = connected()
    raw = pair.client._conn
    raw._remote_max_streams_uni = 10  # a peer that ignores our MAX_STREAMS_UNI of 0
    raw.send_stream_data(raw.get_next_available_stream_id(is_unidirectional=True), b"x")
    pair.run(until=lambda: pair.client.is_terminated)
    (ended,) = of(pair.client_events, SessionTerminated)
    assert ended.error is not None
    assert not of(pair.server_events, StreamOpened)


def test_peer_sending_beyond_the_granted_window_is_closed():
    """The window we grant on read is also the one aioquic enforces on receipt."""
    window = 64 * 1024
    pair = connected(server_kwargs={"stream_window": window},
                     client_kwargs={"send_buffer": 8 * window})
    sid = pair.client.open_stream()
    pair.client.send_data(sid, b"a" * 1000)
    pair.run()
    pair.client._conn._streams[sid].max_stream_data_remote = 10 ** 9  # ignores our limit
    pair.client.send_data(sid, b"b" * (2 * window))
    pair.run(until=lambda: pair.client.is_terminated)
    (ended,) = of(pair.client_events, SessionTerminated)
    assert ended.error is not None
    assert len(received(pair.server_events, sid)) <= window
