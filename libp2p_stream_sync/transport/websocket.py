"""WebSocket byte channel: a non-blocking TCP socket carrying a WebSocket connection.

:class:`WebSocketChannel` has the socket methods the connection uses (``fileno``,
``recv_into``, ``sendmsg``, ``shutdown``, ``close``, ``getsockopt``...), so the security and
muxer upgrade runs over it exactly as over a TCP socket; the framing is done by
:class:`~libp2p_stream_sync.engines.websocket.WebSocketEngine`. Also here: reading
``/ip4|ip6|dns4|dns6/<host>/tcp/<port>/ws[/p2p/<id>]`` multiaddrs.

Bounds: new application bytes are accepted only while own pending output (frames, pongs,
the close frame, bytes held during the upgrade) is under ``max_pending`` (default 256 KiB),
so it stays under ``max_pending`` plus one frame (64 KiB) and ``sendmsg`` raises
``BlockingIOError`` for a peer that does not read, as a socket would.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections import deque
from typing import Any, Literal, Sequence

from multiaddr import Multiaddr

from ..engines.websocket import (CLEAN_CLOSE_CODES, MAX_FRAME_SIZE, MAX_HEAD_SIZE,
                                 MAX_MESSAGE_SIZE, WebSocketEngine, WebSocketError,
                                 load_wsproto)
from .tcp import (TcpTarget, TcpTransport, parse_tcp_multiaddr, sockaddr_to_multiaddr,
                  to_multiaddr)

#: Own pending output (bytes accepted but not yet on the socket) that stops ``sendmsg``.
MAX_PENDING = 256 * 1024
_MAX_SENDMSG_BUFFERS = 64

__all__ = ["MAX_PENDING", "WebSocketChannel", "WebSocketError", "WebSocketTransport",
           "host_header",
           "is_websocket_multiaddr", "require_wsproto", "split_websocket_multiaddr"]


def require_wsproto() -> None:
    """Raise ``ImportError`` naming ``pip install 'libp2p_stream_sync[ws]'`` if
    ``wsproto`` is missing (for a clear error when a ``/ws`` address is used)."""
    load_wsproto()


def is_websocket_multiaddr(addr: "str | bytes | Multiaddr") -> bool:
    """True for ``.../tcp/<port>/ws`` (optionally followed by ``/p2p/<id>``)."""
    # protocols(), not items(): no value decoding (this runs for every address dialed)
    names = [proto.name for proto in to_multiaddr(addr).protocols()]
    if names and names[-1] in ("p2p", "ipfs"):
        names.pop()
    return len(names) >= 2 and names[-1] == "ws" and names[-2] == "tcp"


def split_websocket_multiaddr(addr: "str | bytes | Multiaddr") -> tuple[Multiaddr, str]:
    """Split a ``/ws`` multiaddr into its TCP multiaddr (keeping ``/p2p/<id>``) and the
    HTTP ``Host`` header value for the upgrade request.

    Raises ``ValueError`` for anything else (``/wss`` is not supported).
    """
    ma = to_multiaddr(addr)
    parts = [(proto.name, value) for proto, value in ma.items()]
    if any(name in ("wss", "tls") for name, _ in parts):
        raise ValueError(f"/wss (WebSocket over TLS) is not supported: {ma}")
    if not is_websocket_multiaddr(ma):
        raise ValueError(f"not a WebSocket multiaddr (.../tcp/<port>/ws): {ma}")
    text = str(ma)
    tcp_text = text.replace("/ws/", "/", 1) if "/ws/" in text else text[:-len("/ws")]
    tcp = Multiaddr(tcp_text)
    target = parse_tcp_multiaddr(tcp)
    return tcp, host_header(target.host, target.port, target.family == socket.AF_INET6)


def host_header(host: str, port: int, ipv6: bool = False) -> str:
    """The ``Host`` value for ``host:port`` (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ipv6 else f"{host}:{port}"


class WebSocketChannel:
    """A WebSocket connection over a non-blocking, connected (or connecting) TCP socket,
    seen as a non-blocking byte stream with the socket methods the upgrade uses.

    ``role`` is ``"client"`` (``host`` is the ``Host`` header value, see
    :func:`split_websocket_multiaddr`) or ``"server"``. The channel owns ``sock``.

    Until the HTTP upgrade completes, ``recv_into`` delivers nothing and ``sendmsg``
    holds application bytes (within ``max_pending``). ``shutdown(SHUT_WR)`` sends a close
    frame; the peer's close frame reads as end of stream (``recv_into`` returns 0) when
    its code is 1000 or 1005, else raises ``ConnectionResetError``. A closed TCP
    connection without a close frame also reads as end of stream, as with TCP. A peer
    breaking the protocol makes ``recv_into`` raise ``ConnectionAbortedError`` (its
    ``__cause__`` is the :class:`WebSocketError`), after a best-effort rejection; a text
    message is such a break (libp2p peers send binary messages).
    """

    def __init__(self, sock: socket.socket, role: Literal["client", "server"],
                 host: str | None = None, *,
                 max_pending: int = MAX_PENDING, max_head_size: int = MAX_HEAD_SIZE,
                 max_message_size: int = MAX_MESSAGE_SIZE,
                 max_frame_size: int = MAX_FRAME_SIZE) -> None:
        """Raises ``ImportError`` naming ``pip install 'libp2p_stream_sync[ws]'`` when
        ``wsproto`` is missing; ``ValueError`` for a bad ``role`` or a client without
        ``host``."""
        if role not in ("client", "server"):
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        self._engine = WebSocketEngine(client=role == "client", host=host,
                                       max_head_size=max_head_size,
                                       max_message_size=max_message_size,
                                       max_frame_size=max_frame_size)
        self._sock = sock
        self._max_pending = max_pending
        self._max_frame_size = max_frame_size
        self._out: deque[memoryview] = deque()
        self._out_len = 0
        self._write_shut = False
        self._read_shut = False

    # -- plain socket pass-through ------------------------------------------------------
    def fileno(self) -> int:
        """The TCP socket's descriptor (what the selector watches)."""
        return self._sock.fileno()

    @property
    def family(self) -> int:
        """The TCP socket's address family."""
        return self._sock.family

    def getsockopt(self, *args: Any) -> Any:
        """``socket.getsockopt`` of the TCP socket (e.g. ``SO_ERROR`` after connect)."""
        return self._sock.getsockopt(*args)

    def setsockopt(self, *args: Any) -> None:
        """``socket.setsockopt`` of the TCP socket."""
        self._sock.setsockopt(*args)

    def getpeername(self) -> Any:
        """The TCP peer address."""
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        """The TCP local address."""
        return self._sock.getsockname()

    # -- reading -----------------------------------------------------------------------
    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Read application bytes into ``buffer`` (at most ``nbytes``, 0 = its length).

        Returns the count, 0 at end of stream; raises ``BlockingIOError`` when no
        application bytes are available yet (also when the read carried only framing,
        control frames or the upgrade). Fills the buffer while the socket has bytes, so a
        caller that grows its reads when they come back full sees full reads.
        """
        view = memoryview(buffer).cast("B")
        nbytes = nbytes or len(view)
        if self._engine.eof:
            return self._end_of_stream()
        got = self._read_socket(view, nbytes)
        self.flush()  # the 101 response, held bytes, pongs, the answer to a close frame
        if self._engine.eof:
            self._shut_read()
        if got is None:  # TCP ended without a close frame: the end, as with TCP
            return 0
        if got:
            return got
        if self._engine.eof:
            return self._end_of_stream()
        raise BlockingIOError(errno.EAGAIN, "no application data yet")

    def _read_socket(self, view: memoryview, nbytes: int) -> int | None:
        """Decode socket bytes into ``view`` until it is full or the socket is drained;
        the count, or None at the TCP end. (Application bytes never outnumber the bytes
        read, so reading at most the room left never overflows ``view``.)"""
        got = 0
        while got < nbytes and not self._engine.eof:
            want = nbytes - got
            scratch = _scratch_buffer(want)
            try:
                n = self._sock.recv_into(scratch, want)
            except (BlockingIOError, InterruptedError):
                if got:
                    break
                raise
            if not n:
                return got or None
            data = scratch[:n]
            try:
                app = self._engine.receive_data(data)
            except WebSocketError as exc:
                self._flush_quietly()
                raise ConnectionAbortedError(errno.ECONNABORTED,
                                             f"websocket: {exc}") from exc
            view[got:got + len(app)] = app
            got += len(app)
            if n < want:
                break  # drained for now
        return got

    def _end_of_stream(self) -> int:
        code = self._engine.close_code
        if code in CLEAN_CLOSE_CODES:
            return 0
        raise ConnectionResetError(errno.ECONNRESET, f"websocket closed by the peer with "
                                   f"code {code}: {self._engine.close_reason}")

    def _shut_read(self) -> None:
        # The peer's close frame ended the stream while its TCP connection may stay open:
        # a read-shut socket stays readable, so the caller's selector comes back for the 0.
        if not self._read_shut:
            self._read_shut = True
            try:
                self._sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    @property
    def upgraded(self) -> bool:
        """The HTTP upgrade is complete (application bytes flow)."""
        return self._engine.is_open

    # -- writing -----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Bytes accepted but not yet written to the socket (framing included)."""
        return self._out_len + self._engine.buffered

    @property
    def wants_write(self) -> bool:
        """The channel holds output of its own: keep write interest on, call flush()."""
        return bool(self._out) or (self._engine.has_output and not self._write_shut)

    def sendmsg(self, buffers: Sequence[Any]) -> int:
        """Accept application bytes from ``buffers`` (each as one or more binary messages).

        Returns the count accepted (>= 1 unless ``buffers`` is empty); raises
        ``BlockingIOError`` while own pending output is at ``max_pending``, and
        ``BrokenPipeError`` after a close frame was sent or received.
        """
        if not self._engine.writable:
            raise BrokenPipeError(errno.EPIPE, "the websocket is closed for writing")
        if self.pending >= self._max_pending:
            self.flush()
            if self.pending >= self._max_pending:
                raise BlockingIOError(errno.EAGAIN, "websocket output is full")
        # At least a whole frame: accepting only the room left would cut tiny frames.
        data = _take(buffers, max(self._max_pending - self.pending, self._max_frame_size))
        if not data:
            return 0
        self._engine.send(data)
        self.flush()
        return len(data)

    def flush(self) -> None:
        """Write pending output to the socket as far as it takes it (non-blocking).

        Raises the socket's ``OSError`` (never ``BlockingIOError``)."""
        out = self._out
        while True:
            if self._out_len < self._max_pending and self._engine.has_output:
                data = self._engine.data_to_send()
                out.append(memoryview(data))
                self._out_len += len(data)
            if not out:
                break
            buffers = list(out) if len(out) <= _MAX_SENDMSG_BUFFERS else \
                [out[i] for i in range(_MAX_SENDMSG_BUFFERS)]
            try:
                sent = self._sock.sendmsg(buffers)
            except (BlockingIOError, InterruptedError):
                return
            self._out_len -= sent
            while sent:
                head = out[0]
                if len(head) <= sent:
                    sent -= len(head)
                    out.popleft()
                else:
                    out[0] = head[sent:]
                    sent = 0
            if out:
                return
        if self._engine.closed and not self._write_shut:
            self._write_shut = True
            self._sock.shutdown(socket.SHUT_WR)

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except OSError:
            pass

    # -- closing -----------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        """``SHUT_WR``: send a close frame after the pending bytes (the TCP connection ends
        once the peer answers it). ``SHUT_RD`` is passed to the socket."""
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._engine.close()
            self.flush()
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            self._sock.shutdown(socket.SHUT_RD)

    def close(self) -> None:
        """Close the socket, after a best-effort close frame (no waiting)."""
        if self._engine.is_open and self._engine.writable:
            self._engine.close()
        self._flush_quietly()
        self._sock.close()


_per_thread = threading.local()


def _scratch_buffer(size: int) -> memoryview:
    """A receive buffer of ``size`` bytes shared by the channels of one thread (the engine
    copies what it keeps), so an idle channel holds no receive buffer of its own."""
    buf = getattr(_per_thread, "scratch", None)
    if buf is None or len(buf) < size:
        buf = _per_thread.scratch = bytearray(max(size, 64 * 1024))
    return memoryview(buf)[:size]


def _take(buffers: Sequence[Any], limit: int) -> bytes:
    """The first ``limit`` bytes of ``buffers``, joined."""
    parts = []
    for buf in buffers:
        if limit <= 0:
            break
        view = memoryview(buf).cast("B")
        if len(view) > limit:
            view = view[:limit]
        parts.append(view)
        limit -= len(view)
    return b"".join(parts)


class WebSocketTransport:
    """``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>/ws``: a WebSocket over TCP as the byte
    channel (:class:`WebSocketChannel`); the upgrade (security, muxer) runs over it as
    over TCP. TCP does the sockets; this transport adds the ``/ws`` suffix and the
    framing. Without ``wsproto``, ``parse`` and ``listen`` raise ``ImportError`` naming
    ``pip install 'libp2p_stream_sync[ws]'``.
    """

    name = "ws"

    def __init__(self) -> None:
        self._tcp = TcpTransport()

    def handles(self, ma: Multiaddr) -> bool:
        """Whether ``ma`` is a ``.../tcp/<port>/ws`` multiaddr (wsproto or not)."""
        return is_websocket_multiaddr(ma)

    def parse(self, ma: Multiaddr) -> TcpTarget:
        """Where to connect and whom we expect there (ValueError when malformed)."""
        require_wsproto()
        tcp_ma, _ = split_websocket_multiaddr(ma)
        return parse_tcp_multiaddr(tcp_ma, self)

    def resolve(self, target: TcpTarget) -> list[tuple[int, tuple]]:
        """``(family, sockaddr)`` pairs to try (blocking DNS for ``/dns*``)."""
        return self._tcp.resolve(target)

    def connect(self, family: int, sockaddr: tuple) -> WebSocketChannel:
        """Reactor: a client channel whose TCP connect is under way; its HTTP upgrade
        request goes out once the socket is writable."""
        sock = self._tcp.connect(family, sockaddr)
        host = host_header(sockaddr[0], sockaddr[1], family == socket.AF_INET6)
        try:
            return WebSocketChannel(sock, "client", host)
        except BaseException:
            sock.close()
            raise

    def listen(self, ma: "str | Multiaddr") -> socket.socket:
        """A listening TCP socket for the ``/ws`` address ``ma``."""
        require_wsproto()
        tcp_ma, _ = split_websocket_multiaddr(ma)
        return self._tcp.listen(tcp_ma)

    def bound_multiaddr(self, listener: socket.socket) -> Multiaddr:
        """The ``/ws`` multiaddr the listening socket is bound to."""
        return Multiaddr(f"{self._tcp.bound_multiaddr(listener)}/ws")

    def accepted(self, sock: socket.socket) -> WebSocketChannel:
        """Reactor: the server channel for an accepted socket (it waits for the
        client's upgrade request; the connection's handshake timeout bounds that)."""
        return WebSocketChannel(self._tcp.accepted(sock), "server")

    def remote_multiaddr(self, channel: WebSocketChannel, sockaddr: tuple) -> Multiaddr:
        """The peer's ``/ws`` multiaddr (identify's observed address)."""
        return Multiaddr(f"{sockaddr_to_multiaddr(channel.family, sockaddr)}/ws")
