"""The node's address book: where to dial peers we know by peer id."""

from __future__ import annotations

import collections
import threading
from typing import Callable

from multiaddr import Multiaddr

from .identity import PeerId

#: Addresses kept per peer in each half of the book (the oldest goes first).
MAX_ADDRESSES_PER_PEER = 32


class AddressBook:
    """Addresses the application gave (*configured*) and addresses peers told us
    (*learned*, through identify), each half bounded to ``max_peers`` peers.

    Learned entries never push out configured ones. When the learned half is full,
    the peer added longest ago that we are not connected to goes first, so a flood of
    fresh identities cannot evict the peers we talk to. Thread-safe.
    """

    def __init__(self, max_peers: int, is_connected: Callable[[PeerId], bool]) -> None:
        self.max_peers = max_peers
        self._is_connected = is_connected
        self._lock = threading.Lock()
        self._configured: collections.OrderedDict[PeerId, list[Multiaddr]] = \
            collections.OrderedDict()
        self._learned: collections.OrderedDict[PeerId, list[Multiaddr]] = \
            collections.OrderedDict()

    def add(self, peer: PeerId, addr: Multiaddr, *, learned: bool,
            first: bool = False) -> None:
        """Remember ``addr`` for ``peer`` (``learned``: it came from a peer); ``first``
        puts a configured address at the front, to be dialed before the others."""
        with self._lock:
            if learned and addr in self._configured.get(peer, ()):
                return
            book = self._learned if learned else self._configured
            known = book.get(peer)
            if known is None:
                if len(book) >= self.max_peers:
                    self._evict(book, learned)
                known = book[peer] = []
            if addr in known:
                if not first:
                    return
                known.remove(addr)
            if first:
                known.insert(0, addr)
            else:
                known.append(addr)
            if len(known) > MAX_ADDRESSES_PER_PEER:
                del known[-1 if first else 0]

    def addresses_of(self, peer: PeerId) -> list[Multiaddr]:
        """Configured addresses first, then learned ones."""
        with self._lock:
            configured = list(self._configured.get(peer, ()))
            learned = [a for a in self._learned.get(peer, ()) if a not in configured]
        return configured + learned

    def demote(self, peer: PeerId, addr: Multiaddr) -> None:
        """``addr`` failed: a configured address goes to the back of the peer's list,
        a learned one is forgotten, so that it is not tried first next time."""
        with self._lock:
            configured = self._configured.get(peer, [])
            if addr in configured:
                configured.remove(addr)
                configured.append(addr)
            learned = self._learned.get(peer, [])
            if addr in learned:
                learned.remove(addr)

    def __len__(self) -> int:
        with self._lock:
            return len(self._configured.keys() | self._learned.keys())

    def _evict(self, book: collections.OrderedDict, learned: bool) -> None:
        """Drop one peer (lock held): the oldest, skipping connected peers if learned."""
        if learned:
            for _ in range(len(book)):
                peer = next(iter(book))
                if not self._is_connected(peer):
                    del book[peer]
                    return
                book.move_to_end(peer)  # connected: keep it, look at the next
        book.popitem(last=False)
