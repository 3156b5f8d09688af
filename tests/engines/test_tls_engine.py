"""The /tls/1.0.0 engine, sans-IO: two engines talk through memory, no sockets.

Covers the handshake for every host key type, ALPN muxer selection, records split
anyhow, large data, close_notify, and every hostile certificate or byte stream the
remote can send (each raises the engine's :class:`TlsError`, nothing else).
"""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings, strategies as st
from OpenSSL import SSL

from libp2p_stream_sync.engines import tls
from libp2p_stream_sync.engines.tls import (
    PROTOCOL_ID, InvalidCertificate, PeerIdMismatch, TlsError, TlsHandshake,
    TlsHandshakeError, TlsIdentity, TlsUnavailable,
)
from libp2p_stream_sync.engines.tls_certificate import (
    EXTENSION_OID, SIGNATURE_PREFIX, encode_signed_key, make_certificate,
)
from libp2p_stream_sync.errors import ProtocolError
from libp2p_stream_sync.identity import Keypair, KeyType

YAMUX, MPLEX = "/yamux/1.0.0", "/mplex/6.7.0"
KEY_TYPES = [KeyType.ED25519, KeyType.SECP256K1, KeyType.ECDSA, KeyType.RSA]
_IDENTITIES: dict[KeyType, TlsIdentity] = {}


def identity(key_type: KeyType = KeyType.ED25519) -> TlsIdentity:
    """One cached node identity per key type (RSA key generation is slow)."""
    if key_type not in _IDENTITIES:
        _IDENTITIES[key_type] = TlsIdentity(Keypair.generate(key_type))
    return _IDENTITIES[key_type]


def other_identity() -> TlsIdentity:
    return identity(KeyType.ECDSA)


def engine(ident: TlsIdentity, initiator: bool, **kw) -> TlsHandshake:
    return TlsHandshake(ident.keypair, initiator=initiator, identity=ident, **kw)


def deliver(hs: TlsHandshake, data: bytes, post: bytearray, chunk: int | None) -> None:
    """Feed ``data`` to ``hs`` in ``chunk``-byte pieces; what follows completion -> post."""
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        piece = data[i:i + step]
        if hs.complete:
            post += piece
        else:
            hs.receive_data(piece)


def run(client: TlsHandshake, server: TlsHandshake, chunk: int | None = None):
    """Drive both handshakes to completion as a connection would.

    Returns ``(client_transport, server_transport, bytes_for_client, bytes_for_server)``:
    the ciphertext each transport must be fed next (leftover + later flights).
    """
    to_client, to_server = bytearray(), bytearray()
    for _ in range(6):
        deliver(server, client.data_to_send(), to_server, chunk)
        deliver(client, server.data_to_send(), to_client, chunk)
        if client.complete and server.complete:
            break
    to_server += client.data_to_send()
    to_client += server.data_to_send()
    client_transport, client_left = client.to_transport()
    server_transport, server_left = server.to_transport()
    return (client_transport, server_transport, client_left + to_client,
            server_left + to_server)


def connected(client_ident=None, server_ident=None, **kw):
    """Two engines run to completion: (client, server, client_transport, server_transport)."""
    client = engine(client_ident or identity(), True, muxers=kw.get("client_muxers", ()))
    server = engine(server_ident or other_identity(), False,
                    muxers=kw.get("server_muxers", ()))
    ct, stt, for_client, for_server = run(client, server)
    assert ct.receive_data(for_client) == b""  # session tickets only
    assert stt.receive_data(for_server) == b""
    return client, server, ct, stt


def hostile_identity(host: Keypair | None = None, **build) -> TlsIdentity:
    """An identity presenting a certificate broken as ``build`` says."""
    host = host or Keypair.generate()
    cert_key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(host, cert_key, **build)
    return TlsIdentity(host, cert_key, cert)


def _certificate(host: Keypair, cert_key, *, extension=True, critical_extra=False,
                 sign_other_key=False, not_after_hours=1, not_before_hours=-1):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    signed_key_of = ec.generate_private_key(ec.SECP256R1()) if sign_other_key else cert_key
    spki = signed_key_of.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    signed = encode_signed_key(host.public_key.to_protobuf(), host.sign(SIGNATURE_PREFIX + spki))
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libp2p")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .serial_number(x509.random_serial_number()).public_key(cert_key.public_key())
               .not_valid_before(now + datetime.timedelta(hours=not_before_hours))
               .not_valid_after(now + datetime.timedelta(hours=not_after_hours)))
    if extension:
        builder = builder.add_extension(x509.UnrecognizedExtension(EXTENSION_OID, signed),
                                        critical=False)
    if critical_extra:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True)
    return builder.sign(cert_key, hashes.SHA256())


# -- successful handshakes --------------------------------------------------------------

def test_protocol_id():
    assert PROTOCOL_ID == "/tls/1.0.0"


@pytest.mark.parametrize("client_type", KEY_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("server_type", [KeyType.ED25519, KeyType.RSA], ids=lambda t: t.name)
def test_handshake_authenticates_both_sides_for_every_key_type(client_type, server_type):
    ci, si = identity(client_type), identity(server_type)
    if ci is si:
        si = TlsIdentity(Keypair.generate(server_type))
    client = engine(ci, True, expected_peer=si.keypair.peer_id)
    server = engine(si, False)
    run(client, server)
    assert client.remote_peer_id == si.keypair.peer_id
    assert server.remote_peer_id == ci.keypair.peer_id
    assert client.remote_public_key == si.keypair.public_key
    assert server.remote_public_key == ci.keypair.public_key


def test_handshake_byte_at_a_time_then_data():
    client = engine(identity(), True, expected_peer=other_identity().keypair.peer_id)
    server = engine(other_identity(), False)
    ct, stt, for_client, for_server = run(client, server, chunk=1)
    plain = b"".join(stt.receive_data(for_server[i:i + 1]) for i in range(len(for_server)))
    assert plain == b""
    wire = ct.encrypt(b"hello over tls")
    got = b"".join(stt.receive_data(wire[i:i + 1]) for i in range(len(wire)))
    assert got == b"hello over tls"


def test_a_fresh_identity_is_made_when_none_is_given():
    keypair = Keypair.generate()
    client = TlsHandshake(keypair, initiator=True)
    server = engine(other_identity(), False)
    run(client, server)
    assert server.remote_peer_id == keypair.peer_id


def test_identity_of_another_keypair_is_refused():
    with pytest.raises(ValueError):
        TlsHandshake(Keypair.generate(), initiator=True, identity=identity())


def test_data_sent_with_the_clients_finished_is_the_servers_leftover():
    client = engine(identity(), True)
    server = engine(other_identity(), False)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.complete
    client_transport, _ = client.to_transport()
    flight = client.data_to_send() + client_transport.encrypt(b"early request")
    server.receive_data(flight)
    assert server.complete
    server_transport, leftover = server.to_transport()
    assert leftover  # the application record, not fed to OpenSSL by the handshake
    assert server_transport.receive_data(leftover) == b"early request"


def test_to_transport_only_once_and_only_when_complete():
    client = engine(identity(), True)
    with pytest.raises(RuntimeError):
        client.to_transport()
    with pytest.raises(RuntimeError):
        client.selected_muxer()
    server = engine(other_identity(), False)
    run(client, server)
    with pytest.raises(RuntimeError):
        client.to_transport()
    with pytest.raises(RuntimeError):
        client.receive_data(b"x")


# -- ALPN -------------------------------------------------------------------------------

@pytest.mark.parametrize("client_muxers, server_muxers, expected", [
    ([YAMUX, MPLEX], [YAMUX, MPLEX], YAMUX),
    ([YAMUX, MPLEX], [MPLEX, YAMUX], MPLEX),   # the server's preference decides
    ([MPLEX], [YAMUX, MPLEX], MPLEX),
    ([YAMUX], [MPLEX], None),                  # no common muxer: "libp2p"
    ([], [YAMUX], None),                       # a py-libp2p client offers only "libp2p"
    ([YAMUX], [], None),
])
def test_alpn_muxer_selection(client_muxers, server_muxers, expected):
    client, server, _, _ = connected(client_muxers=client_muxers, server_muxers=server_muxers)
    assert client.selected_muxer() == expected
    assert server.selected_muxer() == expected


def test_the_client_offers_its_muxers_then_libp2p():
    client = engine(identity(), True, muxers=[YAMUX, MPLEX])
    assert client.alpn_protocols() == [YAMUX.encode(), MPLEX.encode(), b"libp2p"]


def test_the_client_hello_carries_alpn_and_no_server_name():
    """What a peer's TLS stack sees: our muxers then "libp2p" in ALPN, no SNI (spec)."""
    seen = {}
    ctx = _raw_client_context(other_identity())
    ctx.set_tlsext_servername_callback(
        lambda conn: seen.setdefault("sni", conn.get_servername()))
    ctx.set_alpn_select_callback(lambda conn, offered: seen.setdefault("alpn", offered)[0])
    raw = SSL.Connection(ctx, None)
    raw.set_accept_state()
    client = engine(identity(), True, muxers=[YAMUX, MPLEX])
    _raw_handshake(raw, client)
    assert seen == {"sni": None, "alpn": [YAMUX.encode(), MPLEX.encode(), b"libp2p"]}
    assert client.selected_muxer() == YAMUX


def test_a_client_without_alpn_gets_no_muxer():
    ctx = _raw_client_context(identity())
    raw = SSL.Connection(ctx, None)
    raw.set_connect_state()
    server = engine(other_identity(), False, muxers=[YAMUX])
    _raw_handshake(raw, server)
    assert server.complete and server.selected_muxer() is None


# -- hostile certificates ---------------------------------------------------------------

HOSTILE = {
    "no extension": (dict(extension=False), InvalidCertificate, "lacks the libp2p"),
    "bad signature": (dict(sign_other_key=True), InvalidCertificate, "signature is invalid"),
    "expired": (dict(not_before_hours=-3, not_after_hours=-1), InvalidCertificate, "expired"),
    "not yet valid": (dict(not_before_hours=1, not_after_hours=3), InvalidCertificate,
                      "not valid before"),
    "unknown critical extension": (dict(critical_extra=True), InvalidCertificate,
                                   "unknown critical extension"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_client_rejects_a_hostile_server_certificate(case):
    build, error, match = HOSTILE[case]
    client = engine(identity(), True, muxers=[YAMUX])
    server = engine(hostile_identity(**build), False, muxers=[YAMUX])
    server.receive_data(client.data_to_send())
    with pytest.raises(error, match=match):
        client.receive_data(server.data_to_send())
    assert not client.complete


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_server_rejects_a_hostile_client_certificate(case):
    build, error, match = HOSTILE[case]
    bad = hostile_identity(**build)
    client = engine(bad, True)
    server = engine(other_identity(), False)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.complete  # TLS 1.3: the client finishes before the server has checked
    with pytest.raises(error, match=match):
        server.receive_data(client.data_to_send())
    assert not server.complete
    with pytest.raises(RuntimeError):
        server.to_transport()  # no application byte is ever handed out


def test_client_rejects_the_wrong_peer():
    expected = Keypair.generate().peer_id
    client = engine(identity(), True, expected_peer=expected)
    server = engine(other_identity(), False)
    server.receive_data(client.data_to_send())
    with pytest.raises(PeerIdMismatch) as info:
        client.receive_data(server.data_to_send())
    assert info.value.expected == expected
    assert info.value.actual == other_identity().keypair.peer_id
    assert isinstance(info.value, ProtocolError)


def test_a_certificate_with_the_extension_last_is_accepted():
    """py-libp2p puts basicConstraints and keyUsage first: we must still talk to it."""
    from cryptography.hazmat.primitives import hashes
    host = Keypair.generate()
    cert_key = ec.generate_private_key(ec.SECP256R1())
    plain = _certificate(host, cert_key)
    builder = (x509.CertificateBuilder().subject_name(plain.subject)
               .issuer_name(plain.issuer).serial_number(plain.serial_number)
               .public_key(cert_key.public_key())
               .not_valid_before(plain.not_valid_before_utc)
               .not_valid_after(plain.not_valid_after_utc)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), True))
    builder = builder.add_extension(plain.extensions[0].value, critical=True)
    cert = builder.sign(cert_key, hashes.SHA256())
    client = engine(identity(), True, expected_peer=host.peer_id)
    server = engine(TlsIdentity(host, cert_key, cert), False)
    run(client, server)
    assert client.remote_peer_id == host.peer_id


def _two_certificate_identity(client: bool) -> TlsIdentity:
    bad = TlsIdentity(Keypair.generate())
    _key, extra = make_certificate(Keypair.generate())
    bad.context(client).add_extra_chain_cert(extra)
    return bad


def test_a_client_chain_of_two_certificates_is_rejected():
    client = engine(_two_certificate_identity(client=True), True)
    server = engine(other_identity(), False)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    with pytest.raises(InvalidCertificate, match="exactly one certificate, got 2"):
        server.receive_data(client.data_to_send())


def test_a_server_chain_of_two_certificates_is_rejected():
    client = engine(identity(), True)
    server = engine(_two_certificate_identity(client=False), False)
    server.receive_data(client.data_to_send())
    with pytest.raises(InvalidCertificate, match="exactly one certificate, got 2"):
        client.receive_data(server.data_to_send())


def test_a_client_without_a_certificate_is_rejected():
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
    raw = SSL.Connection(ctx, None)
    raw.set_connect_state()
    server = engine(other_identity(), False)
    with pytest.raises(TlsHandshakeError, match="certificate"):
        _raw_handshake(raw, server)


@pytest.mark.parametrize("raw_side", ["client", "server"])
def test_tls_1_2_is_refused(raw_side):
    ctx = _raw_client_context(identity())
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    raw = SSL.Connection(ctx, None)
    if raw_side == "client":
        raw.set_connect_state()
        ours = engine(other_identity(), False)
    else:
        raw.set_accept_state()
        ours = engine(other_identity(), True)
    with pytest.raises(TlsHandshakeError, match="TLS handshake failed"):
        _raw_handshake(raw, ours)


def _raw_client_context(ident: TlsIdentity) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.use_certificate(ident.certificate)
    ctx.use_privatekey(ident.cert_key)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
    return ctx


def _raw_handshake(raw: SSL.Connection, ours: TlsHandshake) -> None:
    """Run a plain pyOpenSSL endpoint against our engine until ours completes."""
    for _ in range(6):
        try:
            raw.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error:
            pass  # the raw side gave up; our engine must have said why
        out = _drain(raw)
        if out:
            ours.receive_data(out)
        if ours.complete:
            return
        back = ours.data_to_send()
        if back:
            raw.bio_write(back)
    pytest.fail("handshake did not complete")


def _drain(raw: SSL.Connection) -> bytes:
    out = bytearray()
    while True:
        try:
            out += raw.bio_read(65536)
        except SSL.WantReadError:
            return bytes(out)


# -- garbage and truncation ---------------------------------------------------------------

@pytest.mark.parametrize("garbage, match", [
    (b"GET / HTTP/1.1\r\n\r\n", "not a TLS record"),
    (b"/multistream/1.0.0\n", "not a TLS record"),
    (b"\x16\x03\x01\xff\xff", "too large"),
    (b"\x16\x03\x01\x00\x05hello", "TLS handshake failed"),
    (b"\x17\x03\x03\x00\x10" + bytes(16), "TLS handshake failed"),
])
def test_garbage_is_rejected_by_the_server(garbage, match):
    server = engine(other_identity(), False)
    with pytest.raises(TlsHandshakeError, match=match):
        server.receive_data(garbage)
    with pytest.raises(RuntimeError):
        server.receive_data(b"more")


def test_a_truncated_client_hello_waits_without_answering():
    client = engine(identity(), True)
    hello = client.data_to_send()
    server = engine(other_identity(), False)
    assert server.receive_data(hello[:-1]) is False
    assert server.data_to_send() == b""
    assert server.receive_data(hello[-1:]) is False
    assert server.data_to_send()  # now it answers


def test_a_corrupted_server_flight_is_rejected_by_the_client():
    client = engine(identity(), True)
    server = engine(other_identity(), False)
    server.receive_data(client.data_to_send())
    flight = bytearray(server.data_to_send())
    flight[-20] ^= 0x40
    with pytest.raises(TlsHandshakeError):
        client.receive_data(bytes(flight))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_to_the_server_only_raise_tls_error(data):
    server = engine(other_identity(), False)
    try:
        server.receive_data(data)
    except TlsError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=3000),
       st.integers(min_value=0, max_value=255))
def test_mutated_server_flights_only_raise_tls_error(tail, position, xor):
    client = engine(identity(), True)
    server = engine(other_identity(), False)
    server.receive_data(client.data_to_send())
    flight = bytearray(server.data_to_send())
    flight[position % len(flight)] ^= xor
    try:
        client.receive_data(bytes(flight) + tail)
    except TlsError:
        pass


# -- the transport ----------------------------------------------------------------------

def test_data_both_ways_and_close_notify():
    _, _, ct, stt = connected()
    assert stt.receive_data(ct.encrypt(b"ping")) == b"ping"
    assert ct.receive_data(stt.encrypt(b"pong")) == b"pong"
    assert ct.encrypt(b"") == b""
    bye = ct.close()
    assert bye
    assert stt.receive_data(bye) == b""
    assert stt.peer_closed and not ct.peer_closed


@pytest.mark.parametrize("direction", ["client->server", "server->client"])
def test_sixteen_mib_arrive_intact(direction):
    _, _, ct, stt = connected()
    sender, receiver = (ct, stt) if direction == "client->server" else (stt, ct)
    block = bytes(range(256)) * 256  # 64 KiB
    sent, got = hashlib.sha256(), hashlib.sha256()
    received = 0
    for i in range(256):
        chunk = block[i:] + block[:i]
        sent.update(chunk)
        wire = sender.encrypt(chunk)
        for j in range(0, len(wire), 50_000):  # records split across reads
            plain = receiver.receive_data(wire[j:j + 50_000])
            got.update(plain)
            received += len(plain)
    assert received == 16 * 1024 * 1024
    assert got.digest() == sent.digest()


def test_zero_copy_receive_path():
    _, _, ct, stt = connected()
    wire = ct.encrypt(b"x" * 100_000)
    out = bytearray()
    for i in range(0, len(wire), 7000):
        piece = wire[i:i + 7000]
        buf = stt.get_buffer(65536)
        buf[:len(piece)] = piece
        out += stt.buffer_updated(len(piece))
    stt.trim(1024)
    assert out == b"x" * 100_000


def test_corrupted_ciphertext_is_fatal():
    _, _, ct, stt = connected()
    wire = bytearray(ct.encrypt(b"secret"))
    wire[-1] ^= 1
    with pytest.raises(TlsError, match="TLS record rejected"):
        stt.receive_data(bytes(wire))
    with pytest.raises(TlsError, match="unusable"):
        stt.receive_data(b"")
    assert stt.close() == b""


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_ciphertext_only_raises_tls_error(data):
    server_transport = connected()[3]
    try:
        server_transport.receive_data(data)
    except TlsError:
        pass


# -- without pyOpenSSL ------------------------------------------------------------------

def test_without_pyopenssl_the_error_names_the_extra(monkeypatch):
    monkeypatch.setattr(tls, "SSL", None)
    assert not tls.tls_available()
    with pytest.raises(TlsUnavailable, match=r"pip install 'libp2p_stream_sync\[tls\]'"):
        TlsIdentity(Keypair.generate())
    assert issubclass(TlsUnavailable, ImportError)
