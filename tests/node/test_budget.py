"""BufferBudget: per-peer and node-wide byte counts that pause and resume readers."""

import pytest

from libp2p_stream_sync.budget import BufferBudget


def test_a_peer_over_its_share_must_stop_reading_and_others_go_on():
    budget = BufferBudget(per_peer=100, total=1000)
    budget.charge("a", 100)
    assert budget.over("a")
    assert not budget.over("b")
    assert budget.used == 100 and budget.used_by("a") == 100


def test_the_node_at_its_total_stops_every_peer():
    budget = BufferBudget(per_peer=900, total=1000)
    budget.charge("a", 800)
    budget.charge("b", 200)
    assert budget.over("a") and budget.over("b") and budget.over("c")


def test_near_its_total_the_node_stops_the_peers_holding_a_fair_share():
    budget = BufferBudget(per_peer=900, total=1000)
    budget.charge("a", 600)
    budget.charge("b", 100)
    budget.charge("c", 50)  # 750: the shared three quarters are used
    assert budget.fair_share() == 250
    assert budget.over("a")                               # the greedy peer waits
    assert not budget.over("b") and not budget.over("c")  # frugal ones read on
    assert not budget.over("d")                           # so does a newcomer


def test_waiting_readers_resume_below_three_quarters_only():
    budget = BufferBudget(per_peer=100, total=1000)
    resumed = []
    budget.charge("a", 100)
    budget.wait_for_room("a", lambda: resumed.append("a"))
    budget.charge("a", -10)  # 90: under the bound but above 75
    assert resumed == [] and budget.waiting == 1
    budget.charge("a", -20)  # 70
    assert resumed == ["a"] and budget.waiting == 0


def test_only_readers_whose_peer_has_room_resume():
    budget = BufferBudget(per_peer=100, total=10_000)
    resumed = []
    budget.charge("a", 100)
    budget.charge("b", 100)
    budget.wait_for_room("a", lambda: resumed.append("a"))
    budget.wait_for_room("b", lambda: resumed.append("b"))
    budget.charge("b", -100)
    assert resumed == ["b"] and budget.waiting == 1


def test_node_wide_waiters_resume_when_the_total_falls():
    budget = BufferBudget(per_peer=1000, total=1000)
    resumed = []
    budget.charge("a", 600)
    budget.charge("b", 400)
    assert budget.over("a") and budget.over("b")  # the node is full
    budget.wait_for_room("a", lambda: resumed.append("a"))
    budget.charge("a", -300)  # total 700, a 300: still a fair share of the scaled 562
    assert resumed == []
    budget.charge("a", -50)  # a 250: below its scaled share (281)
    assert resumed == ["a"]


def test_cancelled_waiters_are_not_called_and_releases_are_checked():
    budget = BufferBudget(per_peer=100, total=1000)
    called = []
    budget.charge("a", 100)

    def resume():
        called.append(1)

    budget.wait_for_room("a", resume)
    budget.cancel_wait(resume)
    budget.charge("a", -100)
    assert called == [] and budget.used == 0 and budget.used_by("a") == 0
    with pytest.raises(ValueError):
        budget.charge("a", -1)
    with pytest.raises(ValueError):
        BufferBudget(per_peer=0, total=1)


def test_shed_asks_the_largest_holders_down_to_half_a_fair_share():
    budget = BufferBudget(per_peer=10_000, total=1000)
    asked: list[tuple[str, int]] = []
    budget.charge("greedy", 700)
    budget.charge("frugal", 100)
    budget.attach("greedy", lambda keep: asked.append(("greedy", keep)))
    budget.attach("frugal", lambda keep: asked.append(("frugal", keep)))
    budget.shed()  # fair share: 750 / 2 peers = 375; keep half of it
    assert asked == [("greedy", 187)]
    budget.detach("greedy", next(iter(budget._shedders["greedy"])))
    asked.clear()
    budget.shed()
    assert asked == []  # the greedy peer's connection is gone; frugal is under


def test_a_release_that_resumes_its_own_connection_is_charged_once():
    # A connection over its own bound and waiting for the budget: when it forgets a
    # stream, the release resumes it at once, and its recount must not release again.
    from libp2p_stream_sync.read_pressure import ReadPressure

    class Timer:
        def cancel(self) -> None:
            pass

    class Reactor:
        def call_later(self, delay, fn):
            return Timer()

    class Unread:
        def __init__(self, n: int) -> None:
            self.stream = self
            self.unread_bytes = n

    budget = BufferBudget(per_peer=100, total=1000)
    budget.charge("P", 60)  # another connection of the same peer
    records: dict = {}
    pressure = ReadPressure(Reactor(), 50, records, interest_changed=lambda: None,
                            peer_hung_up=lambda: False, reset_streams=lambda s, t: None,
                            budget=budget)
    pressure.peer = "P"
    records[1] = Unread(70)
    pressure.count(1, 70)
    assert pressure.holding and budget.used_by("P") == 130
    del records[1]
    pressure.forget(1)
    assert budget.used_by("P") == 60
