"""HTTP/1.1 over libp2p streams (protocol id ``/http/1.1``), with the standard library.

The libp2p HTTP spec (github.com/libp2p/specs, ``http/README.md``, "Using HTTP
semantics over stream transports") runs plain HTTP/1.1 messages over a stream
negotiated as ``/http/1.1``: the client sends a request, reads the response, then
closes the stream; clients should not pipeline, and servers should answer with
``Connection: close``.

Server side, :class:`HTTPStreamServer` serves any unmodified
``http.server.BaseHTTPRequestHandler`` subclass (``SimpleHTTPRequestHandler`` too)::

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="www")
    with HTTPStreamServer(node, handler) as server:
        server.serve_forever()

Client side, :class:`HTTPStreamConnection` is an ``http.client.HTTPConnection`` whose
connection is a libp2p stream, so ``request()``/``getresponse()`` work as usual,
keep-alive included (a new stream is opened whenever the server closed the last one);
:func:`request` is the one-shot form that does what the spec asks of a client.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import socket
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

from .errors import OpenStreamError
from .identity import PeerId
from .server import StreamServer, StreamSocket

if TYPE_CHECKING:
    from multiaddr import Multiaddr

    from .control import Control
    from .node import Node

__all__ = ["HTTP_PROTOCOL", "HTTPResult", "HTTPStreamConnection", "HTTPStreamServer",
           "directory_handler", "request"]

#: The protocol id the libp2p HTTP spec uses for HTTP/1.1 over a stream.
HTTP_PROTOCOL = "/http/1.1"


class HTTPStreamServer(StreamServer):
    """``http.server.HTTPServer`` for libp2p: a :class:`StreamServer` on ``/http/1.1``.

    Provides the attributes request handlers read from their server:
    ``server_name`` (our peer id as a string) and ``server_port`` (``0``).
    ``client_address`` is ``(str(peer_id), 0)``, so request logs name the peer.
    """

    def __init__(self, node: "Node", RequestHandlerClass: Callable[..., Any],
                 protocol: str = HTTP_PROTOCOL, bind_and_activate: bool = True,
                 **kwargs: Any) -> None:
        """As :class:`StreamServer`, on ``protocol`` (default ``/http/1.1``); ``kwargs``
        (``max_workers``, ``request_queue_size``) go to :class:`StreamServer`."""
        super().__init__(node, protocol, RequestHandlerClass, bind_and_activate, **kwargs)

    def server_bind(self) -> None:
        """Set ``server_name``/``server_port`` as ``HTTPServer.server_bind`` does."""
        self.server_name = str(self.node.peer_id)
        self.server_port = 0


def _host_for(peer: "PeerId | str | Multiaddr") -> str:
    """The Host header value for ``peer``: its peer id string."""
    if isinstance(peer, PeerId):
        return str(peer)
    text = str(peer)
    if "/p2p/" in text:
        return text.rsplit("/p2p/", 1)[1].split("/", 1)[0]
    return text


class HTTPStreamConnection(http.client.HTTPConnection):
    """An ``http.client.HTTPConnection`` over a libp2p stream to ``peer``.

    ``peer`` is a :class:`PeerId` (the node must know an address or be connected) or
    a multiaddr ending in ``/p2p/<id>``. ``timeout`` bounds opening the stream and
    each blocking read or write on it. The ``Host`` header defaults to the peer id.

    :meth:`connect` opens a stream for ``protocol``; if that fails it raises
    ``ConnectionError`` (an ``OSError``, as ``http.client`` callers expect) whose
    ``__cause__`` is the library's :class:`OpenStreamError`. ``set_tunnel`` is not
    supported.
    """

    def __init__(self, control: "Control", peer: "PeerId | str | Multiaddr",
                 protocol: str = HTTP_PROTOCOL, timeout: float | None = 10.0, *,
                 host: str | None = None, blocksize: int = 8192) -> None:
        """Nothing is opened yet: the first request (or :meth:`connect`) opens the stream.

        ``control`` opens it, to ``peer`` for ``protocol``; ``host`` overrides the
        ``Host`` header; ``timeout`` and ``blocksize`` as in ``http.client``.
        """
        super().__init__(host or _host_for(peer), timeout=timeout, blocksize=blocksize)
        self.control = control
        self.peer = peer
        self.protocol = protocol

    def connect(self) -> None:
        """Open the stream (``ConnectionError`` on failure, see the class docstring)."""
        if self._tunnel_host:
            raise http.client.HTTPException("CONNECT tunnels are not supported over libp2p")
        default = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]
        open_timeout = 10.0 if self.timeout is None or self.timeout is default \
            else self.timeout
        try:
            stream = self.control.open_stream(self.peer, self.protocol, timeout=open_timeout)
        except OpenStreamError as exc:
            raise ConnectionError(f"cannot open an {self.protocol} stream to "
                                  f"{self.host}: {exc}") from exc
        stream.settimeout(open_timeout if self.timeout is not None else None)
        self.sock = StreamSocket(stream)


class HTTPResult(NamedTuple):
    """What :func:`request` returns."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(control: "Control", peer: "PeerId | str | Multiaddr", method: str, path: str,
            body: "bytes | str | None" = None, headers: Mapping[str, str] | None = None, *,
            protocol: str = HTTP_PROTOCOL, timeout: float = 10.0) -> HTTPResult:
    """Send one HTTP request on a new stream and return ``(status, headers, body)``.

    As the libp2p HTTP spec asks of clients: one request per stream, sent with
    ``Connection: close``; the stream is half-closed once the request is out and
    closed after the response is read. ``headers`` is an ``http.client.HTTPMessage``
    (case-insensitive lookups).
    """
    hdrs = dict(headers or {})
    if not any(k.lower() == "connection" for k in hdrs):
        hdrs["Connection"] = "close"
    conn = HTTPStreamConnection(control, peer, protocol, timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        if conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may have answered and closed already
        response = conn.getresponse()
        try:
            data = response.read()
        finally:
            response.close()
        return HTTPResult(response.status, response.headers, data)
    finally:
        conn.close()


def directory_handler(directory: str,
                      handler: type = http.server.SimpleHTTPRequestHandler) -> Callable:
    """``SimpleHTTPRequestHandler`` (or ``handler``) serving files from ``directory``."""
    return functools.partial(handler, directory=directory)
