"""Fuzz targets: every engine and codec that reads bytes a remote peer chose.

Each :class:`Target` has a corpus of *valid* inputs (built here with our own engines,
deterministically) and a ``run(data, rng)`` function that feeds one input to a fresh
engine, split at random points. ``allowed`` lists the exceptions that input may raise
(the engine's own protocol error, ``ValueError`` for codecs); anything else escaping
``run`` is a finding.

Engines that must never raise for peer input (yamux, mplex ``receive_data``) have
``allowed = ()``; after feeding, the target also drives the engine's local API (timers,
``consumed``, ``data_to_send``, opening streams) to catch state corrupted by the input.
"""

from __future__ import annotations

import random
import types
from dataclasses import dataclass, field
from typing import Callable

from multiaddr import Multiaddr

from libp2p_stream_sync.codec import base58, cid, multihash, protobuf, varint
from libp2p_stream_sync.engines import muxer_events as mev
from libp2p_stream_sync.engines import yamux as yx
from libp2p_stream_sync.engines.mplex import MplexSession
from libp2p_stream_sync.engines.multistream import (
    MultistreamDialer, MultistreamListener, encode_message)
from libp2p_stream_sync.engines.noise import (
    NoiseHandshake, NoiseTransport, decode_handshake_payload, encode_handshake_payload,
    SIGNATURE_PREFIX)
from libp2p_stream_sync.engines.noise_state import x25519_private_key, x25519_public_bytes
from libp2p_stream_sync.engines import tls
from libp2p_stream_sync.engines.tls_certificate import (
    TlsError, make_certificate, verify_certificate_chain)
from libp2p_stream_sync.engines.websocket import WebSocketEngine, WebSocketError, load_wsproto
from libp2p_stream_sync.errors import DecodeError, ProtocolError
from libp2p_stream_sync.identity import Keypair, PeerId, PublicKey
from libp2p_stream_sync.identity.keys import KeyType, encode_key_message
from libp2p_stream_sync.node import Node
from libp2p_stream_sync.protocols import identify
from libp2p_stream_sync.transport import tcp


@dataclass
class Target:
    name: str
    corpus: list[bytes]
    run: Callable[[bytes, random.Random], None]
    allowed: tuple[type[BaseException], ...]
    #: Largest random (non-mutated) input.
    max_random: int = 512
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- helpers


def split_feed(data: bytes, rng: random.Random, feed: Callable[[bytes], object],
               stop: Callable[[], bool] | None = None) -> list:
    """Feed ``data`` in random pieces (sometimes whole, sometimes byte by byte).

    ``stop()`` true ends the feeding (the engine is done; the rest belongs to the next
    protocol); the unfed rest is then returned as the last element, as ``("rest", b)``.
    """
    results = []
    mode = rng.random()
    if mode < 0.4:
        results.append(feed(data))
        return results
    byte_by_byte = mode > 0.9 and len(data) <= 4096
    pos = 0
    while pos < len(data):
        if stop is not None and stop():
            results.append(("rest", data[pos:]))
            break
        step = 1 if byte_by_byte else rng.randint(1, max(1, len(data) // 3 + 1))
        piece = data[pos:pos + step]
        # memoryview and bytearray inputs must work as well as bytes
        kind = rng.randrange(3)
        results.append(feed(piece if kind == 0 else bytearray(piece) if kind == 1
                            else memoryview(piece)))
        pos += step
    return results


def _seed_keypair(n: int) -> Keypair:
    return Keypair.from_seed(bytes([n]) * 32)


_KP_I = _seed_keypair(1)
_KP_R = _seed_keypair(2)
_STATIC_I, _EPH_I = b"\x11" * 32, b"\x12" * 32
_STATIC_R, _EPH_R = b"\x21" * 32, b"\x22" * 32
_MUXERS = ["/yamux/1.0.0", "/mplex/6.7.0"]


def _initiator(**kw) -> NoiseHandshake:
    return NoiseHandshake(_KP_I, initiator=True, muxers=_MUXERS, static_key=_STATIC_I,
                          _ephemeral_key=_EPH_I, **kw)


def _responder(**kw) -> NoiseHandshake:
    return NoiseHandshake(_KP_R, initiator=False, muxers=_MUXERS, static_key=_STATIC_R,
                          _ephemeral_key=_EPH_R, **kw)


def _valid_handshake() -> tuple[bytes, bytes, bytes, NoiseTransport, NoiseTransport]:
    """The three framed XX messages of a deterministic handshake, and both transports."""
    i, r = _initiator(), _responder()
    m1 = i.data_to_send()
    r.receive_data(m1)
    m2 = r.data_to_send()
    i.receive_data(m2)
    m3 = i.data_to_send()
    r.receive_data(m3)
    assert i.complete and r.complete
    return m1, m2, m3, i.to_transport()[0], r.to_transport()[0]


MSG1, MSG2, MSG3, _T_I, _T_R = _valid_handshake()


# ---------------------------------------------------------------- multistream


def _ms_corpus_for_dialer() -> list[bytes]:
    h = encode_message("/multistream/1.0.0")
    return [h + encode_message("/noise"), h + encode_message("na") + encode_message("/yamux/1.0.0"),
            h + encode_message("/yamux/1.0.0") + b"leftover", h, h + encode_message("na") * 3,
            encode_message("/noise")]


def _run_ms_dialer(data: bytes, rng: random.Random) -> None:
    lazy = rng.random() < 0.3
    d = MultistreamDialer(["/noise"] if lazy else ["/noise", "/yamux/1.0.0"], lazy=lazy)
    d.data_to_send()
    for result in split_feed(data, rng, d.receive_data, lambda: d.finished):
        if isinstance(result, tuple):
            break
        d.data_to_send()
        if result is not None:
            assert result.protocol in ("/noise", "/yamux/1.0.0"), result
            break


def _ms_corpus_for_listener() -> list[bytes]:
    h = encode_message("/multistream/1.0.0")
    return [MultistreamDialer(["/noise"]).data_to_send(),
            MultistreamDialer(["/x", "/noise"]).data_to_send(),
            h + encode_message("ls") + encode_message("/noise") + b"\x00\x01tail",
            h + encode_message("/unknown") + encode_message("/echo/1.0.0"),
            h + encode_message("a" * 300)]


def _run_ms_listener(data: bytes, rng: random.Random) -> None:
    supported = {"/noise", "/echo/1.0.0"}
    lst = MultistreamListener(supported.__contains__,
                              list_protocols=(lambda: sorted(supported))
                              if rng.random() < 0.5 else None)
    lst.data_to_send()
    for result in split_feed(data, rng, lst.receive_data, lambda: lst.finished):
        if isinstance(result, tuple):
            break
        lst.data_to_send()
        if result is not None:
            assert result.protocol in supported
            break


# ---------------------------------------------------------------- noise handshake


def _run_noise_responder_msg1(data: bytes, rng: random.Random) -> None:
    r = _responder()
    split_feed(data, rng, r.receive_data)
    r.data_to_send()
    assert not r.complete, "handshake completed from message 1 alone"


def _run_noise_initiator_msg2(data: bytes, rng: random.Random) -> None:
    i = _initiator(expected_peer=_KP_R.peer_id if rng.random() < 0.5 else None)
    i.data_to_send()
    results = split_feed(data, rng, i.receive_data, lambda: i.complete)
    i.data_to_send()
    if i.complete:
        # Only the genuine responder (or a message that decrypts and authenticates as it)
        # may complete the handshake.
        assert i.remote_peer_id == _KP_R.peer_id
        i.selected_muxer()
        t, leftover = i.to_transport()
        t.receive_data(leftover)
        if results and isinstance(results[-1], tuple):
            t.receive_data(results[-1][1])


def _run_noise_responder_msg3(data: bytes, rng: random.Random) -> None:
    r = _responder()
    r.receive_data(MSG1)
    r.data_to_send()
    results = split_feed(data, rng, r.receive_data, lambda: r.complete)
    if r.complete:
        assert r.remote_peer_id == _KP_I.peer_id
        t, leftover = r.to_transport()
        t.receive_data(leftover)
        if results and isinstance(results[-1], tuple):
            t.receive_data(results[-1][1])


def _payload_corpus() -> list[bytes]:
    static_pub = x25519_public_bytes(x25519_private_key(_STATIC_R))
    out = []
    for kp in (_KP_R, Keypair.generate(KeyType.SECP256K1), Keypair.generate(KeyType.ECDSA),
               Keypair.generate(KeyType.RSA)):
        out.append(encode_handshake_payload(kp.public_key.to_protobuf(),
                                            kp.sign(SIGNATURE_PREFIX + static_pub), _MUXERS))
    # an unsupported key type, an empty signature, no muxers
    out.append(encode_handshake_payload(encode_key_message(7, b"\x01" * 32), b"\x00" * 64))
    out.append(encode_handshake_payload(_KP_R.public_key.to_protobuf(), b"\x01"))
    out.append(encode_handshake_payload(_KP_R.public_key.to_protobuf(),
                                        _KP_R.sign(SIGNATURE_PREFIX + static_pub)))
    return out


def _run_noise_payload(data: bytes, rng: random.Random) -> None:
    """A responder sends ``data`` as its (properly encrypted) handshake payload."""
    decode_ok = True
    try:
        decode_handshake_payload(data)
    except ProtocolError:
        decode_ok = False
    if len(data) > 65535 - 32 - 32 - 32:
        return
    r = _responder()
    r._payload = bytes(data)  # what the responder's message 2 carries
    i = _initiator()
    r.receive_data(i.data_to_send())
    m2 = r.data_to_send()
    try:
        i.receive_data(m2)
    except ProtocolError:
        return
    assert decode_ok, "initiator accepted a payload that does not decode"
    assert i.remote_public_key is not None
    assert PeerId.from_public_key(i.remote_public_key) == i.remote_peer_id


# ---------------------------------------------------------------- noise transport


def _transport_corpus() -> list[bytes]:
    a, b = _valid_handshake()[3:]
    frames = [a.encrypt(b"hello"), a.encrypt(b"x" * 70000), a.encrypt(b"")]
    frames.append(bytes(a.encrypt(b"one")) + bytes(a.encrypt(b"two")))
    return [bytes(f) for f in frames if f]


def _run_noise_transport(data: bytes, rng: random.Random) -> None:
    i, r = _valid_handshake()[3:]
    use_buffer = rng.random() < 0.3

    def feed(piece):
        if use_buffer:
            buf = r.get_buffer(max(1, len(piece)))
            n = min(len(buf), len(piece))
            buf[:n] = bytes(piece)[:n]
            return r.buffer_updated(n)
        return r.receive_data(piece)

    split_feed(data, rng, feed)


# ---------------------------------------------------------------- muxers


def _drive_muxer(sess, events: list, rng: random.Random) -> None:
    """Exercise the local API after hostile input; none of it may misbehave.

    Events are handled in order, as the node does: a stream id reused after a reset
    names a new stream, so unread data of the old one is not consumed on it.
    """
    now = 1.0
    unread: dict[int, int] = {}
    for ev in events:
        sid = getattr(ev, "stream_id", None)
        try:
            if isinstance(ev, mev.DataReceived):
                unread[sid] = unread.get(sid, 0) + len(ev.data)
                if rng.random() < 0.5:
                    sess.consumed(sid, unread.pop(sid), now)
            elif isinstance(ev, mev.StreamReset):
                unread.pop(sid, None)
            elif isinstance(ev, mev.StreamOpened) and rng.random() < 0.5:
                unread.pop(sid, None)
                sess.send_data(sid, b"reply")
                sess.close_stream(sid)
            elif isinstance(ev, mev.StreamOpened):
                unread.pop(sid, None)
                sess.reset_stream(sid)
        except mev.StreamClosedError:
            unread.pop(sid, None)
    for sid, n in unread.items():
        try:
            sess.consumed(sid, n, now)
        except mev.StreamClosedError:
            pass
    sess.data_to_send()
    timer = sess.get_timer()
    if timer is not None:
        sess.handle_timer(timer + 100.0)
    sess.data_to_send()
    if not sess.is_terminated:
        try:
            sid = sess.open_stream()
            sess.send_data(sid, b"x" * 10)
        except (mev.StreamLimitError, mev.StreamClosedError):
            pass
        sess.data_to_send()


def _yamux_corpus() -> list[bytes]:
    out = []
    a = yx.YamuxSession(True)
    a.data_to_send()  # its initial ping
    s1 = a.open_stream()
    a.send_data(s1, b"hello")
    a.close_stream(s1)
    out.append(bytes(a.data_to_send()))
    s2 = a.open_stream()
    a.send_data(s2, b"z" * 1000)
    a.reset_stream(s2)
    a.ping(7)
    out.append(bytes(a.data_to_send()))
    a.go_away(0)
    out.append(bytes(a.data_to_send()))
    b = yx.YamuxSession(False)
    out.append(bytes(b.data_to_send()))  # a ping
    # hand-made frames: window update beyond 2^32, data larger than the window, bad version
    hdr = yx.HEADER.pack
    out.append(hdr(0, yx.TYPE_WINDOW_UPDATE, yx.FLAG_SYN, 1, 0xFFFFFFFF))
    out.append(hdr(0, yx.TYPE_DATA, yx.FLAG_SYN, 1, 300000) + b"\0" * 300000)
    out.append(hdr(1, yx.TYPE_PING, 0, 0, 0))
    out.append(hdr(0, yx.TYPE_DATA, yx.FLAG_SYN | yx.FLAG_FIN | yx.FLAG_RST, 3, 2) + b"ab")
    out.append(hdr(0, yx.TYPE_PING, yx.FLAG_ACK, 0, 0))
    return out


def _run_yamux(data: bytes, rng: random.Random) -> None:
    initiator = rng.random() < 0.5
    sess = yx.YamuxSession(initiator, max_streams=16, max_pending_inbound=8,
                           keepalive_interval=1.0, keepalive_timeout=1.0)
    if rng.random() < 0.5:
        sess.open_stream()
    sess.data_to_send()
    events: list = []
    for evs in split_feed(data, rng, sess.receive_data):
        events.extend(evs)
    _check_events(events)
    _drive_muxer(sess, events, rng)


def _mplex_corpus() -> list[bytes]:
    out = []
    a = MplexSession(True)
    s1 = a.open_stream()
    a.send_data(s1, b"hello")
    a.close_stream(s1)
    out.append(bytes(a.data_to_send()))
    s2 = a.open_stream()
    a.send_data(s2, b"q" * 5000)
    a.reset_stream(s2)
    out.append(bytes(a.data_to_send()))
    # hand-made: message on an unknown stream, new stream with a name, huge length
    v = varint.encode_uvarint
    out.append(v((5 << 3) | 2) + v(3) + b"abc")
    out.append(v((0 << 3) | 0) + v(4) + b"name" + v((0 << 3) | 2) + v(2) + b"hi")
    out.append(v((1 << 3) | 0) + v(1 << 40))
    return out


def _run_mplex(data: bytes, rng: random.Random) -> None:
    sess = MplexSession(rng.random() < 0.5, max_streams=16,
                        max_buffered_per_stream=4096, max_message_size=8192)
    if rng.random() < 0.5:
        sess.open_stream()
    events: list = []
    for evs in split_feed(data, rng, sess.receive_data):
        events.extend(evs)
    _check_events(events)
    _drive_muxer(sess, events, rng)


def _check_events(events: list) -> None:
    allowed = (mev.StreamOpened, mev.DataReceived, mev.StreamEnded, mev.StreamReset,
               mev.SendWindowUpdated, mev.PingAcked, mev.GoAwayReceived,
               mev.SessionTerminated)
    for ev in events:
        assert isinstance(ev, allowed), ev
        if isinstance(ev, mev.DataReceived):
            assert isinstance(ev.data, (bytes, bytearray)), type(ev.data)
        if isinstance(ev, mev.SessionTerminated) and ev.error is not None:
            assert isinstance(ev.error, mev.MuxerError)


# ---------------------------------------------------------------- identify / multiaddrs

_ID_PEER = _KP_R.peer_id


def _identify_corpus() -> list[bytes]:
    addrs = [Multiaddr("/ip4/127.0.0.1/tcp/4001").to_bytes(),
             Multiaddr("/ip6/::1/tcp/4001").to_bytes(),
             Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{_ID_PEER}").to_bytes(),
             Multiaddr("/dns4/example.com/tcp/443").to_bytes(),
             Multiaddr("/ip4/127.0.0.1/udp/1/quic-v1").to_bytes()]
    full = identify.encode_message(public_key=_KP_R.public_key.to_protobuf(),
                                   listen_addrs=addrs, observed_addr=addrs[0],
                                   protocols=["/echo/1.0.0", "/ipfs/id/1.0.0"])
    other = identify.encode_message(public_key=_KP_I.public_key.to_protobuf(),
                                    listen_addrs=[], observed_addr=None, protocols=[])
    return [full, full + full, other, full[:len(full) // 2]]


def _fake_addressbook():
    from libp2p_stream_sync.addressbook import AddressBook
    from libp2p_stream_sync.transport import Transports
    from libp2p_stream_sync.dialer import Dialer
    book = AddressBook(16, lambda peer: False)
    dialer = types.SimpleNamespace(_transports=Transports(tcp.TcpTransport()))
    dialer.book_entry = lambda peer, addr: Dialer.book_entry(dialer, peer, addr)
    return types.SimpleNamespace(_addresses=book, _dialer=dialer)


def _run_identify(data: bytes, rng: random.Random) -> None:
    """A whole identify stream (length-prefixed messages), as read_messages sees it."""
    message = identify.merge_messages(identify.split_messages(data))
    info = identify.IdentifyInfo(_ID_PEER)
    try:
        identify.apply_message(info, message, push=rng.random() < 0.5)
    except identify.IdentifyError:
        return
    book = _fake_addressbook()
    for addr in info.listen_addrs:  # what BuiltinProtocols._store_message does
        str(addr)
        try:
            Node.add_address(book, _ID_PEER, addr)
        except ValueError:
            pass
    if info.observed_addr is not None:
        str(info.observed_addr)


def _multiaddr_corpus() -> list[bytes]:
    texts = ["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/0", "/dns4/a.b/tcp/1",
             "/dns6/x/tcp/65535", f"/ip4/1.2.3.4/tcp/1/p2p/{_ID_PEER}",
             "/ip4/127.0.0.1/udp/1/quic-v1", "/ip4/1.1.1.1/tcp/80/ws",
             f"/ip4/1.2.3.4/tcp/1/p2p/{_KP_I.peer_id}", "/unix/tmp%2Fx"]
    out = []
    for t in texts:
        try:
            out.append(Multiaddr(t).to_bytes())
        except Exception:
            pass
    return out


def _run_multiaddr(data: bytes, rng: random.Random) -> None:
    """Multiaddr bytes from a peer: identify's parsing, then the dial-side parsing."""
    for ma in identify._parse_addrs([data]):
        text = str(ma)
        try:
            target = tcp.parse_tcp_multiaddr(ma)
        except ValueError:
            target = None
        try:
            tcp.parse_tcp_multiaddr(text)
        except ValueError:
            pass
        if target is not None:
            assert 0 <= target.port <= 65535, target
        try:
            Node.add_address(_fake_addressbook(), _ID_PEER, ma)
        except ValueError:
            pass


# ---------------------------------------------------------------- identity


def _peer_id_corpus() -> list[bytes]:
    kps = [_KP_I, _KP_R, Keypair.generate(KeyType.RSA), Keypair.generate(KeyType.SECP256K1)]
    out = []
    for kp in kps:
        out += [kp.peer_id.to_bytes(), str(kp.peer_id).encode(),
                kp.peer_id.to_cid_string().encode()]
    return out


def _run_peer_id(data: bytes, rng: random.Random) -> None:
    pids = []
    try:
        pids.append(PeerId.from_bytes(data))
    except DecodeError:
        pass
    text = data.decode("latin-1") if rng.random() < 0.5 else data.decode("utf-8", "replace")
    try:
        pids.append(PeerId.from_string(text))
    except DecodeError:
        pass
    for pid in pids:
        s = str(pid)
        assert PeerId.from_string(s) == pid
        assert PeerId.from_string(pid.to_cid_string()) == pid
        assert PeerId.from_bytes(pid.to_bytes()) == pid
        hash(pid)
        try:  # an identity multihash may hold garbage: documented DecodeError
            key = pid.extract_public_key()
        except DecodeError:
            key = None
        if key is not None:
            assert PeerId.from_public_key(key) == pid


def _public_key_corpus() -> list[bytes]:
    return [kp.public_key.to_protobuf() for kp in (
        _KP_I, Keypair.generate(KeyType.RSA), Keypair.generate(KeyType.SECP256K1),
        Keypair.generate(KeyType.ECDSA))] + [encode_key_message(9, b"abc")]


def _run_public_key(data: bytes, rng: random.Random) -> None:
    key = PublicKey.from_protobuf(data)
    result = key.verify(b"message", bytes(rng.randbytes(rng.choice([0, 64, 71, 256]))))
    assert result in (True, False)
    assert PublicKey.from_protobuf(key.to_protobuf()) == key
    PeerId.from_public_key(key)


# ---------------------------------------------------------------- codecs

_SCHEMA = protobuf.Schema("Fuzz", [
    protobuf.Field(1, "u", "uint"), protobuf.Field(2, "b", "bytes"),
    protobuf.Field(3, "s", "string", repeated=True), protobuf.Field(4, "f", "bool"),
    protobuf.Field(5, "m", "message", schema=protobuf.Schema("Inner", [
        protobuf.Field(1, "x", "uint"), protobuf.Field(2, "y", "string")])),
])


def _run_codecs(data: bytes, rng: random.Random) -> None:
    decoded = varint.decode_uvarint(data, 0)
    if decoded is not None:
        assert varint.encode_uvarint(decoded[0])
    msg = None
    try:
        msg = protobuf.decode(_SCHEMA, data, max_size=4096)
    except ValueError:
        pass
    if msg is not None:
        protobuf.encode(_SCHEMA, msg)
    try:
        for _ in protobuf.iter_fields(data):
            pass
    except ValueError:
        pass
    text = data.decode("latin-1")
    for fn in (base58.decode, cid.decode):
        try:
            fn(text)
        except ValueError:
            pass
    for fn in (cid.decode_bytes, multihash.decode):
        try:
            fn(data)
        except ValueError:
            pass


def _codec_corpus() -> list[bytes]:
    return [protobuf.encode(_SCHEMA, {"u": 300, "b": b"abc", "s": ["x", "y"], "f": True,
                                      "m": {"x": 1, "y": "z"}}),
            varint.encode_uvarint(2 ** 63), base58.encode(b"\0\0hello").encode(),
            _KP_I.peer_id.to_cid_string().encode(), _KP_I.peer_id.to_bytes()]


# ---------------------------------------------------------------- tls


def _tls_identities() -> tuple[tls.TlsIdentity, tls.TlsIdentity]:
    return tls.TlsIdentity(_KP_I), tls.TlsIdentity(_KP_R)


def _tls_pair(identities) -> tuple[tls.TlsHandshake, tls.TlsHandshake]:
    client_identity, server_identity = identities
    client = tls.TlsHandshake(_KP_I, initiator=True, expected_peer=_KP_R.peer_id,
                              muxers=_MUXERS, identity=client_identity)
    server = tls.TlsHandshake(_KP_R, initiator=False, muxers=_MUXERS,
                              identity=server_identity)
    return client, server


def _tls_corpus(identities) -> dict[str, list[bytes]]:
    """A real handshake's flights and application records (TLS is not deterministic:
    a recorded server flight only parses up to the key exchange in a new handshake)."""
    client, server = _tls_pair(identities)
    hello = client.data_to_send()
    server.receive_data(hello)
    server_flight = server.data_to_send()
    client.receive_data(server_flight)
    client_transport, _ = client.to_transport()
    client_flight = client.data_to_send()
    server.receive_data(client_flight)
    tickets = server.data_to_send()
    server_transport, _ = server.to_transport()
    records = [server_transport.encrypt(b"hello"), server_transport.encrypt(b"x" * 40000),
               server_transport.close()]
    return {"client-hello": [hello, hello + client_flight],
            "server-flight": [server_flight, server_flight + tickets + records[0]],
            "records": [tickets + r for r in records]}


def _run_tls_server(data: bytes, rng: random.Random, identities) -> None:
    server = _tls_pair(identities)[1]
    split_feed(data, rng, server.receive_data, lambda: server.complete)
    server.data_to_send()
    assert not server.complete, "TLS server completed without the client's Finished"


def _run_tls_client(data: bytes, rng: random.Random, identities) -> None:
    client = _tls_pair(identities)[0]
    client.data_to_send()
    split_feed(data, rng, client.receive_data, lambda: client.complete)
    # A recorded server flight cannot complete a new handshake (fresh key shares).
    assert not client.complete, "TLS client completed against a replayed server flight"


def _run_tls_transport(data: bytes, rng: random.Random, identities) -> None:
    client, server = _tls_pair(identities)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    transport, _ = client.to_transport()
    transport.receive_data(server.data_to_send())  # tickets
    split_feed(data, rng, transport.receive_data)
    transport.encrypt(b"still usable")


def _certificate_corpus() -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.hazmat.primitives.asymmetric import ed25519
    certs = [make_certificate(kp)[1] for kp in (_KP_I, Keypair.generate(KeyType.SECP256K1),
                                                Keypair.generate(KeyType.RSA))]
    certs.append(make_certificate(_KP_R, ed25519.Ed25519PrivateKey.generate())[1])
    return [c.public_bytes(Encoding.DER) for c in certs]


def _run_tls_certificate(data: bytes, rng: random.Random) -> None:
    expected = _KP_I.peer_id if rng.random() < 0.5 else None
    peer = verify_certificate_chain([data], expected_peer=expected)
    assert PeerId.from_public_key(peer.public_key) == peer.peer_id


def _tls_targets() -> list[Target]:
    """The TLS targets (the handshake ones only when the pyOpenSSL extra is installed)."""
    targets = [Target("tls-certificate", _certificate_corpus(), _run_tls_certificate,
                      (TlsError,))]
    if not tls.tls_available():
        return targets
    identities = _tls_identities()
    corpus = _tls_corpus(identities)

    def bind(run):
        return lambda data, rng: run(data, rng, identities)
    targets += [
        Target("tls-server", corpus["client-hello"], bind(_run_tls_server), (TlsError,)),
        Target("tls-client", corpus["server-flight"], bind(_run_tls_client), (TlsError,)),
        Target("tls-transport", corpus["records"], bind(_run_tls_transport), (TlsError,)),
    ]
    return targets


# ---------------------------------------------------------------- websocket (server side)

_WS_REQUEST = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:4001\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")


def _ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked with a fixed key, so the corpus is deterministic)."""
    n = len(payload)
    length = (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
              if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
    key = b"\x11\x22\x33\x44"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode]) + length + key + masked


def _websocket_corpus() -> list[bytes]:
    r = _WS_REQUEST
    return [r + _ws_frame(2, b"/multistream/1.0.0\n"),
            r + _ws_frame(2, b"frag", fin=False) + _ws_frame(9, b"ping")
            + _ws_frame(0, b"ment") + _ws_frame(2, b"more")
            + _ws_frame(8, (1000).to_bytes(2, "big") + b"bye"),
            r + _ws_frame(1, "t\u00e9xt".encode()),
            r, r + _ws_frame(2, b"z" * 70000)[:200], r + _ws_frame(8, b""),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", r.replace(b"13", b"8"),
            r + bytes([0x82, 0xFF]) + b"\x7f" + b"\xff" * 7 + b"abcd"]


def _run_websocket_server(data: bytes, rng: random.Random) -> None:
    """Bytes from a would-be WebSocket client; only WebSocketError may escape."""
    engine = WebSocketEngine(client=False, max_message_size=rng.choice([1 << 20, 100]))
    for app in split_feed(data, rng, engine.receive_data):
        assert isinstance(app, bytes), type(app)
        assert isinstance(engine.data_to_send(), bytes)
    if engine.writable:
        engine.send(b"reply")
    engine.close()
    engine.data_to_send()
    if engine.eof:
        assert engine.close_code is not None


def _websocket_targets() -> list[Target]:
    try:
        load_wsproto()
    except ImportError:  # the optional extra is not installed: nothing to fuzz
        return []
    return [Target("websocket-server", _websocket_corpus(), _run_websocket_server,
                   (WebSocketError,))]


# ---------------------------------------------------------------- registry


def build_targets() -> dict[str, Target]:
    codec_err = (ValueError,)
    targets = [
        Target("multistream-dialer", _ms_corpus_for_dialer(), _run_ms_dialer, (ProtocolError,)),
        Target("multistream-listener", _ms_corpus_for_listener(), _run_ms_listener,
               (ProtocolError,)),
        Target("noise-msg1", [MSG1, MSG1 + b"\x00\x05extra"], _run_noise_responder_msg1,
               (ProtocolError,)),
        Target("noise-msg2", [MSG2, MSG2 + bytes(_valid_handshake()[3].encrypt(b"early"))],
               _run_noise_initiator_msg2, (ProtocolError,)),
        Target("noise-msg3", [MSG3, MSG3 + bytes(_valid_handshake()[3].encrypt(b"early"))],
               _run_noise_responder_msg3, (ProtocolError,)),
        Target("noise-payload", _payload_corpus(), _run_noise_payload, (ProtocolError,)),
        Target("noise-transport", _transport_corpus(), _run_noise_transport,
               (ProtocolError,)),
        Target("yamux", _yamux_corpus(), _run_yamux, ()),
        Target("mplex", _mplex_corpus(), _run_mplex, ()),
        Target("identify", _identify_corpus(), _run_identify, (DecodeError,)),
        Target("multiaddr", _multiaddr_corpus(), _run_multiaddr, ()),
        Target("peer-id", _peer_id_corpus(), _run_peer_id, ()),
        Target("public-key", _public_key_corpus(), _run_public_key, (DecodeError,)),
        Target("codecs", _codec_corpus(), _run_codecs, codec_err),
        *_tls_targets(),
        *_quic_targets(),
        *_websocket_targets(),
    ]
    return {t.name: t for t in targets}


# ---------------------------------------------------------------- quic

_QUIC_SERVER_ADDR, _QUIC_CLIENT_ADDR = ("127.0.0.1", 4433), ("127.0.0.1", 5544)


def _quic_connect(identities, record: list[bytes] | None = None):
    """A client engine and a server endpoint, handshake done (``record`` gets every
    datagram the client sent), moving datagrams in memory on a fake clock."""
    from libp2p_stream_sync.engines.quic import QuicMuxer
    from libp2p_stream_sync.engines.quic_endpoint import QuicEndpoint
    client_identity, server_identity = identities
    endpoint = QuicEndpoint(_KP_R, identity=server_identity)
    client = QuicMuxer.client(_KP_I, _QUIC_SERVER_ADDR, 0.0, expected_peer=_KP_R.peer_id,
                              identity=client_identity)
    now = 0.0
    for _ in range(200):
        now += 1e-5
        for data, _addr in client.datagrams_to_send(now):
            if record is not None:
                record.append(data)
            endpoint.receive_datagram(data, _QUIC_CLIENT_ADDR, now)
        for data, _addr in endpoint.datagrams_to_send(now):
            client.receive_datagram(data, _QUIC_SERVER_ADDR, now)
        if client.is_verified and endpoint.connections and endpoint.connections[0].is_verified:
            break
    sid = client.open_stream()
    client.send_data(sid, b"hello quic" * 100)
    client.close_stream(sid)
    for data, _addr in client.datagrams_to_send(now):
        if record is not None:
            record.append(data)
        endpoint.receive_datagram(data, _QUIC_CLIENT_ADDR, now)
    return client, endpoint, now


def _run_quic_endpoint(data: bytes, rng: random.Random, identities) -> None:
    """One datagram to a fresh endpoint: dropped, answered, or a new connection."""
    from libp2p_stream_sync.engines.quic_endpoint import QuicEndpoint
    endpoint = QuicEndpoint(_KP_R, identity=identities[1], retry=rng.random() < 0.3)
    endpoint.receive_datagram(data, _QUIC_CLIENT_ADDR, 0.0)
    for reply, _addr in endpoint.datagrams_to_send(0.0):
        assert len(reply) <= max(len(data), 1200) * 3, "amplification beyond 3x"
    endpoint.handle_timer(100.0)
    assert endpoint.half_open == 0 and not endpoint.connections


def _run_quic_connection(data: bytes, rng: random.Random, state: dict) -> None:
    """A datagram to an established connection (kept across inputs, remade when it
    ends); afterwards its local API must still work."""
    if state.get("endpoint") is None or not state["endpoint"].connections:
        state["client"], state["endpoint"], state["now"] = _quic_connect(state["ids"])
    endpoint = state["endpoint"]
    state["now"] += 1e-3
    for conn, _events in endpoint.receive_datagram(data, _QUIC_CLIENT_ADDR, state["now"]):
        if not conn.is_terminated and rng.random() < 0.05:
            conn.go_away()
    endpoint.datagrams_to_send(state["now"])
    endpoint.handle_timer(state["now"])


def _quic_targets() -> list[Target]:
    """The QUIC targets, when the aioquic extra is installed."""
    from libp2p_stream_sync.engines import quic
    if not quic.quic_available():
        return []
    identities = (quic.QuicIdentity(_KP_I), quic.QuicIdentity(_KP_R))
    recorded: list[bytes] = []
    _quic_connect(identities, recorded)
    state: dict = {"ids": identities}
    return [
        Target("quic-endpoint", recorded[:2],
               lambda data, rng: _run_quic_endpoint(data, rng, identities), (),
               max_random=1500),
        Target("quic-connection", recorded,
               lambda data, rng: _run_quic_connection(data, rng, state), (),
               max_random=1500),
    ]
