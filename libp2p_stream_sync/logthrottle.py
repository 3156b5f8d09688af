"""Rate-limited log lines for events a remote peer can repeat at will."""

from __future__ import annotations

import threading
import time
from typing import Hashable

#: Default seconds between two lines about the same thing.
INTERVAL = 5.0


class LogThrottle:
    """``ready(key)`` is True at most once per ``interval`` seconds for each key."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}

    def ready(self, key: Hashable) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            if len(self._last) > 1024:  # keys may come from peers: stay bounded
                self._last.clear()
            self._last[key] = now
            return True
