"""The node's bounded pool of handler threads, for blocking protocol work."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from .logthrottle import LogThrottle

if TYPE_CHECKING:
    from .identity import PeerId
    from .limits import Limits

#: The node's parts log under the node's name, as before the split (README "Logging").
log = logging.getLogger("libp2p_stream_sync.node")


class WorkerPool:
    """Runs blocking jobs on a thread pool started on first use, and bounds them:
    ``Limits.max_handler_jobs`` queued or running in all, ``max_handler_jobs_per_peer``
    on behalf of one peer. ``_lock`` guards the pool and the job counts."""

    def __init__(self, limits: "Limits", max_threads: int,
                 is_closed: Callable[[], bool]) -> None:
        self._limits = limits
        self._max_threads = max_threads
        self._is_closed = is_closed
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._jobs = 0
        self._jobs_per_peer: dict[PeerId, int] = {}
        self._refusals = LogThrottle()

    @property
    def max_threads(self) -> int:
        """The most threads the pool runs at once."""
        return self._max_threads

    @property
    def jobs(self) -> int:
        """Jobs queued or running."""
        return self._jobs

    def jobs_of(self, peer: PeerId) -> int:
        """Jobs queued or running on behalf of ``peer``."""
        return self._jobs_per_peer.get(peer, 0)

    def run(self, fn: Callable[..., Any], *args: Any,
            peer: PeerId | None = None) -> Future | None:
        """Run blocking ``fn(*args)`` on the pool; None when the node is closed or a
        job limit refuses it (see :meth:`~.node.Node.run_in_worker`)."""
        with self._lock:
            if self._is_closed() or not self._admit(peer):
                return None
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._max_threads,
                                                    thread_name_prefix="libp2p-handler")
            future = self._executor.submit(_logged, fn, *args)
        future.add_done_callback(lambda _: self._done(peer))
        return future

    def shutdown(self, wait: bool) -> None:
        """Stop the threads (``wait``: join them); queued jobs are cancelled."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def _admit(self, peer: PeerId | None) -> bool:
        """Count a new job (lock held); False when a job limit is reached."""
        limits = self._limits
        if self._jobs >= limits.max_handler_jobs:
            if self._refusals.ready("jobs"):
                log.warning("handler pool full (%d jobs queued or running): refusing work",
                            self._jobs)
            return False
        if peer is not None:
            count = self._jobs_per_peer.get(peer, 0)
            if count >= limits.max_handler_jobs_per_peer:
                if self._refusals.ready(("jobs", peer)):
                    log.warning("%s has %d handler jobs queued or running: refusing more",
                                peer, count)
                return False
            self._jobs_per_peer[peer] = count + 1
        self._jobs += 1
        return True

    def _done(self, peer: PeerId | None) -> None:
        with self._lock:
            self._jobs -= 1
            if peer is not None:
                left = self._jobs_per_peer.get(peer, 0) - 1
                if left > 0:
                    self._jobs_per_peer[peer] = left
                else:
                    self._jobs_per_peer.pop(peer, None)


def _logged(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        log.exception("handler %r failed", fn)
        raise
