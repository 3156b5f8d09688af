"""The node's buffer budget: bytes remote peers make it hold, per peer and in all.

Each connection bounds what it holds on its own (``Limits.max_connection_buffer``, the
output mark, ``Limits.max_negotiation_buffer``). A peer with several connections, or
many peers together, could still add up to more than the process should hold; the
budget adds those two scopes, as go-libp2p's resource manager has peer and system
scopes above its connection scope. Connections charge what they hold; while the peer
or the node is over its share, the connections that want to read more wait: they stop
reading their sockets (TCP pushes back on the senders) until usage falls below three
quarters of the bound, when they are told to go on.

Reactor thread only: no locks.
"""

from __future__ import annotations

from typing import Callable, Hashable

#: Usage must fall below this fraction of a bound before waiting readers resume, so a
#: connection does not flap between paused and reading on every small read.
RESUME_FRACTION = 0.75


class BufferBudget:
    """Counts bytes held per peer and in total; pauses and resumes readers."""

    def __init__(self, per_peer: int, total: int) -> None:
        if per_peer < 1 or total < 1:
            raise ValueError("buffer budgets must be positive")
        self.per_peer = per_peer
        self.total = total
        self.used = 0
        self._by_peer: dict[Hashable, int] = {}
        #: Readers waiting for room: callback -> the peer it reads for.
        self._waiting: dict[Callable[[], None], Hashable] = {}

    def used_by(self, peer: Hashable) -> int:
        """Bytes charged to ``peer`` now."""
        return self._by_peer.get(peer, 0)

    def charge(self, peer: Hashable, delta: int) -> None:
        """``peer``'s connections now hold ``delta`` more bytes (negative: fewer)."""
        if not delta:
            return
        used = self._by_peer.get(peer, 0) + delta
        if used < 0:
            raise ValueError(f"released more than was charged for {peer}")
        if used:
            self._by_peer[peer] = used
        else:
            self._by_peer.pop(peer, None)
        self.used += delta
        if delta < 0 and self._waiting:
            self._wake_those_with_room()

    def over(self, peer: Hashable) -> bool:
        """True when ``peer`` or the node holds at least its bound: read no more."""
        return self.used >= self.total or self._by_peer.get(peer, 0) >= self.per_peer

    def wait_for_room(self, peer: Hashable, resume: Callable[[], None]) -> None:
        """Call ``resume()`` once usage of ``peer`` and of the node fell well below
        their bounds. A reader registers once; registering again replaces it."""
        self._waiting[resume] = peer

    def cancel_wait(self, resume: Callable[[], None]) -> None:
        """Forget a waiting reader (its connection closed)."""
        self._waiting.pop(resume, None)

    @property
    def waiting(self) -> int:
        """How many readers wait for room."""
        return len(self._waiting)

    def _wake_those_with_room(self) -> None:
        if self.used >= self.total * RESUME_FRACTION:
            return
        peer_mark = self.per_peer * RESUME_FRACTION
        ready = [resume for resume, peer in self._waiting.items()
                 if self._by_peer.get(peer, 0) < peer_mark]
        for resume in ready:
            del self._waiting[resume]
        for resume in ready:
            resume()
