"""Serve libp2p streams with :mod:`socketserver`-style request handlers.

:class:`StreamServer` is to a libp2p protocol what ``socketserver.ThreadingTCPServer``
is to a TCP port: it accepts streams of one protocol and runs one handler per stream
on its own worker thread, so an existing ``socketserver.StreamRequestHandler`` (or
``http.server.BaseHTTPRequestHandler``) subclass works unchanged::

    class Echo(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as node:
        with StreamServer(node, "/echo/1.0.0", Echo, max_workers=8) as server:
            server.serve_forever()

What the handler sees:

* ``self.request`` is a :class:`StreamSocket`: the :class:`~.stream.Stream` with the
  socket methods ``socketserver``/``http.client`` code calls (``makefile`` with
  socket-like reference counting, ``setsockopt`` as a no-op, ``getpeername`` ...).
  Every other attribute is the stream's (``request.peer_id``, ``request.read`` ...);
  ``request.stream`` is the stream itself.
* ``self.client_address`` is ``(str(peer_id), 0)``: a ``(host, port)`` pair as TCP
  code expects (``http.server`` logs ``client_address[0]``). The remote's
  :class:`~.identity.PeerId` is ``self.request.peer_id``.
* ``self.server`` is the :class:`StreamServer`.

Worker bound: at most ``max_workers`` handlers run at once. While all workers are
busy the server takes no stream from the node's accept queue, so further streams wait
there, already negotiated (the opener's ``open_stream`` has returned and its writes
are buffered up to the muxer window), and are served in arrival order as workers
free up. The queue holds ``request_queue_size`` streams; when it is full the node
resets each new stream at once (the opener sees ``ConnectionResetError``) and counts
it in :attr:`StreamServer.dropped`. :meth:`StreamServer.server_close` resets the
streams still queued.
"""

from __future__ import annotations

import io
import itertools
import logging
import socket
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable

from .control import DEFAULT_ACCEPT_CAPACITY, IncomingStreams, StreamProtocol
from .stream import Stream, buffered_file, check_file_mode

if TYPE_CHECKING:
    from .identity import PeerId
    from .node import Node

__all__ = ["StreamServer", "StreamSocket", "peer_address"]

log = logging.getLogger(__name__)


def peer_address(peer_id: "PeerId") -> tuple[str, int]:
    """The ``(host, port)``-shaped address used for a peer: ``(str(peer_id), 0)``."""
    return (str(peer_id), 0)


class StreamSocket:
    """A :class:`~.stream.Stream` dressed as a connected socket for legacy code.

    Provides what ``socketserver``, ``http.server`` and ``http.client`` call on a
    socket. Like a socket, :meth:`close` only closes the stream once every file made
    by :meth:`makefile` is closed too (``http.client`` relies on that: it closes the
    connection while the response still reads from its file). Other attributes come
    from the stream.
    """

    def __init__(self, stream: Stream, address: tuple | None = None,
                 local_address: tuple | None = None) -> None:
        """Wrap ``stream``; ``address`` is what :meth:`getpeername` returns (default
        :func:`peer_address` of the stream's peer), ``local_address`` what
        :meth:`getsockname` returns (it raises ``OSError`` when None)."""
        self.stream = stream
        self._address = address if address is not None else peer_address(stream.peer_id)
        self._local_address = local_address
        self._lock = threading.Lock()
        self._io_refs = 0
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<StreamSocket{state} {self.stream!r}>"

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found here: read, write, readinto, peer_id, ...
        return getattr(self.stream, name)

    # -- what socket users call --------------------------------------------------------
    def settimeout(self, timeout: float | None) -> None:
        """The stream's :meth:`~.stream.Stream.settimeout`."""
        self.stream.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """The stream's timeout (``None``: blocking)."""
        return self.stream.gettimeout()

    def setblocking(self, flag: bool) -> None:
        """``True``: no timeout. ``False``: timeout 0 (``BlockingIOError`` at once)."""
        self.stream.settimeout(None if flag else 0.0)

    def setsockopt(self, *args: Any) -> None:
        """Accepted and ignored: there is no socket option to set on a stream."""

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> Any:
        """Zero (or ``buflen`` zero bytes) for every option: a stream has none."""
        return b"\0" * buflen if buflen else 0

    def getpeername(self) -> tuple:
        """The remote's ``(host, port)``-shaped address (see :func:`peer_address`)."""
        return self._address

    def getsockname(self) -> tuple:
        """The local address given to the constructor; ``OSError`` if none was."""
        if self._local_address is None:
            raise OSError("the local address of a stream is unknown")
        return self._local_address

    def fileno(self) -> int:
        """Raises ``io.UnsupportedOperation``: a muxed stream has no descriptor."""
        raise io.UnsupportedOperation("a libp2p stream has no file descriptor")

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes, ``b""`` at end of stream (``flags`` ignored)."""
        return self.stream.read(bufsize)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Fill up to ``nbytes`` (0: all) of ``buffer``; return the count."""
        return self.stream.recv_into(buffer, nbytes)

    def send(self, data: Any, flags: int = 0) -> int:
        """Like ``socket.send``: how many bytes were taken (see ``Stream.send``)."""
        return self.stream.send(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data``."""
        self.stream.write(data)

    def shutdown(self, how: int) -> None:
        """The stream's :meth:`~.stream.Stream.shutdown` (``SHUT_WR`` half-closes)."""
        self.stream.shutdown(how)

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file over the stream, as ``socket.makefile`` (modes r, w, rw, with b)."""
        reading, writing, _ = check_file_mode(mode)
        raw = _StreamSocketIO(self, ("r" if reading else "") + ("w" if writing else "") + "b")
        with self._lock:
            if self._closed:
                raise OSError("the stream socket is closed")
            self._io_refs += 1
        return buffered_file(raw, mode, buffering, encoding, errors, newline)

    def close(self) -> None:
        """Close the stream, or mark it to close when the last ``makefile`` file closes."""
        with self._lock:
            self._closed = True
            now = self._io_refs <= 0
        if now:
            self.stream.close()

    def _decref_socketios(self) -> None:
        with self._lock:
            self._io_refs -= 1
            now = self._closed and self._io_refs <= 0
        if now:
            self.stream.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`detach` was called."""
        return self._closed

    def detach(self) -> Stream:
        """Forget the stream without closing it and return it."""
        with self._lock:
            self._closed = True
            self._io_refs = 1 << 30  # our close() will never close it now
        return self.stream

    def __enter__(self) -> "StreamSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StreamSocketIO(io.RawIOBase):
    """The raw file under :meth:`StreamSocket.makefile` (like ``socket.SocketIO``)."""

    def __init__(self, sock: StreamSocket, mode: str) -> None:
        super().__init__()
        self._sock = sock
        self._stream = sock.stream
        self._reading = "r" in mode
        self._writing = "w" in mode
        self.mode = mode

    def readable(self) -> bool:
        self._checkClosed()
        return self._reading

    def writable(self) -> bool:
        self._checkClosed()
        return self._writing

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        if not self._reading:
            raise io.UnsupportedOperation("file not open for reading")
        return self._stream.readinto(buffer)

    def write(self, data: Any) -> int | None:
        self._checkClosed()
        if not self._writing:
            raise io.UnsupportedOperation("file not open for writing")
        try:
            return self._stream.send(data)  # with timeout 0: a short count, or None
        except BlockingIOError:
            return None

    @property
    def name(self) -> str:
        return repr(self._stream)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._sock._decref_socketios()


class StreamServer:
    """Accept streams of ``protocol`` on ``node``; handle each on a worker thread.

    ``RequestHandlerClass(request, client_address, server)`` is called per stream, as
    ``socketserver`` does (see the module docstring for what those are). At most
    ``max_workers`` handlers run at once; streams beyond that wait in the accept
    queue of ``request_queue_size`` streams (default 256), beyond which the node resets
    them and counts them in :attr:`dropped`.

    The usual ``socketserver.BaseServer`` hooks are here with the same meaning:
    ``verify_request``, ``process_request``, ``process_request_thread``,
    ``finish_request``, ``handle_error``, ``handle_timeout``, ``shutdown_request``,
    ``close_request``, ``service_actions``, ``server_activate``, ``server_close``.
    """

    #: Timeout of :meth:`handle_request` (``None``: wait for a stream).
    timeout: float | None = None
    #: Mark worker threads as daemons (then :meth:`server_close` does not wait for them).
    daemon_threads = False
    #: :meth:`server_close` waits for running handlers (up to :attr:`close_timeout`).
    block_on_close = True
    #: Seconds :meth:`server_close` lets running handlers finish before it resets their
    #: streams (``None``: wait as long as they take).
    close_timeout: float | None = 5.0
    #: Capacity of the node's accept queue for the protocol (like a listen backlog).
    request_queue_size = DEFAULT_ACCEPT_CAPACITY

    def __init__(self, node: "Node", protocol: str, RequestHandlerClass: Callable[..., Any],
                 bind_and_activate: bool = True, *, max_workers: int = 16,
                 request_queue_size: int | None = None) -> None:
        """Serve ``protocol`` streams of ``node`` with ``RequestHandlerClass``.

        As ``socketserver.TCPServer(address, handler, bind_and_activate)``, with a node
        and a protocol id for the address: with ``bind_and_activate`` the protocol is
        registered at once (``AlreadyRegistered`` if taken), else call
        :meth:`server_activate`. At most ``max_workers`` handlers run at once;
        ``request_queue_size`` overrides the accept queue's capacity (default
        :attr:`request_queue_size`, 256).
        """
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.node = node
        self.protocol = StreamProtocol(protocol)
        self.RequestHandlerClass = RequestHandlerClass
        self.max_workers = max_workers
        if request_queue_size is not None:
            self.request_queue_size = request_queue_size
        #: ``(str(node.peer_id), 0)``, shaped like a TCP server's address.
        self.server_address = peer_address(node.peer_id)
        self._control = node.new_control()
        self._incoming: IncomingStreams | None = None
        self._accepted: IncomingStreams | None = None
        self._serve_thread: threading.Thread | None = None
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._free_slots = max_workers
        self._workers: dict[threading.Thread, StreamSocket] = {}
        self._worker_count = 0
        self._slot_handed_off = False
        self._shutdown_request = False
        self._serving = False
        self._is_shut_down = threading.Event()
        self._is_shut_down.set()
        self._closed = False
        self._closing = False
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.protocol} on {self.node.peer_id} "
                f"workers={self.active_workers}/{self.max_workers}>")

    # -- lifecycle ---------------------------------------------------------------------
    def server_bind(self) -> None:
        """Hook kept for ``socketserver`` subclasses; nothing to bind for a stream."""

    def server_activate(self) -> None:
        """Start accepting streams of :attr:`protocol` (``AlreadyRegistered`` if taken)."""
        if self._incoming is None:
            self._incoming = self._control.accept(self.protocol,
                                                  capacity=self.request_queue_size)
            self._accepted = self._incoming

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handle streams until :meth:`shutdown` or :meth:`server_close`.

        Checks for a shutdown request every ``poll_interval`` seconds, and calls
        :meth:`service_actions` each round.
        """
        self._is_shut_down.clear()
        self._serve_thread = threading.current_thread()
        self._serving = True
        try:
            while not self._shutdown_request and not self._closed:
                if not self._acquire_slot(poll_interval):
                    self.service_actions()
                    continue
                if self._shutdown_request:
                    self._release_slot()
                    break
                try:
                    request, client_address = self.get_request(poll_interval)
                except TimeoutError:
                    self._release_slot()
                    self.service_actions()
                    continue
                except EOFError:  # server_close() (or the node) closed the queue
                    self._release_slot()
                    break
                self._handle_with_slot(request, client_address)
                self.service_actions()
        finally:
            self._shutdown_request = False
            self._serving = False
            self._is_shut_down.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned.

        Call it from another thread than the one running :meth:`serve_forever` (a
        handler may call it: handlers run on worker threads). Running handlers go on;
        :meth:`server_close` waits for them. Returns at once if not serving; the
        request then stands, so a :meth:`serve_forever` that was about to start on
        another thread returns at once instead of running on.
        """
        self._shutdown_request = True
        with self._lock:
            self._slot_freed.notify_all()
        if self._serving and threading.current_thread() is not self._serve_thread:
            self._is_shut_down.wait()

    def handle_request(self) -> None:
        """Wait for one stream (up to :attr:`timeout`), then hand it to a worker.

        Calls :meth:`handle_timeout` when no stream came in time.
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if not self._acquire_slot(self.timeout):
            self.handle_timeout()
            return
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            request, client_address = self.get_request(remaining)
        except TimeoutError:
            self._release_slot()
            self.handle_timeout()
            return
        except EOFError:
            self._release_slot()
            return
        self._handle_with_slot(request, client_address)

    def server_close(self) -> None:
        """Stop accepting, reset queued streams, and wait for running handlers.

        With :attr:`block_on_close` (the default) it waits up to :attr:`close_timeout`
        seconds for handlers to return, then resets the streams of those still
        running (their reads and writes raise ``ConnectionResetError``) and waits for
        them to end. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            incoming, self._incoming = self._incoming, None
            self._slot_freed.notify_all()
        if incoming is not None:
            incoming.close()
        if self._serving and threading.current_thread() is not self._serve_thread:
            # serve_forever returns within its poll_interval; let it hand over the
            # stream it may hold, so that no worker starts after the join below.
            self._is_shut_down.wait(self.close_timeout)
        if self.block_on_close:
            self._join_workers()

    def _join_workers(self) -> None:
        current = threading.current_thread()
        deadline = None if self.close_timeout is None else \
            time.monotonic() + self.close_timeout
        for thread in self._worker_threads():
            if thread is current or thread.daemon:
                continue
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closing = True
            stuck = [(t, r) for t, r in self._workers.items()
                     if t is not current and not t.daemon]
        if not stuck:
            return
        log.info("%s: resetting %d stream(s) whose handlers did not finish within %s s",
                 self, len(stuck), self.close_timeout)
        for _thread, request in stuck:
            request.stream.reset()
        for thread, _request in stuck:
            thread.join(5.0)
            if thread.is_alive():
                log.warning("%s: handler thread %s still running after its stream "
                            "was reset", self, thread.name)

    def _worker_threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._workers)

    def fileno(self) -> int:
        """Raises ``io.UnsupportedOperation``: ``selectors`` cannot wait on a server."""
        raise io.UnsupportedOperation("a StreamServer has no file descriptor")

    def __enter__(self) -> "StreamServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.server_close()

    # -- state -------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Streams the node reset because the accept queue was full."""
        accepted = self._accepted
        return accepted.dropped if accepted is not None else 0

    @property
    def active_workers(self) -> int:
        """Handlers running now (never more than :attr:`max_workers`)."""
        with self._lock:
            return self._worker_count

    @property
    def closed(self) -> bool:
        """True once :meth:`server_close` ran."""
        return self._closed

    # -- socketserver hooks --------------------------------------------------------------
    def get_request(self, timeout: float | None = None) -> tuple[StreamSocket, tuple]:
        """Take the next stream: ``(StreamSocket, (str(peer_id), 0))``.

        Raises ``TimeoutError`` when none comes within ``timeout``, ``EOFError`` once
        the server is closed.
        """
        incoming = self._incoming
        if incoming is None:
            raise EOFError("the server is closed")
        peer, stream = incoming.get(timeout)
        address = peer_address(peer)
        return StreamSocket(stream, address, self.server_address), address

    def verify_request(self, request: StreamSocket, client_address: tuple) -> bool:
        """Return ``False`` to refuse the stream (it is then closed). Default ``True``."""
        return True

    def process_request(self, request: StreamSocket, client_address: tuple) -> None:
        """Start a worker thread running :meth:`process_request_thread`."""
        thread = threading.Thread(target=self._worker, args=(request, client_address),
                                  name=f"StreamServer-{self.protocol}-{next(self._names)}",
                                  daemon=self.daemon_threads)
        with self._lock:
            self._worker_count += 1
            self._workers[thread] = request
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._workers.pop(thread, None)
                self._worker_count -= 1
            raise
        self._slot_handed_off = True

    def process_request_thread(self, request: StreamSocket, client_address: tuple) -> None:
        """Run the handler, then :meth:`shutdown_request`; errors go to :meth:`handle_error`."""
        try:
            self.finish_request(request, client_address)
        except Exception as exc:
            if self._closing and isinstance(exc, OSError):
                log.debug("handler for %s ended by server_close: %r", client_address, exc)
            else:
                self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def finish_request(self, request: StreamSocket, client_address: tuple) -> None:
        """Instantiate ``RequestHandlerClass``, which handles the request."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: StreamSocket) -> None:
        """Half-close the stream (FIN after pending data), then :meth:`close_request`."""
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_request(request)

    def close_request(self, request: StreamSocket) -> None:
        """Close the request's stream (once its ``makefile`` files are closed too)."""
        request.close()

    def handle_error(self, request: StreamSocket, client_address: tuple) -> None:
        """Print the traceback to stderr (as ``socketserver`` does) and go on."""
        print("-" * 40, file=sys.stderr)
        print("Exception occurred during processing of request from", client_address,
              file=sys.stderr)
        traceback.print_exc()
        print("-" * 40, file=sys.stderr)

    def handle_timeout(self) -> None:
        """Called by :meth:`handle_request` when no stream came within :attr:`timeout`."""

    def service_actions(self) -> None:
        """Called once per :meth:`serve_forever` round; override for periodic work."""

    # -- internals ---------------------------------------------------------------------
    def _handle_with_slot(self, request: StreamSocket, client_address: tuple) -> None:
        """Like ``socketserver``'s ``_handle_request_noblock``; owns one worker slot."""
        self._slot_handed_off = False
        try:
            if self.verify_request(request, client_address):
                try:
                    self.process_request(request, client_address)
                except Exception:
                    self.handle_error(request, client_address)
                    self.shutdown_request(request)
                except BaseException:
                    self.shutdown_request(request)
                    raise
            else:
                self.shutdown_request(request)
        finally:
            if not self._slot_handed_off:
                self._release_slot()
            self._slot_handed_off = False

    def _acquire_slot(self, timeout: float | None) -> bool:
        """Wait for a free worker slot; False on timeout, shutdown or close."""
        with self._lock:
            self._slot_freed.wait_for(
                lambda: self._free_slots > 0 or self._shutdown_request or self._closed,
                timeout)
            if self._free_slots > 0 and not self._closed:
                self._free_slots -= 1
                return True
            return False

    def _release_slot(self) -> None:
        with self._lock:
            self._free_slots += 1
            assert self._free_slots <= self.max_workers
            self._slot_freed.notify()

    def _worker(self, request: StreamSocket, client_address: tuple) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._workers.pop(threading.current_thread(), None)
                self._worker_count -= 1
                self._free_slots += 1
                self._slot_freed.notify()
