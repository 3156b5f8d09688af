"""``/p2p-circuit``: connections relayed through a circuit relay v2 (the client side).

A relayed connection is a transport of its own: the relay joins two streams (our hop
stream, the target's stop stream) byte for byte, and our node runs security and the
muxer over that pipe exactly as over TCP, so the remote is authenticated end to end
(the dialer through the relay is the security initiator). The byte channel the
connection upgrades is one end of a ``socket.socketpair``; a :class:`StreamPump` moves
bytes between the other end and the relayed stream on the reactor (no thread).

Dialing ``[/<relay transport addr>]/p2p/<relay>/p2p-circuit/p2p/<peer>``: ``resolve``
(caller's thread) makes sure we are connected to the relay (bounded by
``Limits.handshake_timeout``); ``connect`` (reactor) returns the channel at once and
sends the hop ``CONNECT``; a refusal fails the connection's first read with
:class:`RelayRefused` (so the dial's error names the relay's status code).

Bounds per relayed connection: the socketpair's kernel buffers (:data:`PUMP_SOCKET_BUFFER`
asked for each end), at most :data:`PUMP_CHUNK` bytes held by the pump towards the
socket (the muxer's window bounds what arrives), and :data:`PUMP_BUFFER` of our own
outgoing bytes held while the relayed stream is slower (the socket is not read beyond).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from multiaddr import Multiaddr

from ..codec.circuit import (HOP_PROTOCOL, HopMessage, HopType, Limit, MessageReader,
                             Peer, Status, frame)
from ..errors import DecodeError, DialError, OpenStreamError
from ..identity import PeerId
from .tcp import to_multiaddr

if TYPE_CHECKING:
    from ..connection import Connection
    from ..limits import Limits
    from ..reactor import Reactor
    from ..stream import Stream

log = logging.getLogger(__name__)

CIRCUIT_CODE = 0x0122  # the p2p-circuit multiaddr protocol
#: Bytes the pump holds towards the socket before it stops reading the stream.
PUMP_CHUNK = 64 * 1024
#: Unsent bytes of the relayed stream at which the pump holds bytes itself ...
PUMP_HIGH_WATER = 256 * 1024
#: ... up to this many; then it stops reading the socket. Large, like loopback TCP's
#: buffers: a connection stops reading while its own output is blocked, so two bulk
#: transfers in opposite directions stall once more than the whole path holds is in
#: flight (yamux windows grow to 16 MiB).
PUMP_BUFFER = 4 * 1024 * 1024
#: Kernel send buffer asked for each end of the socketpair (capped by wmem_max).
PUMP_SOCKET_BUFFER = 2 * 1024 * 1024
#: How often a paused pump looks whether the stream drained (no drain event exists).
PUMP_POLL_INTERVAL = 0.005

__all__ = ["CircuitTarget", "CircuitTransport", "RelayRefused", "RelayedChannel",
           "StreamPump", "is_circuit_multiaddr", "split_circuit_multiaddr"]


class RelayRefused(ConnectionRefusedError):
    """The relay (or the target behind it) refused a circuit or a reservation;
    :attr:`status` is the spec's :class:`~libp2p_stream_sync.codec.circuit.Status`
    (None when the answer was not a status at all)."""

    def __init__(self, message: str, status: Status | None = None) -> None:
        """``message`` says who refused what; ``status`` is the code they sent."""
        super().__init__(errno.ECONNREFUSED, message)
        self.status = status

    def __str__(self) -> str:
        return str(self.strerror)


def is_circuit_multiaddr(addr: "str | bytes | Multiaddr") -> bool:
    """True when the multiaddr goes through a relay (has ``/p2p-circuit``)."""
    return any(proto.code == CIRCUIT_CODE for proto in to_multiaddr(addr).protocols())


def split_circuit_multiaddr(addr: "str | bytes | Multiaddr"
                            ) -> tuple[Multiaddr | None, PeerId, PeerId | None]:
    """``(relay transport address or None, relay id, destination id or None)`` of
    ``[/<addr>]/p2p/<relay>/p2p-circuit[/p2p/<peer>]``; ValueError for anything else
    (relays of relays included)."""
    ma = to_multiaddr(addr)
    parts = [(proto.name, value) for proto, value in ma.items()]
    names = [name for name, _ in parts]
    if names.count("p2p-circuit") != 1:
        raise ValueError(f"not a relayed address (one /p2p-circuit): {ma}")
    at = names.index("p2p-circuit")
    before, after = parts[:at], parts[at + 1:]
    if not before or before[-1][0] not in ("p2p", "ipfs"):
        raise ValueError(f"a relayed address names its relay: /p2p/<relay>/p2p-circuit "
                         f"({ma})")
    relay = PeerId.from_string(before[-1][1])
    dest = None
    if after:
        if len(after) != 1 or after[0][0] not in ("p2p", "ipfs"):
            raise ValueError(f"only /p2p/<peer> may follow /p2p-circuit: {ma}")
        dest = PeerId.from_string(after[0][1])
    relay_addr = None
    if len(before) > 1:
        text = str(ma)
        relay_addr = Multiaddr(text[:text.index("/p2p-circuit")])
    return relay_addr, relay, dest


@dataclass(frozen=True)
class CircuitTarget:
    """A relayed dial target: the relay (and its address, if given) and the peer."""

    relay_addr: Multiaddr | None
    relay: PeerId
    peer_id: PeerId | None
    transport: Any = None
    #: For the node's error messages ("dial <host>:<port> failed").
    host: str = ""
    port: str = "p2p-circuit"


class CircuitHost(Protocol):
    """What the circuit transport needs of its node (public ``Node`` methods)."""

    peer_id: PeerId
    limits: "Limits"

    @property
    def reactor(self) -> "Reactor": ...

    def add_address(self, peer_id: PeerId, addr: Any) -> None: ...

    def connection_for(self, peer_id: PeerId, deadline: float) -> "Connection": ...

    def usable_connection(self, peer_id: PeerId) -> "Connection | None": ...


class RelayedChannel:
    """The byte channel of a relayed connection (``interfaces.ByteChannel``): our end
    of the socketpair. Once the pump failed (the relay refused, the relayed stream was
    reset), reading the end of the socket raises that failure instead of returning 0."""

    #: It holds no output of its own (the connection checks these on non-sockets).
    wants_write = False

    def __init__(self, sock: socket.socket, pump: "StreamPump", relay: PeerId) -> None:
        """``sock``: our end of the socketpair; ``pump`` serves the other end."""
        self._sock = sock
        self.pump = pump
        #: The relay this connection goes through.
        self.relay = relay
        #: The limit the relay announced for this circuit (None: none announced);
        #: the relay enforces it (the connection then ends with a reset).
        self.limit: Limit | None = None

    def fileno(self) -> int:
        """The socket's descriptor (what the selector watches)."""
        return self._sock.fileno()

    @property
    def family(self) -> int:
        """The socketpair's family (AF_UNIX)."""
        return self._sock.family

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """As ``socket.recv_into``; the pump's failure instead of the end (or of the
        reset the closed pair reports), if any."""
        try:
            n = self._sock.recv_into(buffer, nbytes)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as exc:
            self._raise_failure(exc)
            raise
        if n == 0:
            self._raise_failure(None)
        return n

    def sendmsg(self, buffers: Sequence[Any]) -> int:
        """As ``socket.sendmsg``; the pump's failure instead of a broken pipe."""
        try:
            return self._sock.sendmsg(buffers)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as exc:
            self._raise_failure(exc)
            raise

    def _raise_failure(self, cause: OSError | None) -> None:
        error = self.pump.error
        if error is not None:
            raise _copied(error) from cause

    def flush(self) -> None:
        """Nothing to flush: the socket holds what was sent."""

    def shutdown(self, how: int) -> None:
        """As ``socket.shutdown`` (``SHUT_WR`` ends our side of the circuit)."""
        self._sock.shutdown(how)

    def close(self) -> None:
        """Close our end (the pump then ends the relayed stream)."""
        self._sock.close()

    def getsockopt(self, *args: Any) -> Any:
        """As ``socket.getsockopt`` (``SO_ERROR`` is 0: the pair is connected)."""
        return self._sock.getsockopt(*args)

    def setsockopt(self, *args: Any) -> None:
        """Ignored: TCP options mean nothing on a socketpair."""


class StreamPump:
    """Moves bytes between a relayed :class:`Stream` and the far end of a socketpair,
    on the reactor thread, with back-pressure both ways (bounds: module docstring).

    Created before the stream exists (the hop or stop handshake runs first); call
    :meth:`attach` once the stream carries the circuit, or :meth:`fail`.
    """

    def __init__(self, reactor: "Reactor", far: socket.socket) -> None:
        """``far``: the socketpair end the pump owns (non-blocking)."""
        self._reactor = reactor
        self._far = far
        self._stream: "Stream | None" = None
        self._to_socket = bytearray()
        self._to_stream = bytearray()
        self._fin_sent = False       # our FIN went on the stream
        self._stream_ended = False   # the remote finished: FIN the socket when drained
        self._socket_ended = False   # our connection finished writing (socket EOF)
        self._poll: Any = None
        self._interest = 0
        self._done = False
        #: Why the circuit failed (raised by the channel's read), or None.
        self.error: OSError | None = None

    @property
    def done(self) -> bool:
        """True once the pump has let go of the socket and the stream."""
        return self._done

    def attach(self, stream: "Stream", conn: "Connection", early: bytes = b"") -> None:
        """Reactor: start pumping; ``early`` are circuit bytes read with the handshake."""
        if self._done:
            stream.reset()
            return
        self._stream = stream
        stream.settimeout(0)
        self._to_socket += early
        conn.watch_stream(stream, self._from_stream)
        self._from_stream()
        self._set_interest()

    def fail(self, error: OSError) -> None:
        """Reactor: end the circuit abruptly (reset the stream, close the socket); the
        relayed connection's next read raises ``error``."""
        if self._done:
            return
        if self.error is None:
            self.error = error
        self._finish(reset=True)

    # -- stream -> socket ----------------------------------------------------------------
    def _from_stream(self) -> None:
        stream = self._stream
        if self._done or stream is None:
            return
        while not self._stream_ended and len(self._to_socket) < PUMP_CHUNK:
            try:
                data = stream.read(PUMP_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                self.fail(ConnectionResetError(f"relayed stream failed: {exc}"))
                return
            if not data:
                self._stream_ended = True
                break
            self._to_socket += data
        self._send_to_socket()

    def _send_to_socket(self) -> None:
        if self._to_socket:
            try:
                sent = self._far.send(self._to_socket)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # our connection closed its end abruptly
                self._finish(reset=True)
                return
            del self._to_socket[:sent]
        if not self._to_socket and self._stream_ended:
            try:
                self._far.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self._check_done()
        self._set_interest()

    def on_writable(self) -> None:
        """Reactor: the socket takes bytes again; send, then read the stream on."""
        self._send_to_socket()
        if not self._done and not self._to_socket:
            self._from_stream()

    # -- socket -> stream ----------------------------------------------------------------
    def on_readable(self) -> None:
        """Reactor: our connection wrote bytes; take them (the pump holds at most
        :data:`PUMP_BUFFER`) and pass them on to the stream."""
        if self._done or self._stream is None:
            return
        for _ in range(8):
            if self._socket_ended or len(self._to_stream) >= PUMP_BUFFER:
                break
            try:
                data = self._far.recv(PUMP_CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._finish(reset=True)
                return
            if not data:
                self._socket_ended = True
                break
            self._to_stream += data
        self._write_stream()

    def _write_stream(self) -> None:
        """Hand held bytes to the stream while it holds under :data:`PUMP_HIGH_WATER`
        unsent (no drain event exists: a short timer looks again); then the FIN."""
        stream = self._stream
        assert stream is not None
        held = self._to_stream
        while held and stream.unsent_bytes < PUMP_HIGH_WATER:
            chunk = bytes(held[:PUMP_CHUNK])
            del held[:len(chunk)]
            try:
                stream.write(chunk)
            except OSError as exc:
                self.fail(ConnectionResetError(f"relayed stream failed: {exc}"))
                return
        if held:
            if self._poll is None:
                self._poll = self._reactor.call_later(PUMP_POLL_INTERVAL, self._poll_drained)
        elif self._socket_ended and not self._fin_sent:
            self._fin_sent = True
            try:
                stream.close_write()
            except OSError:
                pass
            self._check_done()
        self._set_interest()

    def _poll_drained(self) -> None:
        self._poll = None
        if not self._done and self._stream is not None:
            self._write_stream()

    # -- bookkeeping -----------------------------------------------------------------------
    def _set_interest(self) -> None:
        if self._done or self._stream is None:
            return
        interest = 0
        if not self._socket_ended and len(self._to_stream) < PUMP_BUFFER:
            interest |= selectors.EVENT_READ
        if self._to_socket:
            interest |= selectors.EVENT_WRITE
        if interest == self._interest:
            return
        if not interest:
            self._reactor.unregister(self._far)
        elif not self._interest:
            self._reactor.register(self._far, interest, self)
        else:
            self._reactor.modify(self._far, interest, self)
        self._interest = interest

    def _check_done(self) -> None:
        if (self._fin_sent and self._stream_ended and not self._to_socket
                and not self._to_stream):
            self._finish(reset=False)

    def _finish(self, *, reset: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._interest:
            self._reactor.unregister(self._far)
            self._interest = 0
        self._far.close()
        stream = self._stream
        if stream is not None:
            if reset:
                stream.reset()
            else:
                try:
                    stream.close()
                except OSError:
                    pass


def _copied(error: OSError) -> OSError:
    """A fresh exception like ``error`` (one object raised twice grows its traceback)."""
    if isinstance(error, RelayRefused):
        return RelayRefused(str(error), error.status)
    return type(error)(*error.args)


def new_pump(reactor: "Reactor", relay: PeerId) -> tuple[RelayedChannel, StreamPump]:
    """A socketpair: our connection's channel and the pump serving its other end."""
    near, far = socket.socketpair()
    for end in (near, far):
        end.setblocking(False)
        try:
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PUMP_SOCKET_BUFFER)
        except OSError:
            pass  # the default size works, with less in flight
    pump = StreamPump(reactor, far)
    return RelayedChannel(near, pump, relay), pump


class _HopDial:
    """Reactor: the dialer's hop handshake (CONNECT, then the relay's STATUS) on a new
    stream to the relay; on OK the stream becomes the circuit (:meth:`StreamPump.attach`)."""

    def __init__(self, conn: "Connection", dest: PeerId, channel: RelayedChannel,
                 timeout: float) -> None:
        self.conn = conn
        self.channel = channel
        self.dest = dest
        self.pump = channel.pump
        self.reader = MessageReader()
        self.stream: "Stream | None" = None
        self.relay = conn.remote_peer_id
        self.timer = conn.owner.reactor.call_later(timeout, self._timed_out)

    def start(self) -> None:
        future: Future = Future()
        future.add_done_callback(self._opened)
        self.conn.open_stream(HOP_PROTOCOL, future)

    def _opened(self, future: Future) -> None:
        error = future.exception()
        if error is not None:
            self._fail(RelayRefused(f"relay {self.relay} does not relay: {error}")
                       if isinstance(error, OpenStreamError) else
                       ConnectionResetError(f"hop stream to relay {self.relay}: {error}"))
            return
        stream = self.stream = future.result()
        if self.pump.done:  # the connection gave up meanwhile
            stream.reset()
            return
        stream.settimeout(0)
        request = HopMessage(HopType.CONNECT, peer=Peer(self.dest.to_bytes()))
        try:
            stream.write(frame(request))
        except OSError as exc:
            self._fail(ConnectionResetError(f"hop stream to relay {self.relay}: {exc}"))
            return
        self.conn.watch_stream(stream, self._on_event)
        self._on_event()

    def _on_event(self) -> None:
        stream = self.stream
        if stream is None or self.pump.done or self.timer is None:
            return
        while True:
            try:
                data = stream.read(4096)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(ConnectionResetError(f"relay {self.relay} reset the hop "
                                                f"stream: {exc}"))
                return
            if not data:
                self._fail(ConnectionResetError(f"relay {self.relay} closed the hop "
                                                f"stream without an answer"))
                return
            try:
                body = self.reader.feed(data)
                if body is None:
                    continue
                answer = HopMessage.decode(body)
            except DecodeError as exc:
                self._fail(ConnectionAbortedError(f"relay {self.relay} sent a malformed "
                                                  f"hop message: {exc}"))
                return
            self._answered(stream, answer)
            return

    def _answered(self, stream: "Stream", answer: HopMessage) -> None:
        self.timer.cancel()
        self.timer = None
        if answer.type != HopType.STATUS or answer.status != Status.OK:
            status = answer.status if answer.type == HopType.STATUS else None
            name = status.name if status is not None else f"a {answer.type.name} message"
            log.debug("relay %s refused a circuit to %s: %s", self.relay, self.dest, name)
            self.pump.fail(RelayRefused(f"relay {self.relay} refused the circuit to "
                                        f"{self.dest}: {name}", status))
            stream.reset()
            return
        log.debug("circuit to %s through relay %s open", self.dest, self.relay)
        self.channel.limit = answer.limit
        self.pump.attach(stream, self.conn, bytes(self.reader.rest))

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(TimeoutError(f"relay {self.relay} did not answer the hop request"))

    def _fail(self, error: OSError) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.stream is not None:
            self.stream.reset()
        self.pump.fail(error)


class CircuitTransport:
    """``[/<addr>]/p2p/<relay>/p2p-circuit/p2p/<peer>``: the client side of circuit relay
    v2 as a byte-stream transport (module docstring). ``relayed`` marks its
    connections (``Connection.relayed``)."""

    name = "p2p-circuit"
    relayed = True

    def __init__(self, host: CircuitHost) -> None:
        """``host``: the node (it dials relays and owns their connections)."""
        self._host = host

    def handles(self, ma: Multiaddr) -> bool:
        """Whether ``ma`` goes through a relay."""
        return is_circuit_multiaddr(ma)

    def parse(self, ma: Multiaddr) -> CircuitTarget:
        """The relay and the peer (ValueError when malformed)."""
        relay_addr, relay, dest = split_circuit_multiaddr(ma)
        return CircuitTarget(relay_addr, relay, dest, self, f"relay {relay}")

    def resolve(self, target: CircuitTarget) -> list[tuple[int, tuple]]:
        """Caller's thread: connect to the relay (its address from the target or the
        address book; at most ``Limits.handshake_timeout``). Raises ``DialError``."""
        if target.peer_id is None:
            raise DialError(f"a relayed address needs the peer behind the relay: "
                            f"/p2p/{target.relay}/p2p-circuit/p2p/<peer>")
        if target.peer_id == self._host.peer_id or target.relay == self._host.peer_id:
            raise DialError("cannot dial ourselves, or through ourselves, via a relay")
        if target.relay_addr is not None:
            self._host.add_address(target.relay, target.relay_addr)
        deadline = time.monotonic() + self._host.limits.handshake_timeout
        try:
            self._host.connection_for(target.relay, deadline)
        except OpenStreamError as exc:
            raise DialError(f"cannot reach relay {target.relay}: {exc}") from exc
        return [(socket.AF_UNIX, (str(target.relay), str(target.peer_id)))]

    def connect(self, family: int, sockaddr: tuple) -> RelayedChannel:
        """Reactor: the channel of a circuit being requested from the relay (the hop
        handshake runs on; a refusal fails the channel's first read)."""
        relay, dest = PeerId.from_string(sockaddr[0]), PeerId.from_string(sockaddr[1])
        conn = self._host.usable_connection(relay)
        if conn is None or getattr(conn.transport, "relayed", False):
            raise ConnectionRefusedError(errno.ECONNREFUSED,
                                         f"no direct connection to relay {relay}")
        channel, _ = new_pump(self._host.reactor, relay)
        _HopDial(conn, dest, channel, self._host.limits.handshake_timeout).start()
        return channel

    def listen(self, ma: Multiaddr) -> Any:
        """Relayed addresses are not listened on: reserve a slot on a relay instead."""
        raise ValueError(f"cannot listen on {ma}: reserve a relay slot instead "
                         f"(Node(relays=[...]) or Node.add_relay)")

    def bound_multiaddr(self, listener: Any) -> Multiaddr:
        """Never called (no listeners)."""
        raise ValueError("relayed connections have no listener")

    def accepted(self, channel: RelayedChannel) -> RelayedChannel:
        """Reactor: an inbound relayed channel (made by the stop handler) as it is."""
        return channel

    def remote_multiaddr(self, channel: RelayedChannel, sockaddr: tuple) -> Multiaddr:
        """``/p2p/<relay>/p2p-circuit``: how the peer reaches us (identify's observed
        address of a relayed connection)."""
        return Multiaddr(f"/p2p/{channel.relay}/p2p-circuit")
