"""Read back-pressure of one connection: unread stream data, and when to stop reading.

A connection stops reading its channel while its streams hold more unread data than
``Limits.max_connection_buffer``, while its peer or the whole node holds more than its
share of the node's :class:`~.budget.BufferBudget` (``Limits.max_peer_buffer``,
``Limits.max_node_buffer``), or (muxers without flow control, mplex) while one
stream holds more than :attr:`ReadPressure.pause_reading_at`. Meanwhile it polls, at
doubling intervals, whether the application caught up or the peer left; after
:data:`CONGESTION_TIMEOUT` it resets the streams that hold the connection up.

Reactor thread only. The connection owns one :class:`ReadPressure` and gives it the
connection's stream records (``stream_id -> record`` with a ``stream`` attribute).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Hashable

if TYPE_CHECKING:
    from .budget import BufferBudget
    from .stream import Stream

log = logging.getLogger("libp2p_stream_sync.connection")

#: Muxers without flow control (mplex): stop reading the socket while a stream holds
#: this much unread data, so TCP pushes back on the sender (go-mplex does the same).
PAUSE_READING_AT = 1024 * 1024
#: If a paused connection stays stuck this long, the streams that hold it up are
#: reset and reading resumes (go-mplex's ReceiveTimeout does the same): one stream
#: nobody reads must not stall every other stream of the connection forever.
CONGESTION_TIMEOUT = 5.0
#: While paused for unread data, look whether the application caught up (it reports
#: what it read in steps, so a report may never come) or the peer left: first after
#: this many seconds, then at doubling intervals up to CONGESTION_POLL_MAX, so many
#: paused connections cost little.
CONGESTION_POLL = 0.05
CONGESTION_POLL_MAX = 0.4


class ReadPressure:
    """What a connection's streams hold unread, and whether that pauses reading."""

    __slots__ = ("_attached", "_budget", "_congested", "_interest_changed", "_max_buffer",
                 "_over_budget", "pause_reading_at", "_paused", "peer", "_peer_hung_up",
                 "peer_left", "_poll", "_reactor", "_records", "_reset_streams", "_since",
                 "_timer", "_unread", "unread_total")

    def __init__(self, reactor: Any, max_buffer: int, records: dict[int, Any], *,
                 interest_changed: Callable[[], None], peer_hung_up: Callable[[], bool],
                 reset_streams: Callable[[list["Stream"], float], None],
                 budget: "BufferBudget | None" = None) -> None:
        self._reactor = reactor
        self._max_buffer = max_buffer
        self._budget = budget
        #: Whose share of the budget the unread data counts against (set once the
        #: peer is authenticated, before any stream data arrives).
        self.peer: Hashable = None
        self._over_budget = False  # waiting for the peer's or the node's share
        self._attached = False  # our shed() is known to the budget
        self._records = records
        self._interest_changed = interest_changed
        self._peer_hung_up = peer_hung_up
        self._reset_streams = reset_streams
        #: Per-stream pause threshold (lowered for muxers without flow control).
        self.pause_reading_at = PAUSE_READING_AT
        #: The peer closed its side: read to the end, whatever we hold.
        self.peer_left = False
        #: Unread bytes per stream as last looked at, and their sum (never below
        #: the true total: the application only takes bytes away between looks).
        self._unread: dict[int, int] = {}
        self.unread_total = 0
        self._paused = False  # over the connection's bound
        self._congested: dict[int, "Stream"] = {}  # streams over their own bound
        self._timer: Any = None
        self._since = 0.0
        self._poll = CONGESTION_POLL

    @property
    def holding(self) -> bool:
        """True while unread data pauses reading."""
        return bool(self._congested) or self._paused or self._over_budget

    def count(self, sid: int, unread: int) -> None:
        """Data was fed to stream ``sid``, which now holds ``unread`` bytes: count
        them; pause reading beyond the bound."""
        self.look(sid, unread)
        if self.unread_total > self._max_buffer and not self._paused:
            self.recount()  # the application may have read some meanwhile
            if self.unread_total > self._max_buffer:
                self._paused = True
                self._stall()
        budget = self._budget
        if budget is not None and not self._attached:
            budget.attach(self.peer, self.shed)
            self._attached = True
        if budget is not None and not self._over_budget and budget.over(self.peer):
            self._over_budget = True
            budget.wait_for_room(self.peer, self._budget_has_room)
            self._stall()

    def _budget_has_room(self) -> None:
        """The budget fell well below the peer's and the node's bounds."""
        self._over_budget = False
        self.relieve()

    def shed(self, keep: int) -> None:
        """The budget asks us to hold at most ``keep`` bytes: reset our largest
        holders until we do."""
        self.recount()
        excess = self.unread_total - keep
        doomed = []
        for sid, unread in sorted(self._unread.items(), key=lambda item: -item[1]):
            if excess <= 0:
                break
            record = self._records.get(sid)
            if record is not None:
                doomed.append(record.stream)
                excess -= unread
        if doomed:
            self._reset_streams(doomed, CONGESTION_TIMEOUT)

    def look(self, sid: int, unread: int) -> None:
        """Stream ``sid`` holds ``unread`` bytes now."""
        delta = unread - self._unread.get(sid, 0)
        self.unread_total += delta
        if unread:
            self._unread[sid] = unread
        else:
            self._unread.pop(sid, None)
        # Last: a release may resume waiting readers (this one too) at once, and they
        # must see our counts already updated.
        if delta and self._budget is not None:
            self._budget.charge(self.peer, delta)

    def recount(self) -> None:
        """Look at every stream counted so far again."""
        for sid in list(self._unread):
            record = self._records.get(sid)
            if record is None:
                self.look(sid, 0)
            else:
                self.look(sid, record.stream.unread_bytes)

    def congest(self, sid: int, stream: "Stream") -> None:
        """``stream`` holds more than :attr:`pause_reading_at`: pause reading."""
        self._congested[sid] = stream
        self._stall()

    def drop(self, sid: int) -> None:
        """Stream ``sid`` is no longer the application's: stop counting it."""
        self.look(sid, 0)

    def forget(self, sid: int) -> None:
        """Stream ``sid`` is gone: stop counting it; reading may resume."""
        self.drop(sid)
        if self._congested.pop(sid, None) is not None or self._paused or self._over_budget:
            self.relieve()

    def consumed(self) -> None:
        """The application read some data: reading may resume."""
        if self._congested or self._paused or self._over_budget:
            self.relieve()

    def relieve(self) -> None:
        """Resume reading if nothing holds it any more."""
        for sid, stream in list(self._congested.items()):
            record = self._records.get(sid)
            if (stream.unread_bytes <= self.pause_reading_at
                    or record is None or record.stream is not stream):
                del self._congested[sid]
        if self._paused:
            self.recount()
            if self.unread_total <= self._max_buffer:
                self._paused = False
        if not self.holding:
            self._uncongested()

    def cancel(self) -> None:
        """Stop polling."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        """The connection is closed: stop polling, give back what it held of the
        budget, and drop the callbacks, which refer to it (so that it is freed at
        once, not by the cycle collector)."""
        self.cancel()
        if self._budget is not None:
            self._budget.cancel_wait(self._budget_has_room)
            self._budget.detach(self.peer, self.shed)
            for sid in list(self._unread):
                self.look(sid, 0)
            self._over_budget = False
        self._interest_changed = _nothing
        self._reset_streams = _nothing
        self._peer_hung_up = _true

    # -- polling ----------------------------------------------------------------------
    def _stall(self) -> None:
        """Stop reading (a stream or the connection holds too much unread data) and
        watch whether the application catches up."""
        if self._timer is None and not self.peer_left:
            self._since = time.monotonic()
            self._poll = CONGESTION_POLL
            self._timer = self._reactor.call_later(CONGESTION_POLL, self._check)
        self._interest_changed()

    def _uncongested(self) -> None:
        self.cancel()
        self._interest_changed()

    def _check(self) -> None:
        self._timer = None
        if self._peer_hung_up():
            # Not reading, we would not see it otherwise: read what the peer sent
            # before it left (as when it leaves while we read), then its end.
            self.peer_left = True
            self._uncongested()
            return
        self.relieve()
        if not self.holding:
            return
        if time.monotonic() - self._since >= CONGESTION_TIMEOUT:
            self._reset_streams(self._stalling_streams(), CONGESTION_TIMEOUT)
            if self._over_budget and self._budget is not None:
                self._budget.shed()  # the largest holders node-wide give up streams
            self.relieve()
            if not self.holding:
                return
            self._since = time.monotonic()
        if self._timer is not None:
            return  # re-armed meanwhile (a shed elsewhere relieved and stalled us)
        self._poll = min(self._poll * 2, CONGESTION_POLL_MAX)
        until_timeout = self._since + CONGESTION_TIMEOUT - time.monotonic()
        self._timer = self._reactor.call_later(max(0.0, min(self._poll, until_timeout)),
                                               self._check)

    def _stalling_streams(self) -> list["Stream"]:
        """The streams over their own bound, then the largest holders until the
        connection is under its bound."""
        stuck = [s for sid, s in self._congested.items()
                 if (r := self._records.get(sid)) is not None and r.stream is s]
        self._congested.clear()
        excess = self.unread_total - self._max_buffer
        for sid, unread in sorted(self._unread.items(), key=lambda item: -item[1]):
            if excess <= 0:
                break
            record = self._records.get(sid)
            if record is not None and record.stream not in stuck:
                stuck.append(record.stream)
                excess -= unread
        return stuck


def _nothing(*args: Any) -> None:
    pass


def _true() -> bool:
    return True
