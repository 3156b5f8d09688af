"""A circuit relay's bookkeeping, sans-IO: reservations and bounded counts.

:class:`Reservations` decides RESERVE requests (total, per IP address, accepted
requests per peer per TTL) and answers CONNECT's "does the target hold a
reservation"; :class:`BoundedCounts` counts circuits or hop streams per peer and in
all. Times are passed in (monotonic seconds), so the relay's reactor drives them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Hashable


@dataclass
class _Held:
    ip: str | None
    until: float


@dataclass
class Reservations:
    """Reservations by peer: at most ``max_total``, ``max_per_ip`` from one IP, and at
    most ``max_per_peer`` accepted requests of one peer within ``ttl`` (a refresh is one,
    and replaces the peer's reservation)."""

    ttl: float
    max_total: int
    max_per_peer: int
    max_per_ip: int
    _held: dict[Hashable, _Held] = field(default_factory=dict)
    _per_ip: dict[str, int] = field(default_factory=dict)
    _accepted: dict[Hashable, deque] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._held)

    def reserve(self, peer: Hashable, ip: str | None, now: float) -> float | None:
        """Grant or refresh ``peer``'s reservation; the time it ends, or None when
        refused (over one of the bounds)."""
        self.expire(now)
        history = self._accepted.setdefault(peer, deque())
        while history and history[0] <= now - self.ttl:
            history.popleft()
        current = self._held.get(peer)
        moves_ip = current is None or current.ip != ip
        refused = (len(history) >= self.max_per_peer
                   or (current is None and len(self._held) >= self.max_total)
                   or (moves_ip and ip is not None
                       and self._per_ip.get(ip, 0) >= self.max_per_ip))
        if refused:
            if not history:
                del self._accepted[peer]
            return None
        history.append(now)
        if current is not None:
            self._forget_ip(current.ip)
        self._held[peer] = _Held(ip, now + self.ttl)
        if ip is not None:
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return now + self.ttl

    def holds(self, peer: Hashable, now: float) -> bool:
        """Whether ``peer`` has a reservation that has not ended."""
        held = self._held.get(peer)
        return held is not None and held.until > now

    def drop(self, peer: Hashable) -> bool:
        """End ``peer``'s reservation (its connection is gone); True if it had one."""
        held = self._held.pop(peer, None)
        if held is None:
            return False
        self._forget_ip(held.ip)
        return True

    def expire(self, now: float) -> list[Hashable]:
        """Drop the reservations that ended by ``now`` (and request histories older than
        the TTL); the peers that lost one."""
        gone = [peer for peer, held in self._held.items() if held.until <= now]
        for peer in gone:
            self.drop(peer)
        stale = [peer for peer, history in self._accepted.items()
                 if not history or history[-1] <= now - self.ttl]
        for peer in stale:
            del self._accepted[peer]
        return gone

    def peers(self) -> list[Hashable]:
        """The peers holding a reservation (ended ones included until :meth:`expire`)."""
        return list(self._held)

    def _forget_ip(self, ip: str | None) -> None:
        if ip is None:
            return
        left = self._per_ip.get(ip, 0) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)


@dataclass
class BoundedCounts:
    """Counts of things held per key (a peer) and in all, with bounds on both."""

    max_total: int
    max_per_key: int
    total: int = 0
    _per_key: dict[Hashable, int] = field(default_factory=dict)

    def count(self, key: Hashable) -> int:
        """How many ``key`` holds."""
        return self._per_key.get(key, 0)

    def admit(self, *keys: Hashable) -> bool:
        """Count one more for each distinct key of ``keys`` (one item, e.g. a circuit
        from one peer to another) if no bound is exceeded; False otherwise."""
        distinct = set(keys)
        if self.total >= self.max_total:
            return False
        if any(self._per_key.get(key, 0) >= self.max_per_key for key in distinct):
            return False
        for key in distinct:
            self._per_key[key] = self._per_key.get(key, 0) + 1
        self.total += 1
        return True

    def release(self, *keys: Hashable) -> None:
        """Undo one :meth:`admit` of the same keys."""
        self.total -= 1
        for key in set(keys):
            left = self._per_key.get(key, 0) - 1
            if left > 0:
                self._per_key[key] = left
            else:
                self._per_key.pop(key, None)
