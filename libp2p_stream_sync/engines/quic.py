"""libp2p over QUIC v1 (``/quic-v1``), sans-IO: one QUIC connection as a muxer engine.

Specs: libp2p/specs ``quic/README.md`` (RFC 9000 QUIC v1) and ``tls/tls.md`` (the
certificate, ALPN ``libp2p``). There is no multistream-select for security or muxer:
QUIC's bidirectional streams are the libp2p streams.

aioquic's :class:`QuicConnection` (the optional ``quic`` extra, pinned to the version
below) runs QUIC. :class:`QuicMuxer` puts the contract of :mod:`.yamux` on top of it
(same method names, the events of :mod:`.muxer_events`) plus datagram I/O, and adds
what aioquic does not do for libp2p:

* TLS: both sides present the libp2p certificate; the server *requests* the client's
  (aioquic has only a private flag for that); after the handshake, before any stream
  event is handed out, the peer's certificate is checked by the libp2p rules
  (:mod:`.tls_certificate`). A missing or invalid certificate, or the wrong peer,
  closes the connection with CONNECTION_CLOSE (CRYPTO_ERROR bad_certificate).
* Flow control on *read*: aioquic raises a stream's receive window as data *arrives*
  (it doubles the window whenever half of it is used), so a fast sender could make us
  buffer without limit while the application does not read. We grant MAX_STREAM_DATA
  from :meth:`QuicMuxer.consumed` instead: unread data per stream stays below
  ``stream_window``. (The connection-wide MAX_DATA is left to aioquic; it is bounded
  by ``stream_window`` times the stream limit.)
* Bounded send buffers: aioquic buffers whatever it is given; :meth:`send_window` is
  ``send_buffer`` minus the bytes aioquic still holds (unsent or unacknowledged), so a
  peer that does not read stops our writer (``SendWindowUpdated`` resumes it).
* Half-close is FIN, :meth:`reset_stream` sends RESET_STREAM and STOP_SENDING. A
  RESET_STREAM or STOP_SENDING from the peer ends the whole stream (``StreamReset``),
  as a yamux RST does.
* Keepalive: a PING every ``keepalive_interval``; a silent peer is detected by QUIC's
  idle timeout (``idle_timeout``), reported as ``SessionTerminated``.

The FIN-only STREAM frame that aioquic < 1.7 could drop when a packet was full
(``QuicStreamSender.get_frame`` handed it out, the packet builder then refused it) is
fixed in 1.7.2, which we pin; ``tests/engines/test_quic_engine.py`` checks it.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ..identity import Keypair, PeerId
from .muxer_events import (
    DataReceived, MuxerError, PingAcked, SendWindowUpdated, SessionTerminated,
    StreamClosedError, StreamEnded, StreamLimitError, StreamOpened, StreamReset,
)
from .tls_certificate import (
    CertificateKey, InvalidCertificate, TlsError, make_certificate, verify_certificate_chain,
)

try:
    from aioquic.quic import events as quic_events
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import (
        MAX_STREAM_DATA_FRAME_CAPACITY, NetworkAddress, QuicConnection,
    )
    from aioquic.quic.packet import QuicErrorCode, QuicFrameType, QuicProtocolVersion
except ImportError:  # the optional extra is not installed
    QuicConnection = None  # type: ignore[assignment,misc]
    NetworkAddress = Any  # type: ignore[misc]

__all__ = [
    "ALPN", "AIOQUIC_VERSION", "QuicUnavailable", "QuicIdentity", "QuicMuxer",
    "HandshakeComplete", "quic_available", "require_aioquic",
]

#: The ALPN protocol of libp2p over QUIC (tls.md).
ALPN = "libp2p"
#: The aioquic release whose private attributes :class:`_AioquicConnection` was checked
#: against (pinned in pyproject.toml's ``quic`` extra).
AIOQUIC_VERSION = "1.7.2"
#: CONNECTION_CLOSE code for a certificate we refuse: CRYPTO_ERROR + bad_certificate.
BAD_CERTIFICATE = 0x100 + 42
_INSTALL_HINT = ("QUIC needs aioquic, which is not installed: "
                 "pip install 'libp2p_stream_sync[quic]'")


class QuicUnavailable(ImportError):
    """aioquic is missing: the message names the extra to install."""


def quic_available() -> bool:
    """True when aioquic is importable, so ``/quic-v1`` can be offered."""
    return QuicConnection is not None


def require_aioquic() -> None:
    """Raise :class:`QuicUnavailable` (naming the extra) when aioquic is missing."""
    if QuicConnection is None:
        raise QuicUnavailable(_INSTALL_HINT)


@dataclass(slots=True)
class HandshakeComplete:
    """The handshake finished and the peer's libp2p certificate proved ``peer_id``."""
    peer_id: PeerId


class QuicIdentity:
    """A node's certificate key and libp2p certificate, made once and shared by every
    QUIC connection (no key generation or host-key signature per connection)."""

    def __init__(self, keypair: Keypair, cert_key: CertificateKey | None = None,
                 certificate: x509.Certificate | None = None) -> None:
        """``certificate``: present this one (of ``cert_key``) instead of a fresh one."""
        self.keypair = keypair
        if certificate is None:
            cert_key, certificate = make_certificate(keypair, cert_key)
        elif cert_key is None:
            raise ValueError("a certificate needs its cert_key")
        self.cert_key, self.certificate = cert_key, certificate


# -- the only place that touches aioquic's private attributes --------------------------

if QuicConnection is not None:
    class _AioquicConnection(QuicConnection):
        """aioquic's connection with the hooks libp2p needs and aioquic lacks.

        Checked against aioquic 1.7.2 (``AIOQUIC_VERSION``); each hook names the
        private attribute it uses.
        """

        def __init__(self, *, stream_window: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.stream_window = stream_window

        def set_inbound_stream_limits(self, *, bidi: int, uni: int) -> None:
            """The initial MAX_STREAMS we announce (aioquic has no option for them:
            its ``_local_max_streams_*`` limits are fixed at 128). Call before the
            transport parameters are written (at once after construction)."""
            for limit, value in ((self._local_max_streams_bidi, bidi),
                                 (self._local_max_streams_uni, uni)):
                limit.value = limit.sent = value

        def _initialize(self, peer_cid: bytes) -> None:
            # aioquic's server asks for a client certificate only when the TLS
            # context's private ``_request_client_certificate`` is set ("for tests").
            super()._initialize(peer_cid)
            self.tls._request_client_certificate = True

        def unacked_total(self) -> int:
            """Bytes held for sending on all streams not finished yet (``_buffer``)."""
            return sum(len(stream.sender._buffer) for stream in self._streams.values()
                       if not stream.sender.is_finished)

        def sent_offset(self, stream_id: int, queued: int) -> int:
            """How far stream data has gone into packets (``sender.highest_offset``);
            ``queued`` when aioquic no longer tracks the stream (it was reset)."""
            stream = self._streams.get(stream_id)
            return queued if stream is None else stream.sender.highest_offset

        @property
        def max_data_limit(self) -> int:
            """The MAX_DATA we allow (``_local_max_data.value``)."""
            return self._local_max_data.value

        def grant_connection(self, unread: int, window: int) -> None:
            """Let the peer send until ``window`` bytes are unread connection-wide:
            MAX_DATA = bytes received (``_local_max_data.used``, reset streams' final
            sizes included) - ``unread`` + ``window``, raised once it grew by half."""
            limit = self._local_max_data
            target = limit.used - unread + window
            if target - limit.value >= window // 2:
                limit.value = target

        def _write_connection_limits(self, builder: Any, space: Any) -> None:
            # aioquic doubles MAX_DATA whenever half of it is used (``used * 2 >
            # value``): hide ``used`` from that check so only grant_connection() raises
            # it; the frame itself is still written by aioquic (value != sent).
            limit = self._local_max_data
            used, limit.used = limit.used, 0
            try:
                super()._write_connection_limits(builder, space)
            finally:
                limit.used = used

        def peer_certificates(self) -> list[x509.Certificate]:
            """The certificates the peer sent (TLS ``_peer_certificate`` + chain)."""
            leaf = self.tls._peer_certificate
            return [] if leaf is None else [leaf, *self.tls._peer_certificate_chain]

        def unacked_bytes(self, stream_id: int) -> int:
            """Bytes aioquic holds for sending on a stream (``sender._buffer``: unsent
            plus sent but unacknowledged); 0 when aioquic no longer tracks it."""
            stream = self._streams.get(stream_id)
            return 0 if stream is None else len(stream.sender._buffer)

        def grant(self, stream_id: int, read_offset: int) -> None:
            """Let the peer send up to ``read_offset + stream_window`` on a stream
            (MAX_STREAM_DATA goes out with the next packet once it grew by half)."""
            stream = self._streams.get(stream_id)
            if stream is None or stream.receiver.is_finished:
                return
            limit = read_offset + self.stream_window
            if limit - stream.max_stream_data_local >= self.stream_window // 2:
                stream.max_stream_data_local = limit

        def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
            # Replaces aioquic's version, which doubles the window on receipt: ours
            # only sends what grant() decided (``_on_max_stream_data_delivery``
            # re-arms a lost MAX_STREAM_DATA).
            if (stream.max_stream_data_local
                    and stream.max_stream_data_local_sent != stream.max_stream_data_local):
                buf = builder.start_frame(
                    QuicFrameType.MAX_STREAM_DATA, capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                    handler=self._on_max_stream_data_delivery, handler_args=(stream,))
                buf.push_uint_var(stream.stream_id)
                buf.push_uint_var(stream.max_stream_data_local)
                stream.max_stream_data_local_sent = stream.max_stream_data_local


# -- the engine ----------------------------------------------------------------------

class _Stream:
    """What we track of one libp2p stream (aioquic tracks the QUIC side)."""

    __slots__ = ("sid", "read", "buffered", "queued", "local_closed", "remote_closed")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.queued = 0         # bytes send_data took
        self.read = 0           # bytes the application consumed
        self.buffered = 0       # bytes handed out in DataReceived, not consumed yet
        self.local_closed = False
        self.remote_closed = False


class QuicMuxer:
    """One libp2p QUIC connection: a muxer whose I/O is datagrams; no I/O of its own.

    Make one with :meth:`client` (dialing ``addr``) or :meth:`server` (the endpoint
    does, for a new Initial). Feed :meth:`receive_datagram`, send what
    :meth:`datagrams_to_send` returns, call :meth:`handle_timer` at :meth:`get_timer`.
    Stream events are held back until :class:`HandshakeComplete` (the peer's
    certificate verified; :attr:`remote_peer_id` is then set).
    """

    has_flow_control = True
    outbound_unacked = 0

    def __init__(self, keypair: Keypair, *, initiator: bool,
                 expected_peer: PeerId | None = None,
                 identity: QuicIdentity | None = None,
                 stream_window: int = 1024 * 1024,
                 send_buffer: int = 1024 * 1024,
                 max_streams: int = 256,
                 connection_window: int = 16 * 1024 * 1024,
                 max_datagram_size: int = 1200,
                 idle_timeout: float = 30.0,
                 keepalive_interval: float | None = 10.0,
                 original_destination_connection_id: bytes | None = None,
                 retry_source_connection_id: bytes | None = None) -> None:
        """Prefer :meth:`client` / :meth:`server`. Raises :class:`QuicUnavailable`
        without aioquic. ``stream_window``: unread bytes a peer may send per stream;
        ``send_buffer``: bytes we hold per stream until acknowledged; ``max_streams``:
        streams open at once, each direction; ``connection_window``: unread bytes a
        peer may send on all streams together (MAX_DATA, granted as we read);
        ``max_datagram_size``: the largest UDP payload we send (aioquic has no path MTU
        discovery: raise it only where the path is known to carry it)."""
        require_aioquic()
        if stream_window < 16 * 1024 or send_buffer < 1 or max_streams < 1:
            raise ValueError("need stream_window >= 16 KiB, send_buffer and max_streams >= 1")
        if connection_window < stream_window:
            raise ValueError("connection_window must be at least stream_window")
        if keepalive_interval is not None and not 0 < keepalive_interval < idle_timeout:
            raise ValueError("keepalive_interval must be below idle_timeout (or None)")
        identity = identity or QuicIdentity(keypair)
        self.is_initiator = initiator
        self.expected_peer = expected_peer
        self.remote_peer_id: PeerId | None = None
        #: Why the peer was refused (InvalidCertificate, PeerIdMismatch...), if it was.
        self.handshake_error: TlsError | None = None
        self._send_buffer = send_buffer
        self._max_streams = max_streams
        self._keepalive_interval = keepalive_interval
        self._conn = _AioquicConnection(
            configuration=self._configuration(identity, initiator, stream_window,
                                              connection_window, idle_timeout,
                                              max_datagram_size),
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            stream_window=stream_window)
        self._conn.set_inbound_stream_limits(bidi=max_streams, uni=0)
        self._connection_window = connection_window
        self._unread = 0                             # DataReceived bytes not consumed
        #: Stream bytes ``send_data`` took, in all (what ``payload_sent`` catches up to).
        self.payload_queued = 0
        #: Of those, bytes that went into packets (updated by datagrams_to_send).
        self.payload_sent = 0
        self._unsent: dict[int, int] = {}            # sid -> queued, data not in packets
        self._streams: dict[int, _Stream] = {}
        self._remote_next = 1 if initiator else 0   # next remote-initiated stream id
        self._remote_gaps: set[int] = set()         # lower remote ids not seen yet
        self._early: list[Any] = []                  # stream events before verification
        self._blocked: set[int] = set()              # streams waiting for send window
        self._cid_changes: list[tuple[bytes, bool]] = []
        self._going_away = False
        self._terminated = False
        self._next_keepalive: float | None = None
        self._ping_uid = 0

    @staticmethod
    def _configuration(identity: QuicIdentity, initiator: bool, stream_window: int,
                       connection_window: int, idle_timeout: float,
                       max_datagram_size: int) -> "QuicConfiguration":
        return QuicConfiguration(
            is_client=initiator, alpn_protocols=[ALPN],
            certificate=identity.certificate, private_key=identity.cert_key,
            verify_mode=ssl.CERT_NONE,  # the libp2p rules are checked after the handshake
            supported_versions=[QuicProtocolVersion.VERSION_1],
            idle_timeout=idle_timeout, max_stream_data=stream_window,
            max_data=connection_window, max_datagram_size=max_datagram_size)

    @classmethod
    def client(cls, keypair: Keypair, addr: NetworkAddress, now: float,
               **kwargs: Any) -> "QuicMuxer":
        """Dial ``addr`` (the first Initial is ready in :meth:`datagrams_to_send`)."""
        engine = cls(keypair, initiator=True, **kwargs)
        engine._conn.connect(addr, now)
        engine._arm_keepalive(now)
        return engine

    @classmethod
    def server(cls, keypair: Keypair, now: float, **kwargs: Any) -> "QuicMuxer":
        """Accept a connection (feed it the Initial that created it)."""
        engine = cls(keypair, initiator=False, **kwargs)
        engine._arm_keepalive(now)
        return engine

    # ------------------------------------------------------------------ properties

    @property
    def is_terminated(self) -> bool:
        """True once the connection is over (closed, refused, idle timeout)."""
        return self._terminated

    @property
    def is_verified(self) -> bool:
        """True once the peer's libp2p certificate was checked and accepted."""
        return self.remote_peer_id is not None

    @property
    def host_cid(self) -> bytes:
        """Our current connection id (what the peer puts in its packets)."""
        return self._conn.host_cid

    @property
    def max_data_granted(self) -> int:
        """The connection-wide MAX_DATA we allow the peer (bytes received + what it
        may still send): grows only as the application reads (``connection_window``)."""
        return self._conn.max_data_limit

    @property
    def stream_count(self) -> int:
        """Streams this connection still tracks (open in at least one direction)."""
        return len(self._streams)

    def unacknowledged_bytes(self) -> int:
        """Stream bytes (and resets) the peer has not acknowledged yet, all streams
        together (a graceful close waits for 0)."""
        return self._conn.unacked_total()

    def take_connection_id_changes(self) -> list[tuple[bytes, bool]]:
        """Connection ids issued (True) or retired (False) since the last call, for
        the endpoint's routing table."""
        changes, self._cid_changes = self._cid_changes, []
        return changes

    # ------------------------------------------------------------------ datagrams

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> list:
        """Feed one UDP datagram from ``addr``; return the events it caused.

        Never raises for peer input: aioquic drops what it cannot decrypt and closes
        the connection on a protocol violation (``SessionTerminated``).
        """
        if self._terminated:
            return []
        self._conn.receive_datagram(bytes(data), addr, now)
        return self._drain_events()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """The datagrams to send now, each with its destination address
        (:attr:`payload_sent` then counts the stream bytes they carry)."""
        datagrams = self._conn.datagrams_to_send(now)
        if self._unsent:
            self._count_sent()
        return datagrams

    def _count_sent(self) -> None:
        unsent = 0
        for sid, queued in list(self._unsent.items()):
            left = queued - self._conn.sent_offset(sid, queued)
            if left <= 0:
                del self._unsent[sid]
            unsent += max(0, left)
        self.payload_sent = self.payload_queued - unsent

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or None for never."""
        if self._terminated:
            return None
        timers = [t for t in (self._conn.get_timer(), self._next_keepalive) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> list:
        """Run aioquic's timers (loss recovery, idle timeout) and the keepalive."""
        if self._terminated:
            return []
        if self._next_keepalive is not None and now >= self._next_keepalive:
            self._conn.send_ping(self._ping_uid)
            self._ping_uid += 1
            self._arm_keepalive(now)
        timer = self._conn.get_timer()
        if timer is not None and now >= timer:
            self._conn.handle_timer(now)
        return self._drain_events()

    def _arm_keepalive(self, now: float) -> None:
        if self._keepalive_interval is not None:
            self._next_keepalive = now + self._keepalive_interval

    # ------------------------------------------------------------------ local API

    def open_stream(self) -> int:
        """Open a new outbound stream and return its id.

        Raises :class:`StreamLimitError` before verification, when the connection is
        ending, or with ``max_streams`` streams open. Beyond the peer's MAX_STREAMS
        the stream waits (aioquic marks it blocked) and its data stays buffered.
        """
        if self._terminated or self._going_away or not self.is_verified:
            raise StreamLimitError("connection is not open for new streams")
        if len(self._streams) >= self._max_streams:
            raise StreamLimitError(f"{self._max_streams} streams open")
        sid = self._conn.get_next_available_stream_id()
        self._conn.send_stream_data(sid, b"")  # makes aioquic create the stream
        self._streams[sid] = _Stream(sid)
        return sid

    def send_window(self, sid: int) -> int:
        """How many bytes :meth:`send_data` would take now on stream ``sid``."""
        self._writable(sid)
        window = max(0, self._send_buffer - self._conn.unacked_bytes(sid))
        if not window:
            self._blocked.add(sid)  # SendWindowUpdated once acknowledgements free room
        return window

    def send_data(self, sid: int, data: bytes | bytearray | memoryview) -> int:
        """Queue up to :meth:`send_window` bytes of ``data``; return how many.

        The caller keeps the rest and offers it again after ``SendWindowUpdated``.
        Raises :class:`StreamClosedError` on an unknown, reset or half-closed stream.
        """
        window = self.send_window(sid)
        with memoryview(data) as raw:
            view = raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw
            n = min(view.nbytes, window)
            if n:
                self._conn.send_stream_data(sid, bytes(view[:n]))
                self._streams[sid].queued += n
                self.payload_queued += n
                self._unsent[sid] = self._streams[sid].queued
            if n < view.nbytes or n == window:
                self._blocked.add(sid)
        return n

    def close_stream(self, sid: int) -> None:
        """Half-close stream ``sid``: a FIN goes out; reading goes on."""
        st = self._writable(sid)
        self._conn.send_stream_data(sid, b"", end_stream=True)
        st.local_closed = True
        self._blocked.discard(sid)
        if st.remote_closed:
            self._forget(sid)

    def reset_stream(self, sid: int, code: int = 0) -> None:
        """Abort stream ``sid`` both ways: RESET_STREAM and STOP_SENDING go out."""
        st = self._streams.get(sid)
        if st is None or self._terminated:
            raise StreamClosedError(f"stream {sid} is not open")
        self._abort(sid, code, send=not st.local_closed, receive=not st.remote_closed)
        self._forget(sid, reset=True)

    def consumed(self, sid: int, n: int, now: float | None = None) -> None:
        """The application read ``n`` bytes of stream ``sid``: widen its window.

        A no-op for streams no longer tracked (the application may drain its buffer
        after the stream is gone).
        """
        st = self._streams.get(sid)
        if st is None:
            return
        if n < 0 or n > st.buffered:
            raise ValueError(f"consumed {n} bytes but only {st.buffered} are buffered")
        st.buffered -= n
        st.read += n
        self._unread -= n
        if not st.remote_closed:
            self._conn.grant(sid, st.read)
        self._conn.grant_connection(self._unread, self._connection_window)

    def ping(self, opaque: int) -> None:
        """Send a PING; ``PingAcked(opaque)`` is reported when it is acknowledged."""
        if self._terminated:
            raise RuntimeError("connection is terminated")
        self._conn.send_ping(opaque)

    def go_away(self, code: int = 0) -> None:
        """Accept no new streams (inbound ones are reset); existing ones go on. QUIC
        has no GOAWAY frame, so the peer learns it from the resets; :meth:`close`
        ends the connection."""
        self._going_away = True

    def change_connection_id(self) -> None:
        """Switch to another of the peer's connection ids (unlinkability, RFC 9000 9.5)."""
        self._conn.change_connection_id()

    def close(self, code: int = 0, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE with application error ``code``)."""
        if not self._terminated:
            self._conn.close(error_code=code, reason_phrase=reason)

    # ------------------------------------------------------------------ events

    def _drain_events(self) -> list:
        out: list = []
        while (event := self._conn.next_event()) is not None:
            self._on_event(event, out)
        for sid in list(self._blocked):
            if sid not in self._streams:
                self._blocked.discard(sid)
            elif self.send_window(sid) > 0:
                self._blocked.discard(sid)
                out.append(SendWindowUpdated(sid))
        return out

    def _on_event(self, event: Any, out: list) -> None:
        if isinstance(event, quic_events.HandshakeCompleted):
            self._verify_peer(event.alpn_protocol, out)
        elif isinstance(event, quic_events.ConnectionTerminated):
            self._terminate(event, out)
        elif isinstance(event, quic_events.ConnectionIdIssued):
            self._cid_changes.append((event.connection_id, True))
        elif isinstance(event, quic_events.ConnectionIdRetired):
            self._cid_changes.append((event.connection_id, False))
        elif isinstance(event, quic_events.PingAcknowledged):
            out.append(PingAcked(event.uid))
        elif isinstance(event, (quic_events.StreamDataReceived, quic_events.StreamReset,
                                quic_events.StopSendingReceived)):
            if self.is_verified:
                self._on_stream_event(event, out)
            elif not self._terminated:
                self._early.append(event)  # bounded by the flow-control windows

    def _verify_peer(self, alpn: str | None, out: list) -> None:
        """Check the peer's certificate by the libp2p rules; refuse it on failure."""
        try:
            if alpn != ALPN:
                raise InvalidCertificate(f"peer negotiated ALPN {alpn!r}, not {ALPN!r}")
            chain = self._conn.peer_certificates()
            if not chain:
                raise InvalidCertificate("peer sent no certificate")
            certified = verify_certificate_chain(
                chain, expected_peer=self.expected_peer,
                now=datetime.datetime.now(datetime.timezone.utc))
        except TlsError as exc:
            self.handshake_error = exc
            self._conn.close(error_code=BAD_CERTIFICATE, frame_type=QuicFrameType.CRYPTO,
                             reason_phrase=str(exc)[:200])
            self._terminated = True
            out.append(SessionTerminated(f"peer refused: {exc}", MuxerError(str(exc))))
            return
        self.remote_peer_id = certified.peer_id
        out.append(HandshakeComplete(certified.peer_id))
        early, self._early = self._early, []
        for event in early:
            self._on_stream_event(event, out)

    def _terminate(self, event: Any, out: list) -> None:
        if self._terminated:
            return
        self._terminated = True
        reason = event.reason_phrase or f"closed with code {event.error_code:#x}"
        error = None if event.error_code == QuicErrorCode.NO_ERROR else MuxerError(reason)
        out.append(SessionTerminated(reason, error))

    def _on_stream_event(self, event: Any, out: list) -> None:
        sid = event.stream_id
        if sid & 2:  # unidirectional: libp2p does not use them (and we allow none)
            return
        st = self._streams.get(sid)
        if st is None:
            st = self._accept(sid, out)
            if st is None:
                return
        if isinstance(event, quic_events.StreamDataReceived):
            if event.data:
                st.buffered += len(event.data)
                self._unread += len(event.data)
                out.append(DataReceived(sid, event.data))
            if event.end_stream:
                st.remote_closed = True
                out.append(StreamEnded(sid))
                if st.local_closed:
                    self._forget(sid)
        else:  # RESET_STREAM or STOP_SENDING: the stream is over both ways
            self._abort(sid, event.error_code, send=not st.local_closed,
                        receive=not st.remote_closed
                        and isinstance(event, quic_events.StopSendingReceived))
            self._forget(sid, reset=True)
            out.append(StreamReset(sid))

    def _accept(self, sid: int, out: list) -> _Stream | None:
        """A stream event for an id we do not track: a new inbound stream, or
        a late event for one we already finished (ignored)."""
        if (sid & 1) != (self._remote_next & 1):
            return None  # one of ours, already forgotten
        if sid >= self._remote_next:
            self._remote_gaps.update(range(self._remote_next, sid, 4))
            self._remote_next = sid + 4
        elif sid in self._remote_gaps:
            self._remote_gaps.discard(sid)
        else:
            return None
        if self._going_away or self._terminated:
            self._abort(sid, 0, send=True, receive=True)
            return None
        st = self._streams[sid] = _Stream(sid)
        out.append(StreamOpened(sid))
        return st

    def _abort(self, sid: int, code: int, *, send: bool, receive: bool) -> None:
        if send:
            self._conn.reset_stream(sid, code)
        if receive:
            try:
                self._conn.stop_stream(sid, code)
            except ValueError:  # aioquic already discarded the receiving side
                pass

    def _writable(self, sid: int) -> _Stream:
        st = self._streams.get(sid)
        if st is None or st.local_closed or self._terminated:
            raise StreamClosedError(f"stream {sid} is not open for writing")
        return st

    def _forget(self, sid: int, reset: bool = False) -> None:
        st = self._streams.pop(sid, None)
        self._blocked.discard(sid)
        if reset and self._unsent.pop(sid, None) is not None:
            self._count_sent()  # its unsent bytes never leave: count them as done
        if st is not None and st.buffered:
            # Its unread bytes no longer count against the connection window.
            self._unread -= st.buffered
            st.buffered = 0
            self._conn.grant_connection(self._unread, self._connection_window)
