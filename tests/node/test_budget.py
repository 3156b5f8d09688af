"""BufferBudget: per-peer and node-wide byte counts that pause and resume readers."""

import pytest

from libp2p_stream_sync.budget import BufferBudget


def test_a_peer_over_its_share_must_stop_reading_and_others_go_on():
    budget = BufferBudget(per_peer=100, total=1000)
    budget.charge("a", 100)
    assert budget.over("a")
    assert not budget.over("b")
    assert budget.used == 100 and budget.used_by("a") == 100


def test_the_node_over_its_total_stops_every_peer():
    budget = BufferBudget(per_peer=600, total=1000)
    budget.charge("a", 500)
    budget.charge("b", 500)
    assert budget.over("a") and budget.over("b") and budget.over("c")


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
    budget.wait_for_room("c", lambda: resumed.append("c"))
    budget.charge("a", -200)  # total 800: still above 750
    assert resumed == []
    budget.charge("a", -100)  # 700
    assert resumed == ["c"]


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
