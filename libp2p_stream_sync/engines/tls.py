"""libp2p's /tls/1.0.0 security handshake (TLS 1.3) and its transport, sans-IO.

Spec: libp2p/specs ``tls/tls.md``; early muxer negotiation through ALPN:
``connections/inlined-muxer-negotiation.md``. The certificate rules live in
:mod:`.tls_certificate`.

OpenSSL (through pyOpenSSL, the optional ``tls`` extra) runs the TLS state machine
over memory BIOs: bytes in, bytes out, no socket. The standard library's ``ssl``
cannot be used: it cannot ask for and accept a self-signed client certificate.
OpenSSL's own chain verification is switched off (its callback accepts every
certificate); once the handshake completes we check the peer's certificate by the
libp2p rules, before any application byte is handed out.

Usage (the same shape as :class:`.noise.NoiseHandshake`)::

    hs = TlsHandshake(keypair, initiator=True, expected_peer=peer, muxers=["/yamux/1.0.0"],
                      identity=node_tls_identity)
    send(hs.data_to_send())
    while not hs.complete:
        hs.receive_data(recv())
        send(hs.data_to_send())
    transport, leftover = hs.to_transport()
    plaintext = transport.receive_data(leftover)

The handshake feeds OpenSSL whole TLS records only and stops at the one that
completes the handshake, so the bytes after it come back from :meth:`to_transport`
as ``leftover`` ciphertext, exactly as with Noise.

As TLS 1.3 goes, the client (initiator) completes first, before the server has
checked the client's certificate; a server that rejects it raises and closes the
connection without reading what the client sent (libp2p/specs tls.md, note for
clients).

Memory a peer can make one handshake hold: one partial TLS record (< 18.5 KiB) in
the engine, plus OpenSSL's buffer for one handshake message (its ``max_cert_list``,
100 KiB by default). The transport keeps no plaintext between calls.
"""

from __future__ import annotations

from typing import Sequence

from cryptography import x509

from ..identity import Keypair, PeerId, PublicKey
from .tls_certificate import (
    CertificateKey, InvalidCertificate, PeerIdMismatch, TlsError, make_certificate,
    verify_certificate_chain,
)

try:
    from OpenSSL import SSL
except ImportError:  # the optional extra is not installed
    SSL = None  # type: ignore[assignment]

__all__ = [
    "PROTOCOL_ID", "ALPN_LIBP2P", "TlsUnavailable", "TlsError", "TlsHandshakeError",
    "InvalidCertificate", "PeerIdMismatch", "TlsIdentity", "TlsHandshake", "TlsTransport",
    "tls_available",
]

#: The multistream-select protocol id of this security protocol.
PROTOCOL_ID = "/tls/1.0.0"
#: The ALPN protocol every libp2p TLS endpoint offers (after any muxers).
ALPN_LIBP2P = "libp2p"
#: A TLS record: 5-byte header; TLS 1.3 ciphertext is at most 2^14 + 256 bytes, TLS 1.2
#: (which OpenSSL refuses for us, but may be what a hostile peer sends) 2^14 + 2048.
RECORD_HEADER = 5
MAX_RECORD_BODY = 2 ** 14 + 2048
_RECORD_TYPES = frozenset({20, 21, 22, 23})  # change_cipher_spec, alert, handshake, data
#: Largest plaintext one ``SSL_read`` returns (one TLS record).
_READ_SIZE = 2 ** 14
_INSTALL_HINT = ("TLS needs pyOpenSSL, which is not installed: "
                 "pip install 'libp2p_stream_sync[tls]'")


class TlsUnavailable(ImportError):
    """pyOpenSSL is missing: the message names the extra to install."""


class TlsHandshakeError(TlsError):
    """The TLS handshake itself failed (garbage, wrong version, no certificate...)."""


def tls_available() -> bool:
    """True when pyOpenSSL is importable, so TLS can be offered."""
    return SSL is not None


def _require_openssl() -> None:
    if SSL is None:
        raise TlsUnavailable(_INSTALL_HINT)


def _ssl_error_text(exc: Exception) -> str:
    """OpenSSL's reasons (``[(lib, func, reason), ...]``) as one short string."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else None
    if errors:
        return "; ".join(str(entry[-1]) for entry in errors)
    return str(exc) or type(exc).__name__


def _accept_any_certificate(_conn: object, _cert: object, _errno: int, _depth: int,
                            _ok: int) -> bool:
    """OpenSSL's verify callback: accept self-signed; the libp2p checks come after."""
    return True


def _select_alpn(conn: "SSL.Connection", offered: list[bytes]) -> bytes:
    """Server ALPN: our first muxer the client offers, else ``libp2p``."""
    handshake: TlsHandshake = conn.get_app_data()
    for protocol in handshake.alpn_protocols():
        if protocol in offered:
            return protocol
    # Not even "libp2p" (every libp2p client offers it): answer without ALPN.
    return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]


class TlsIdentity:
    """A node's certificate key and libp2p certificate, with its two OpenSSL contexts.

    Made once per node and shared by every handshake (go-libp2p keeps one certificate
    per node too), so a connection costs no key generation and no host-key signature.
    """

    def __init__(self, keypair: Keypair, cert_key: CertificateKey | None = None,
                 certificate: x509.Certificate | None = None) -> None:
        """``cert_key``: the certificate's key (default: a fresh ECDSA P-256 key).

        ``certificate``: present this certificate of ``cert_key`` instead of making
        one (tests use it to present hostile certificates). Raises
        :class:`TlsUnavailable` when pyOpenSSL is not installed.
        """
        _require_openssl()
        self.keypair = keypair
        if certificate is None:
            cert_key, certificate = make_certificate(keypair, cert_key)
        elif cert_key is None:
            raise ValueError("a certificate needs its cert_key")
        self.cert_key, self.certificate = cert_key, certificate
        self._contexts = {True: self._make_context(client=True),
                          False: self._make_context(client=False)}

    def context(self, initiator: bool) -> "SSL.Context":
        """The OpenSSL context for the client (``initiator``) or server side."""
        return self._contexts[initiator]

    def _make_context(self, client: bool) -> "SSL.Context":
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.use_certificate(self.certificate)
        ctx.use_privatekey(self.cert_key)
        ctx.check_privatekey()
        # Both sides ask for the peer's certificate; the server fails without one.
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                       _accept_any_certificate)
        if not client:
            ctx.set_alpn_select_callback(_select_alpn)
            # No resumption, no server state: with tickets off and no session cache
            # OpenSSL still sends two small TLS 1.3 tickets (pyOpenSSL cannot set
            # their number to 0), which the client side ignores.
            ctx.set_options(SSL.OP_NO_TICKET)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return ctx


class TlsHandshake:
    """One side of a libp2p TLS 1.3 handshake (the initiator is the TLS client).

    ``keypair`` is our libp2p identity; ``identity`` its cached :class:`TlsIdentity`
    (made here when ``None``). ``expected_peer`` (normally given when dialing) must be
    the peer id the remote's certificate proves. ``muxers`` are our stream muxers in
    our order of preference, offered through ALPN ahead of ``libp2p``.

    Peer misbehaviour raises :class:`TlsError` subclasses from :meth:`receive_data`
    (:class:`PeerIdMismatch` for a wrong peer); the handshake is then dead and the
    connection must close. Raises :class:`TlsUnavailable` without pyOpenSSL.
    """

    def __init__(self, keypair: Keypair, *, initiator: bool,
                 expected_peer: PeerId | None = None, muxers: Sequence[str] = (),
                 identity: TlsIdentity | None = None) -> None:
        if identity is None:
            identity = TlsIdentity(keypair)
        elif identity.keypair is not keypair:
            raise ValueError("identity must belong to keypair")
        self.initiator = initiator
        self.expected_peer = expected_peer
        self._muxers = list(muxers)
        self._conn = SSL.Connection(identity.context(initiator), None)
        self._conn.set_app_data(self)
        if initiator:
            self._conn.set_alpn_protos(self.alpn_protocols())
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()
        self._incoming = bytearray()
        self._complete = False
        self._error: TlsError | None = None
        self._transport_taken = False
        self.remote_peer_id: PeerId | None = None
        self.remote_public_key: PublicKey | None = None
        if initiator:
            self._step()  # queue the ClientHello

    # -- public API -------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """True once the handshake succeeded and the remote's certificate was verified."""
        return self._complete

    def alpn_protocols(self) -> list[bytes]:
        """What we offer (client) or accept (server) through ALPN, in preference order."""
        return [m.encode() for m in self._muxers] + [ALPN_LIBP2P.encode()]

    def data_to_send(self) -> bytes:
        """Everything OpenSSL queued for the wire; empties the queue."""
        return _drain(self._conn)

    def receive_data(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed bytes from the remote; returns :attr:`complete`.

        Raises a :class:`TlsError` subclass when the remote misbehaves. Bytes after
        the record that completes the handshake are kept for :meth:`to_transport`.
        """
        if self._error is not None:
            raise RuntimeError("the TLS handshake already failed") from self._error
        if self._complete:
            raise RuntimeError("the TLS handshake is complete; use to_transport()")
        self._incoming += data
        try:
            while not self._complete and self._feed_one_record():
                self._step()
        except TlsError as exc:
            self._error = exc
            self._incoming.clear()
            raise
        return self._complete

    def selected_muxer(self) -> str | None:
        """The muxer agreed through ALPN, or ``None`` (``libp2p``: use multistream-select).

        The server chooses: its first muxer the client offered (as go-libp2p does).
        """
        if not self._complete:
            raise RuntimeError("the TLS handshake is not complete")
        chosen = (self._conn.get_alpn_proto_negotiated() or b"").decode("ascii", "replace")
        return chosen if chosen in self._muxers else None

    def to_transport(self) -> tuple["TlsTransport", bytes]:
        """The record layer, and the ciphertext received after the handshake.

        Call once, after :meth:`data_to_send` has been flushed; feed ``leftover`` to
        ``transport.receive_data``.
        """
        if not self._complete:
            raise RuntimeError("the TLS handshake is not complete")
        if self._transport_taken:
            raise RuntimeError("to_transport() was already called")
        self._transport_taken = True
        self._conn.set_app_data(None)  # the server's ALPN callback no longer needs us
        leftover = bytes(self._incoming)
        self._incoming.clear()
        return TlsTransport(self._conn), leftover

    # -- driving OpenSSL --------------------------------------------------------

    def _feed_one_record(self) -> bool:
        """Hand OpenSSL the next complete TLS record; False when none is buffered."""
        buf = self._incoming
        if len(buf) < RECORD_HEADER:
            return False
        if buf[0] not in _RECORD_TYPES or buf[1] != 3:
            raise TlsHandshakeError(f"not a TLS record (header {bytes(buf[:3]).hex()})")
        length = int.from_bytes(buf[3:5], "big")
        if length > MAX_RECORD_BODY:
            raise TlsHandshakeError(f"TLS record of {length} bytes is too large")
        end = RECORD_HEADER + length
        if len(buf) < end:
            return False
        self._conn.bio_write(bytes(buf[:end]))
        del buf[:end]
        return True

    def _step(self) -> None:
        """Advance the handshake; on completion verify the peer's certificate."""
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            raise TlsHandshakeError(f"TLS handshake failed: {_ssl_error_text(exc)}") from exc
        peer = verify_certificate_chain(self._peer_chain(), expected_peer=self.expected_peer)
        self.remote_peer_id = peer.peer_id
        self.remote_public_key = peer.public_key
        self._complete = True

    def _peer_chain(self) -> list[x509.Certificate]:
        """The certificates the remote sent (OpenSSL omits the leaf on the server side)."""
        chain = list(self._conn.get_peer_cert_chain(as_cryptography=True) or [])
        if not self.initiator:
            leaf = self._conn.get_peer_certificate(as_cryptography=True)
            chain = ([leaf] if leaf is not None else []) + chain
        return chain


def _drain(conn: "SSL.Connection") -> bytes:
    """All bytes OpenSSL wrote to the outgoing memory BIO."""
    chunks = []
    while True:
        try:
            chunks.append(conn.bio_read(65536))
        except SSL.WantReadError:
            return b"".join(chunks)


class TlsTransport:
    """Encrypts outgoing and decrypts incoming TLS 1.3 records after the handshake.

    Obtained from :meth:`TlsHandshake.to_transport`. Post-handshake messages (session
    tickets, key updates) are handled inside; a key update answer the peer asks for
    goes out in front of the next :meth:`encrypt` output, as RFC 8446 requires.
    Records may arrive split anyhow. Any :class:`TlsError` is fatal: close the
    connection. Not thread-safe (the reactor owns it).
    """

    __slots__ = ("_conn", "_failed", "_rbuf", "peer_closed")

    def __init__(self, conn: "SSL.Connection") -> None:
        self._conn = conn
        self._failed: TlsError | None = None
        self._rbuf = bytearray()
        #: True once the peer sent close_notify (its graceful end of stream).
        self.peer_closed = False

    def cipher_name(self) -> str:
        """The negotiated TLS 1.3 cipher suite, e.g. ``TLS_AES_256_GCM_SHA384``."""
        return str(self._conn.get_cipher_name())

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Encrypt ``plaintext`` into TLS records, ready for the wire (b"" for b"")."""
        self._check_usable()
        view = memoryview(plaintext).cast("B")
        try:
            while view.nbytes:
                sent = self._conn.send(view)
                view = view[sent:]
        except SSL.Error as exc:
            raise self._fail(f"TLS send failed: {_ssl_error_text(exc)}") from exc
        return _drain(self._conn)

    def receive_data(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed received ciphertext; returns the plaintext of every record it completed."""
        self._check_usable()
        if data:
            self._conn.bio_write(data)
        chunks = []
        try:
            while True:
                chunks.append(self._conn.recv(_READ_SIZE))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self.peer_closed = True
        except SSL.Error as exc:
            raise self._fail(f"TLS record rejected: {_ssl_error_text(exc)}") from exc
        return b"".join(chunks)

    def get_buffer(self, sizehint: int = 65536) -> memoryview:
        """A writable buffer of ``sizehint`` bytes to receive ciphertext into."""
        if len(self._rbuf) < sizehint:
            self._rbuf = bytearray(sizehint)
        return memoryview(self._rbuf)

    def buffer_updated(self, nbytes: int) -> bytes:
        """``nbytes`` of ciphertext landed at the start of :meth:`get_buffer`'s view."""
        with memoryview(self._rbuf) as view:
            return self.receive_data(view[:nbytes])

    def trim(self, keep: int) -> None:
        """Drop the receive buffer when it is over ``2 * keep`` bytes (idle connection)."""
        if len(self._rbuf) > 2 * keep:
            self._rbuf = bytearray()

    def close(self) -> bytes:
        """The close_notify alert to send for a graceful close (b"" after a failure)."""
        if self._failed is not None:
            return b""
        try:
            self._conn.shutdown()
        except SSL.Error:
            return b""
        return _drain(self._conn)

    def _fail(self, message: str) -> TlsError:
        self._failed = TlsError(message)
        return self._failed

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise TlsError(f"TLS transport unusable after an earlier error: {self._failed}")
