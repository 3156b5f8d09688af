"""Moving bytes over one byte channel (a TCP socket, a WebSocket channel).

:class:`ChannelIO` does the mechanical part of a ``Connection``'s I/O: reads sized for
the secure transport's receive buffer, the queue of output waiting for the channel
and sending it with ``sendmsg``, and the events registered with the reactor. What to
read and when is the connection's. Reactor thread only.
"""

from __future__ import annotations

import collections
import select
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .interfaces import ByteChannel

#: Reads once the connection is secure go straight into the Noise receive buffer,
#: sized between these bounds: it doubles while reads fill it, halves while they
#: use little of it, and is dropped when drained, so idle connections hold none.
RECV_BUFFER = 256 * 1024
_MIN_RECV_BUFFER = 8 * 1024
_MAX_SENDMSG_BUFFERS = 64

#: poll() flag for "the peer closed its side", seen even with unread data before it.
_POLL_HUNG_UP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


class ChannelIO:
    """One channel's reads, output queue and reactor registration."""

    __slots__ = ("channel_output", "_interest", "max_recv_size", "queue", "queued", "_reactor",
                 "recv_size", "sent", "sock")

    def __init__(self, sock: "ByteChannel", reactor: Any) -> None:
        self.sock = sock
        self._reactor = reactor
        #: The channel may hold output of its own (framing, pongs): it has
        #: ``wants_write`` and ``flush()``. A plain socket holds none.
        self.channel_output = not isinstance(sock, socket.socket)
        #: How much the next read asks for, and its upper bound.
        self.recv_size = _MIN_RECV_BUFFER
        self.max_recv_size = RECV_BUFFER
        #: Output waiting for the channel, and its length in bytes.
        #: (An empty tuple while nothing waits: an idle connection keeps no deque.)
        self.queue: collections.deque[Any] | tuple[()] = ()
        self.queued = 0
        #: Bytes the channel took since the start.
        self.sent = 0
        self._interest = 0

    def recv(self, transport: Any) -> int:
        """Read up to :attr:`recv_size` bytes: into the secure ``transport``'s buffer
        once there is one, else into the reactor's scratch buffer. Raises what
        ``recv_into`` raises."""
        size = self.recv_size
        buffer = transport.get_buffer(size) if transport else self._reactor.scratch
        try:
            return self.sock.recv_into(buffer, size)
        finally:
            if transport:
                buffer.release()

    def adapt(self, n: int, transport: Any) -> None:
        """A read of ``n`` bytes was handled: size the next one."""
        size = self.recv_size
        if n >= size:
            self.recv_size = min(size * 2, self.max_recv_size)
        else:
            if n < size >> 3 and size > _MIN_RECV_BUFFER:
                self.recv_size = size >> 1
            transport.trim(self.recv_size)  # drained: keep no big idle buffer

    def append(self, data: Any) -> None:
        """Queue ``data`` for the channel."""
        if not self.queue:
            self.queue = collections.deque()
        self.queue.append(data)
        self.queued += len(data)

    def send(self) -> None:
        """Send queued output until the channel takes no more; raises ``OSError``
        (other than ``BlockingIOError``) if the channel failed."""
        wire = self.queue
        sock = self.sock
        while wire:
            buffers = list(wire) if len(wire) <= _MAX_SENDMSG_BUFFERS else \
                [wire[i] for i in range(_MAX_SENDMSG_BUFFERS)]
            try:
                sent = sock.sendmsg(buffers)
            except (BlockingIOError, InterruptedError):
                break
            self.queued -= sent
            self.sent += sent
            while sent:
                head = wire[0]
                if len(head) <= sent:
                    sent -= len(head)
                    wire.popleft()
                else:
                    wire[0] = memoryview(head)[sent:]
                    sent = 0
        if not wire:
            self.queue = ()

    def register(self, interest: int, handler: Any) -> None:
        """Have the reactor watch the channel for ``interest`` (none: unregister)."""
        if interest == self._interest:
            return
        if not interest:
            self._reactor.unregister(self.sock)
        elif not self._interest:
            self._reactor.register(self.sock, interest, handler)
        else:
            self._reactor.modify(self.sock, interest, handler)
        self._interest = interest

    def hung_up(self) -> bool:
        """Whether the peer closed (or reset) the channel, without reading from it."""
        poller = select.poll()
        poller.register(self.sock, _POLL_HUNG_UP)
        return bool(poller.poll(0))

    def close(self) -> None:
        """Unregister and close the channel; drop the queued output."""
        self._reactor.unregister(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        self.queue = ()
