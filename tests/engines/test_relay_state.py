"""The relay's reservation table and bounded counts (sans-IO)."""

from __future__ import annotations

from libp2p_stream_sync.engines.relay_state import BoundedCounts, Reservations


def table(**kwargs) -> Reservations:
    values = dict(ttl=10.0, max_total=3, max_per_peer=2, max_per_ip=2)
    values.update(kwargs)
    return Reservations(**values)


def test_reserve_until_ttl_and_expire():
    t = table()
    assert t.reserve("a", "1.1.1.1", 0.0) == 10.0
    assert t.holds("a", 9.9) and not t.holds("a", 10.0)
    assert t.expire(10.0) == ["a"]
    assert len(t) == 0


def test_total_bound_counts_peers_not_refreshes():
    t = table(max_per_ip=10)
    for peer in "abc":
        assert t.reserve(peer, "ip", 0.0) is not None
    assert t.reserve("d", "ip", 0.0) is None
    assert t.reserve("a", "ip", 1.0) == 11.0  # a refresh of a held slot
    assert len(t) == 3


def test_per_ip_bound_and_release():
    t = table()
    assert t.reserve("a", "ip", 0.0) and t.reserve("b", "ip", 0.0)
    assert t.reserve("c", "ip", 0.0) is None
    assert t.reserve("c", "other", 0.0) is not None
    t.drop("a")
    assert t.reserve("d", "ip", 0.0) is not None  # a's place on that IP is free
    t.drop("c")
    assert t.reserve("e", "ip", 0.0) is None  # room in all, not on that IP
    assert t.reserve("b", "elsewhere", 1.0) is not None  # moving frees its IP slot
    assert t.reserve("e", "ip", 1.0) is not None


def test_requests_per_peer_per_ttl_are_bounded():
    t = table()
    assert t.reserve("a", None, 0.0) and t.reserve("a", None, 1.0)
    assert t.reserve("a", None, 2.0) is None  # a third request within the TTL
    assert t.holds("a", 2.0)  # the refused refresh leaves the slot
    assert t.reserve("a", None, 10.5) is not None  # the first request aged out


def test_expire_forgets_old_histories():
    t = table()
    t.reserve("a", None, 0.0)
    t.drop("a")
    t.expire(20.0)
    assert t.reserve("a", None, 20.0) and t.reserve("a", None, 20.0)


def test_bounded_counts_per_key_and_total():
    c = BoundedCounts(max_total=3, max_per_key=2)
    assert c.admit("a", "b") and c.admit("a", "c")
    assert not c.admit("a", "d")  # a holds 2
    assert c.admit("b", "c")
    assert not c.admit("x")  # 3 in all
    c.release("a", "b")
    assert c.count("a") == 1 and c.count("b") == 1 and c.total == 2
    assert c.admit("x", "x") and c.count("x") == 1  # one item, one count per key
