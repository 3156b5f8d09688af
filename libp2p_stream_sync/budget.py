"""The node's buffer budget: bytes remote peers make it hold, per peer and in all.

Each connection bounds what it holds on its own (``Limits.max_connection_buffer``, the
output mark, ``Limits.max_negotiation_buffer``). A peer with several connections, or
many peers together, could still add up to more than the process should hold; the
budget adds those two scopes, as go-libp2p's resource manager has peer and system
scopes above its connection scope. Connections charge what they hold. A peer's
connections stop reading their sockets (TCP pushes back on the senders) while:

* the peer holds its bound (``per_peer``), or
* the node holds its bound (``total``), or
* the node holds three quarters of its bound and the peer at least a fair share of
  those three quarters (divided among the peers holding data): greedy peers stop
  there and leave the last quarter to peers holding little, so they cannot starve
  a frugal one.

They are told to go on once the same rules, with every bound at three quarters, no
longer hold. A reader that has waited too long (the connection's congestion timeout)
calls :meth:`BufferBudget.shed`: the peers holding the most beyond half a fair share
give up their largest streams, whichever connection they came on.

Reactor thread only: no locks.
"""

from __future__ import annotations

from typing import Callable, Hashable

#: Usage must fall below this fraction of a bound before waiting readers resume, so a
#: connection does not flap between paused and reading on every small read.
RESUME_FRACTION = 0.75
#: Above this fraction of the node's bound, peers holding a fair share of it stop.
SHARED_FRACTION = 0.75


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
        #: Per peer, its connections' ``shed(keep)`` callbacks: reset the largest
        #: holders until at most ``keep`` bytes are held.
        self._shedders: dict[Hashable, set[Callable[[int], None]]] = {}

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
        """True when ``peer`` must read no more (see the module docstring)."""
        return self._over(peer, 1.0)

    def fair_share(self) -> float:
        """The shared part of the node's bound divided among the peers holding data."""
        return self.total * SHARED_FRACTION / max(1, len(self._by_peer))

    def _over(self, peer: Hashable, scale: float) -> bool:
        mine = self._by_peer.get(peer, 0)
        if mine >= self.per_peer * scale or self.used >= self.total * scale:
            return True
        return (self.used >= self.total * SHARED_FRACTION * scale
                and mine >= self.fair_share() * scale)

    def wait_for_room(self, peer: Hashable, resume: Callable[[], None]) -> None:
        """Call ``resume()`` once usage of ``peer`` and of the node fell well below
        their bounds. A reader registers once; registering again replaces it."""
        self._waiting[resume] = peer

    def cancel_wait(self, resume: Callable[[], None]) -> None:
        """Forget a waiting reader (its connection closed)."""
        self._waiting.pop(resume, None)

    def attach(self, peer: Hashable, shed: Callable[[int], None]) -> None:
        """A connection of ``peer`` holds data; :meth:`shed` may call ``shed(keep)``."""
        self._shedders.setdefault(peer, set()).add(shed)

    def detach(self, peer: Hashable, shed: Callable[[int], None]) -> None:
        """The connection is gone."""
        sheds = self._shedders.get(peer)
        if sheds is not None:
            sheds.discard(shed)
            if not sheds:
                del self._shedders[peer]

    def shed(self) -> None:
        """Readers have waited too long: the peers holding more than half a fair share
        (or more than their own bound) give up their largest streams down to it."""
        keep = self.fair_share() / 2
        for peer, used in sorted(self._by_peer.items(), key=lambda item: -item[1]):
            if used <= keep and used < self.per_peer:
                break
            sheds = list(self._shedders.get(peer, ()))
            for shed in sheds:
                shed(int(min(keep, self.per_peer * RESUME_FRACTION) / len(sheds)))

    @property
    def waiting(self) -> int:
        """How many readers wait for room."""
        return len(self._waiting)

    def _wake_those_with_room(self) -> None:
        ready = [resume for resume, peer in self._waiting.items()
                 if not self._over(peer, RESUME_FRACTION)]
        for resume in ready:
            del self._waiting[resume]
        for resume in ready:
            resume()
