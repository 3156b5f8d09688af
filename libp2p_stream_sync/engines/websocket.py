"""WebSocket (RFC 6455) as a byte stream, sans-IO, on the optional ``wsproto`` package.

:class:`WebSocketEngine` turns one side of a WebSocket connection into bytes in, bytes
out: the HTTP/1.1 upgrade (client: ``GET`` with the given ``Host``; server: accepts the
upgrade on any path, answers anything else with ``400``), then application bytes as binary
messages (one unfragmented message per chunk of at most ``max_frame_size`` bytes). On
receipt, binary messages, fragmented or not, are just bytes of the stream; pings are
answered, and the peer's close frame is the end of the stream, answered with a close frame.
A text message is refused (close code 1003): libp2p peers send binary only, and refusing
keeps the application bytes of a read no more than the bytes read (a UTF-8 decoder would
hold some back), which the channel relies on.

Bounds (a peer cannot make the engine hold more): the HTTP head of the request or
response, ``max_head_size`` (default 8 KiB, larger: ``431`` / error); one incoming message,
``max_message_size`` (default 1 MiB, larger: close code 1009). Data is passed on as it
arrives, never buffered per message; an unanswered ping is kept as one payload (the most
recent one, which RFC 6455 section 5.5.3 allows), so its pong waits without growing.

``wsproto`` is imported only when an engine is made: without it, the package still imports
and :func:`load_wsproto` raises ``ImportError`` naming the extra to install.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from ..errors import ProtocolError

MISSING_WSPROTO = ("WebSocket (/ws) support needs the optional wsproto package: "
                   "pip install 'libp2p_stream_sync[ws]'")

#: Largest HTTP head (request or response line plus headers) accepted.
MAX_HEAD_SIZE = 8 * 1024
#: Largest incoming WebSocket message (libp2p peers send one noise frame, <= 64 KiB, each).
MAX_MESSAGE_SIZE = 1024 * 1024
#: Payload of each binary message we send (one frame each).
MAX_FRAME_SIZE = 64 * 1024

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005
CLOSE_TOO_BIG = 1009
#: Close codes that end the stream cleanly (as go-libp2p reads them); others are errors.
CLEAN_CLOSE_CODES = frozenset({CLOSE_NORMAL, CLOSE_NO_STATUS})

# Where an HTTP/1.1 head ends: the first empty line (h11 accepts bare "\n" line ends too).
_HEAD_END = re.compile(b"\n\r?\n")
_REJECT_BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n")
_REJECT_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")


class WebSocketError(ProtocolError):
    """The peer broke the HTTP upgrade or RFC 6455 framing rules (or a size bound)."""


def load_wsproto() -> ModuleType:
    """Import ``wsproto``; raise ``ImportError`` naming the extra to install without it."""
    try:
        import wsproto
        import wsproto.events
        import wsproto.utilities
    except ImportError as exc:
        raise ImportError(MISSING_WSPROTO) from exc
    return wsproto


class WebSocketEngine:
    """One side of a WebSocket connection carrying a byte stream (sans-IO).

    ``client=True`` sends the upgrade request at once (``host`` is the ``Host`` header,
    e.g. ``"127.0.0.1:4001"``; ``path`` the request target). Use :meth:`receive_data`
    for bytes from the socket (returns application bytes), :meth:`send` for
    application bytes, :meth:`data_to_send` for bytes to write. Bytes sent before the
    upgrade completes are held and framed once it does.
    """

    def __init__(self, *, client: bool, host: str | None = None, path: str = "/",
                 max_head_size: int = MAX_HEAD_SIZE,
                 max_message_size: int = MAX_MESSAGE_SIZE,
                 max_frame_size: int = MAX_FRAME_SIZE) -> None:
        """Raises ``ImportError`` (naming the extra) when ``wsproto`` is missing, and
        ``ValueError`` for a client without ``host``."""
        wsproto = load_wsproto()
        self._events = wsproto.events
        self._remote_error = wsproto.utilities.RemoteProtocolError
        self._local_error = wsproto.utilities.LocalProtocolError
        self._state = wsproto.ConnectionState
        self.client = client
        self._max_head_size = max_head_size
        self._max_message_size = max_message_size
        self._max_frame_size = max_frame_size
        self._ws: Any = wsproto.WSConnection(
            wsproto.ConnectionType.CLIENT if client else wsproto.ConnectionType.SERVER)
        self._out: list[bytes] = []
        self._head = bytearray()
        self._early = bytearray()     # application bytes sent before the upgrade completed
        self._owed_pong: bytes | None = None
        self._message_len = 0
        self._close_wanted = False
        self._failed = False
        #: The upgrade is complete; frames flow.
        self.is_open = False
        #: The peer's close frame arrived: the stream has ended.
        self.eof = False
        #: The code and reason of the peer's close frame (once :attr:`eof`).
        self.close_code: int | None = None
        self.close_reason = ""
        if client:
            if not host:
                raise ValueError("a WebSocket client needs the Host header value")
            self._out.append(self._ws.send(self._events.Request(host=host, target=path)))

    # -- state -------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """:meth:`send` may be called: no close frame sent or received, no error."""
        return not (self._failed or self._close_wanted or self.eof)

    @property
    def closed(self) -> bool:
        """Both close frames have been exchanged (the TCP connection may end)."""
        return self._ws.state is self._state.CLOSED and self.is_open

    @property
    def buffered(self) -> int:
        """Application bytes held until the upgrade completes."""
        return len(self._early)

    @property
    def has_output(self) -> bool:
        """:meth:`data_to_send` would return bytes."""
        return bool(self._out) or self._owed_pong is not None

    # -- output ------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue application bytes (held until the upgrade completes).

        Raises ``ValueError`` when the stream is closed for writing (see :attr:`writable`).
        """
        if not self.writable:
            raise ValueError("the WebSocket is closed for writing")
        if not self.is_open:
            self._early += data
            return
        self._frame(data)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Queue a close frame after the bytes already sent (after the upgrade, if it is
        still under way). Nothing may be sent afterwards; idempotent."""
        if self._close_wanted or self._failed:
            return
        self._close_wanted = True
        if self.is_open:
            self._send_close(code, reason)

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket, possibly ``b""``."""
        if self._owed_pong is not None and self._ws.state is self._state.OPEN:
            self._out.append(self._ws.send(self._events.Pong(payload=self._owed_pong)))
        self._owed_pong = None
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _frame(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        step = self._max_frame_size
        for start in range(0, len(view), step):
            message = self._events.BytesMessage(data=view[start:start + step])
            self._out.append(self._ws.send(message))

    # -- input -------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed bytes from the socket; return the application bytes they complete.

        Raises :class:`WebSocketError` when the peer broke a rule; the rejection (an HTTP
        error or a close frame) is then in :meth:`data_to_send`. Input after the close
        handshake or an error is ignored.
        """
        if self._failed or self.eof or not data:
            return b""
        if not self.is_open:
            data = self._receive_head(data)
            if not data:
                return b""
        self._ws.receive_data(data)  # wsproto copies what it keeps
        return self._process_events()

    def _receive_head(self, data: bytes | bytearray | memoryview) -> bytes:
        """Collect the HTTP head; once complete, handle it and return the bytes after it."""
        start = max(0, len(self._head) - 2)
        self._head += data
        match = _HEAD_END.search(self._head, start)
        end = match.end() if match else len(self._head)
        if end > self._max_head_size:
            self._fail_handshake(_REJECT_TOO_LARGE,
                                 f"HTTP head larger than {self._max_head_size} bytes")
        if match is None:
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end:])
        self._head = bytearray()
        try:
            self._ws.receive_data(head)
            events = list(self._ws.events())
        except (self._remote_error, self._local_error, ValueError) as exc:
            # ValueError: wsproto decodes Host (idna) and the target (ascii) unchecked.
            self._fail_handshake(_REJECT_BAD_REQUEST, f"bad upgrade: {exc}")
        for event in events:
            self._handshake_event(event)
        if not self.is_open:
            self._fail_handshake(_REJECT_BAD_REQUEST, "incomplete HTTP upgrade")
        return rest

    def _handshake_event(self, event: object) -> None:
        ev = self._events
        if isinstance(event, ev.Request):  # server: any path will do
            self._out.append(self._ws.send(ev.AcceptConnection()))
            self._opened()
        elif isinstance(event, ev.AcceptConnection):  # client
            self._opened()
        elif isinstance(event, ev.RejectConnection):
            self._fail_handshake(b"", f"the server refused the upgrade: HTTP "
                                      f"{event.status_code}")

    def _opened(self) -> None:
        self.is_open = True
        early, self._early = self._early, bytearray()
        if early:
            self._frame(early)
        if self._close_wanted:
            self._close_wanted = False
            self.close()

    def _fail_handshake(self, response: bytes, reason: str) -> None:
        self._failed = True
        self._head = bytearray()
        self._early = bytearray()
        if not self.client:
            self._out.append(response)
        raise WebSocketError(reason)

    def _process_events(self) -> bytes:
        ev = self._events
        chunks = []
        for event in self._ws.events():
            if isinstance(event, ev.BytesMessage):
                chunks.append(event.data)
                self._count_message(len(event.data), event.message_finished)
            elif isinstance(event, ev.TextMessage):
                self._fail(CLOSE_UNSUPPORTED_DATA, "text message (libp2p sends binary)")
            elif isinstance(event, ev.Ping):
                self._owed_pong = bytes(event.payload)
            elif isinstance(event, ev.CloseConnection):
                self._close_event(event)
        return b"".join(chunks)

    def _count_message(self, size: int, finished: bool) -> None:
        self._message_len += size
        if self._message_len > self._max_message_size:
            self._fail(CLOSE_TOO_BIG, f"message larger than {self._max_message_size} bytes")
        if finished:
            self._message_len = 0

    def _close_event(self, event: Any) -> None:
        state = self._ws.state
        if state is self._state.OPEN or state is self._state.LOCAL_CLOSING:
            # wsproto reports a frame it could not parse as a close it wants to send.
            self._fail(int(event.code), f"bad frame: {event.reason}")
        self.eof = True
        self.close_code = int(event.code)
        self.close_reason = event.reason or ""
        self._owed_pong = None
        if state is self._state.REMOTE_CLOSING:
            self._out.append(self._ws.send(event.response()))

    def _fail(self, code: int, reason: str) -> None:
        self._failed = True
        self._owed_pong = None
        self._send_close(code, reason)
        raise WebSocketError(reason)

    def _send_close(self, code: int, reason: str) -> None:
        if self._ws.state is self._state.OPEN:
            close = self._events.CloseConnection(code=code, reason=reason)
            self._out.append(self._ws.send(close))
