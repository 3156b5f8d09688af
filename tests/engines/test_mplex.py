"""mplex engine: byte-exact frames, two sessions talking, hostile input, properties."""

import array

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.codec.varint import encode_uvarint
from libp2p_stream_sync.engines.mplex import UNLIMITED_WINDOW, MplexSession
from libp2p_stream_sync.engines.muxer_events import (
    DataReceived, MuxerError, SessionTerminated, StreamClosedError, StreamEnded,
    StreamLimitError, StreamOpened, StreamReset)


def frame(wire_id, flag, data=b""):
    return encode_uvarint(wire_id << 3 | flag) + encode_uvarint(len(data)) + data


def pair(**limits):
    return MplexSession(True, **limits), MplexSession(False, **limits)


def transfer(src, dst):
    return dst.receive_data(src.data_to_send())


# ---------------------------------------------------------------- byte-exact frames

def test_open_stream_sends_new_stream_named_by_its_id():
    s = MplexSession(True)
    assert s.open_stream() == 0
    assert s.open_stream() == 2
    assert s.data_to_send() == b"\x00\x010" + b"\x08\x011"
    assert s.data_to_send() == b""


def test_frames_of_the_stream_opener():
    s = MplexSession(False)
    sid = s.open_stream()
    s.data_to_send()
    assert s.send_data(sid, b"hello") == 5
    s.close_stream(sid)
    assert s.data_to_send() == b"\x02\x05hello" + b"\x04\x00"
    sid2 = s.open_stream()
    s.reset_stream(sid2)
    assert s.data_to_send() == b"\x08\x011" + b"\x0e\x00"


def test_frames_of_the_stream_receiver():
    s = MplexSession(False)
    assert s.receive_data(b"\x00\x010") == [StreamOpened(1)]
    assert s.receive_data(b"\x02\x03abc") == [DataReceived(1, b"abc")]
    s.send_data(1, b"xyz")
    s.close_stream(1)
    assert s.data_to_send() == b"\x01\x03xyz" + b"\x03\x00"
    assert s.receive_data(b"\x08\x00") == [StreamOpened(3)]
    s.reset_stream(3)
    assert s.data_to_send() == b"\x0d\x00"


def test_our_and_their_stream_with_same_wire_id_are_distinct():
    s = MplexSession(True)
    ours = s.open_stream()
    assert s.receive_data(frame(0, 0, b"0")) == [StreamOpened(1)]
    events = s.receive_data(frame(0, 1, b"to ours") + frame(0, 2, b"to theirs"))
    assert events == [DataReceived(ours, b"to ours"), DataReceived(1, b"to theirs")]


def test_large_id_uses_multibyte_header():
    s = MplexSession(True)
    assert s.receive_data(frame(300, 0)) == [StreamOpened(601)]
    s.send_data(601, b"x")
    assert s.data_to_send() == encode_uvarint(300 << 3 | 1) + b"\x01x"


def test_send_data_splits_at_max_message_size():
    s = MplexSession(True, max_message_size=4)
    sid = s.open_stream()
    s.data_to_send()
    assert s.send_data(sid, b"abcdefghij") == 10
    assert s.data_to_send() == b"\x02\x04abcd\x02\x04efgh\x02\x02ij"


def test_send_data_accepts_buffer_types():
    s = MplexSession(True, max_message_size=3)
    sid = s.open_stream()
    s.data_to_send()
    s.send_data(sid, bytearray(b"ab"))
    s.send_data(sid, memoryview(b"cdefg"))
    s.send_data(sid, memoryview(array.array("H", [0x0101])))
    assert s.data_to_send() == b"\x02\x02ab\x02\x03cde\x02\x02fg\x02\x02\x01\x01"


def test_empty_send_is_a_no_op():
    s = MplexSession(True)
    sid = s.open_stream()
    s.data_to_send()
    assert s.send_data(sid, b"") == 0
    assert s.data_to_send() == b""


def test_no_flow_control():
    s = MplexSession(True)
    sid = s.open_stream()
    assert s.send_window(sid) == UNLIMITED_WINDOW
    assert s.send_data(sid, b"x" * 3_000_000) == 3_000_000
    s.close_stream(sid)
    assert s.send_window(sid) == 0
    assert s.get_timer() is None and s.handle_timer(5.0) == []
    s.ping(7)
    assert s.supports_ping is False


# ---------------------------------------------------------------- stream lifecycle

def test_half_close_both_ways_forgets_the_stream():
    a, b = pair()
    sid = a.open_stream()
    a.send_data(sid, b"req")
    a.close_stream(sid)
    assert transfer(a, b) == [StreamOpened(1), DataReceived(1, b"req"), StreamEnded(1)]
    b.send_data(1, b"resp")
    b.close_stream(1)
    assert transfer(b, a) == [DataReceived(sid, b"resp"), StreamEnded(sid)]
    for session, stream in ((a, sid), (b, 1)):
        with pytest.raises(StreamClosedError):
            session.send_data(stream, b"x")
        with pytest.raises(StreamClosedError):
            session.reset_stream(stream)


def test_writing_after_local_close_raises():
    s = MplexSession(True)
    sid = s.open_stream()
    s.close_stream(sid)
    with pytest.raises(StreamClosedError):
        s.send_data(sid, b"x")
    with pytest.raises(StreamClosedError):
        s.close_stream(sid)


def test_local_calls_on_unknown_stream_raise():
    s = MplexSession(True)
    for call in (lambda: s.send_data(4, b"x"), lambda: s.close_stream(4),
                 lambda: s.reset_stream(4), lambda: s.send_window(4)):
        with pytest.raises(StreamClosedError):
            call()
    s.consumed(4, 10)  # accounting only: tolerated


def test_remote_reset_drops_the_stream():
    a, b = pair()
    sid = a.open_stream()
    transfer(a, b)
    b.reset_stream(1)
    assert b.data_to_send() == b"\x05\x00"
    assert a.receive_data(b"\x05\x00") == [StreamReset(sid)]
    with pytest.raises(StreamClosedError):
        a.send_data(sid, b"x")


def test_tolerated_peer_behaviour_is_ignored():
    s = MplexSession(True)
    assert s.receive_data(frame(9, 2, b"data") + frame(9, 4) + frame(9, 6)) == []
    assert s.receive_data(frame(0, 0) + frame(0, 4)) == [StreamOpened(1), StreamEnded(1)]
    assert s.receive_data(frame(0, 2, b"late") + frame(0, 4)) == []
    assert s.receive_data(frame(0, 2)) == []   # empty data frames carry nothing
    assert not s.is_terminated


def test_remote_may_reuse_a_wire_id_after_the_stream_ended():
    s = MplexSession(True)
    s.receive_data(frame(0, 0) + frame(0, 6))
    assert s.receive_data(frame(0, 0)) == [StreamOpened(1)]


def test_receive_buffer_bound_resets_the_stream():
    s = MplexSession(False, max_buffered_per_stream=10)
    s.receive_data(frame(0, 0))
    assert s.receive_data(frame(0, 2, b"123456")) == [DataReceived(1, b"123456")]
    s.consumed(1, 4)
    assert s.receive_data(frame(0, 2, b"12345678")) == [DataReceived(1, b"12345678")]
    events = s.receive_data(frame(0, 2, b"x"))
    assert len(events) == 1 and isinstance(events[0], StreamReset)
    assert events[0].stream_id == 1 and "unread" in events[0].reason
    assert s.data_to_send() == b"\x05\x00"
    assert s.receive_data(frame(0, 2, b"more")) == []


def test_inbound_stream_limit_resets_excess():
    s = MplexSession(False, max_streams=2)
    assert s.receive_data(frame(0, 0) + frame(1, 0) + frame(2, 0)) == [
        StreamOpened(1), StreamOpened(3)]
    assert s.data_to_send() == b"\x15\x00"
    assert s.receive_data(frame(2, 2, b"ignored")) == []
    s.reset_stream(1)
    assert s.receive_data(frame(3, 0)) == [StreamOpened(7)]


def test_outbound_stream_limit():
    s = MplexSession(True, max_streams=1)
    sid = s.open_stream()
    with pytest.raises(StreamLimitError):
        s.open_stream()
    s.reset_stream(sid)
    assert s.open_stream() == 2


def test_go_away_refuses_new_streams_both_ways():
    s = MplexSession(True)
    sid = s.open_stream()
    s.data_to_send()
    s.go_away()
    assert s.is_going_away
    with pytest.raises(StreamLimitError):
        s.open_stream()
    assert s.receive_data(frame(0, 0)) == []
    assert s.data_to_send() == b"\x05\x00"
    s.send_data(sid, b"still fine")
    assert s.data_to_send() == b"\x02\x0astill fine"


# ---------------------------------------------------------------- protocol errors

@pytest.mark.parametrize("wire", [
    frame(0, 7),                                  # invalid flag
    frame(0, 0) + frame(0, 0),                    # NewStream for an open stream
    encode_uvarint(2) + encode_uvarint((1 << 20) + 1),  # oversized, body not needed
    b"\xff" * 10,                                 # varint too long
    b"\x80\x00\x00",                              # non-minimal varint
])
def test_violations_terminate_the_session(wire):
    s = MplexSession(True)
    sid = s.open_stream()
    events = s.receive_data(wire)
    assert isinstance(events[-1], SessionTerminated)
    assert isinstance(events[-1].error, MuxerError)
    assert s.is_terminated
    assert s.receive_data(frame(0, 1, b"x")) == []
    with pytest.raises(StreamLimitError):
        s.open_stream()
    with pytest.raises(StreamClosedError):
        s.send_data(sid, b"x")


def test_termination_does_not_pin_the_callers_buffer():
    s = MplexSession(True)
    buf = bytearray(frame(0, 0) + frame(0, 7, b"payload"))
    events = s.receive_data(buf)
    assert isinstance(events[-1], SessionTerminated)
    buf.extend(b"more")     # BufferError if a memoryview of buf were still alive
    buf2 = bytearray(frame(0, 2, b"abc") + b"\x02")
    s2 = MplexSession(True)
    s2.receive_data(frame(0, 0))
    assert s2.receive_data(buf2) == [DataReceived(1, b"abc")]
    del buf2[:]


def test_message_at_size_limit_is_accepted():
    s = MplexSession(True, max_message_size=16)
    s.receive_data(frame(0, 0))
    assert s.receive_data(frame(0, 2, b"x" * 16)) == [DataReceived(1, b"x" * 16)]
    assert isinstance(s.receive_data(frame(0, 2, b"x" * 17))[0], SessionTerminated)


def test_truncated_input_waits_without_events():
    s = MplexSession(True)
    wire = frame(0, 0, b"0") + frame(0, 2, b"payload")
    events = []
    for i in range(len(wire)):
        events += s.receive_data(wire[i:i + 1])
    assert events == [StreamOpened(1), DataReceived(1, b"payload")]
    assert s.receive_data(b"\x02\x05ab") == []
    assert s.receive_data(b"cde") == [DataReceived(1, b"abcde")]


# ---------------------------------------------------------------- two sessions

def test_many_interleaved_streams_both_directions():
    a, b = pair(max_message_size=1000)
    expected_at_b: dict[int, bytearray] = {}
    expected_at_a: dict[int, bytearray] = {}
    a_ids = [a.open_stream() for _ in range(20)]
    opened = [e.stream_id for e in transfer(a, b) if isinstance(e, StreamOpened)]
    assert opened == [sid + 1 for sid in a_ids]
    b_ids = [b.open_stream() for _ in range(20)]
    transfer(b, a)
    received_a: dict[int, bytearray] = {}
    received_b: dict[int, bytearray] = {}
    for rnd in range(5):
        for i, sid in enumerate(a_ids):
            payload = bytes([i]) * (rnd * 700 + i)
            a.send_data(sid, payload)
            expected_at_b.setdefault(sid + 1, bytearray()).extend(payload)
        for i, sid in enumerate(b_ids):
            payload = bytes([100 + i]) * (rnd * 333 + 1)
            b.send_data(sid, payload)
            expected_at_a.setdefault(sid + 1, bytearray()).extend(payload)
        for src, dst, got in ((a, b, received_b), (b, a, received_a)):
            wire = src.data_to_send()
            for start in range(0, len(wire), 777):   # arbitrary re-chunking
                for ev in dst.receive_data(wire[start:start + 777]):
                    assert isinstance(ev, DataReceived)
                    got.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                    dst.consumed(ev.stream_id, len(ev.data))
    assert received_b == expected_at_b
    assert received_a == expected_at_a


def test_large_message_is_split_and_reassembled():
    a, b = pair()
    sid = a.open_stream()
    payload = bytes(range(256)) * 12_000    # ~3 MiB, over the 1 MiB frame limit
    a.send_data(sid, payload)
    events = transfer(a, b)
    assert events[0] == StreamOpened(1)
    chunks = [e.data for e in events[1:]]
    assert [len(c) for c in chunks] == [1 << 20, 1 << 20, len(payload) - (2 << 20)]
    assert b"".join(chunks) == payload


# ---------------------------------------------------------------- properties

@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=8))
def test_arbitrary_bytes_never_raise(data, cuts):
    s = MplexSession(False, max_streams=4, max_buffered_per_stream=64, max_message_size=128)
    s.open_stream()
    pos = 0
    for cut in cuts + [len(data)]:
        for ev in s.receive_data(data[pos:pos + cut]):
            if isinstance(ev, SessionTerminated):
                assert isinstance(ev.error, MuxerError)
        pos += cut
    s.data_to_send()


_ops = st.lists(st.tuples(st.sampled_from(["open", "send", "close", "reset", "flush"]),
                          st.booleans(), st.integers(0, 7), st.binary(max_size=50)),
                max_size=40)


@settings(max_examples=120, deadline=None)
@given(_ops)
def test_random_operations_deliver_exactly_the_bytes_sent(ops):
    sessions = pair(max_message_size=16)
    sent = [{}, {}]        # side -> stream id (local) -> bytes written
    got = [{}, {}]         # side -> stream id (local) -> bytes received
    ended = [set(), set()]
    reset = [set(), set()]
    open_ids = [[], []]

    def deliver(src):
        dst = 1 - src
        for ev in sessions[dst].receive_data(sessions[src].data_to_send()):
            if isinstance(ev, StreamOpened):
                open_ids[dst].append(ev.stream_id)
                got[dst][ev.stream_id] = bytearray()
            elif isinstance(ev, DataReceived):
                assert ev.stream_id not in ended[dst]
                got[dst][ev.stream_id] += ev.data
                sessions[dst].consumed(ev.stream_id, len(ev.data))
            elif isinstance(ev, StreamEnded):
                ended[dst].add(ev.stream_id)
            elif isinstance(ev, StreamReset):
                reset[dst].add(ev.stream_id)
            else:
                raise AssertionError(ev)

    for op, side_flag, idx, payload in ops:
        side = int(side_flag)
        s = sessions[side]
        candidates = open_ids[side]
        sid = candidates[idx % len(candidates)] if candidates else None
        try:
            if op == "open":
                new = s.open_stream()
                open_ids[side].append(new)
                got[side][new] = bytearray()
            elif op == "send" and sid is not None:
                s.send_data(sid, payload)
                sent[side].setdefault(sid, bytearray()).extend(payload)
            elif op == "close" and sid is not None:
                s.close_stream(sid)
            elif op == "reset" and sid is not None:
                s.reset_stream(sid)
                reset[side].add(sid)
            elif op == "flush":
                deliver(side)
        except StreamClosedError:
            pass
    deliver(0)
    deliver(1)
    deliver(0)

    for side in (0, 1):
        peer = 1 - side
        for sid, data in sent[side].items():
            remote_sid = sid ^ 1    # our even id is their odd id and vice versa
            if remote_sid in reset[peer] or sid in reset[side]:
                assert bytes(data).startswith(bytes(got[peer].get(remote_sid, b"")))
            else:
                assert bytes(got[peer][remote_sid]) == bytes(data)
    assert not sessions[0].is_terminated and not sessions[1].is_terminated
