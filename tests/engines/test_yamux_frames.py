"""yamux engine, one session at a time: byte-exact frames, limits, timers, violations."""

import struct

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.engines.muxer_events import (
    DataReceived, GoAwayReceived, MuxerError, PingAcked, SendWindowUpdated,
    SessionTerminated, StreamClosedError, StreamEnded, StreamLimitError, StreamOpened,
    StreamReset,
)
from libp2p_stream_sync.engines.yamux import YamuxSession

HDR = struct.Struct(">BBHII")
DATA, WINDOW, PING, GOAWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
KIB = 1024


def frame(ftype, flags, sid, length, payload=b"", version=0):
    return HDR.pack(version, ftype, flags, sid, length) + payload


def data(sid, payload, flags=0):
    return frame(DATA, flags, sid, len(payload), payload)


def fresh(initiator=True, **kw):
    """A session whose RTT probe ping has been taken off the wire."""
    kw.setdefault("keepalive_interval", None)
    s = YamuxSession(initiator, **kw)
    assert bytes(s.data_to_send()) == frame(PING, SYN, 0, 0)
    return s


def server_with_stream(sid=1, **kw):
    s = fresh(False, **kw)
    assert s.receive_data(frame(WINDOW, SYN, sid, 0)) == [StreamOpened(sid)]
    return s


GOAWAY_PROTO = frame(GOAWAY, 0, 0, 1)


# --------------------------------------------------------------- byte-exact output

def test_rtt_probe_ping_is_sent_at_start():
    s = YamuxSession(True)
    assert bytes(s.data_to_send()) == bytes.fromhex("000200010000000000000000")
    assert s.data_to_send() == b""


def test_open_stream_sends_syn_window_update_with_client_and_server_ids():
    client, server = fresh(True), fresh(False)
    assert [client.open_stream(), client.open_stream()] == [1, 3]
    assert bytes(client.data_to_send()) == (bytes.fromhex("000100010000000100000000")
                                            + bytes.fromhex("000100010000000300000000"))
    assert server.open_stream() == 2
    assert bytes(server.data_to_send()) == bytes.fromhex("000100010000000200000000")


def test_syn_advertises_window_beyond_default():
    s = fresh(True, initial_window=1024 * KIB)
    s.open_stream()
    assert bytes(s.data_to_send()) == frame(WINDOW, SYN, 1, 768 * KIB)


def test_data_then_fin_in_its_own_zero_length_data_frame():
    s = fresh()
    sid = s.open_stream()
    s.data_to_send()
    assert s.send_data(sid, b"hello") == 5
    s.close_stream(sid)
    assert bytes(s.data_to_send()) == (bytes.fromhex("000000000000000100000005") + b"hello"
                                       + bytes.fromhex("000000040000000100000000"))


def test_reset_is_a_zero_length_data_frame_with_rst():
    s = fresh()
    sid = s.open_stream()
    s.data_to_send()
    s.reset_stream(sid)
    assert bytes(s.data_to_send()) == bytes.fromhex("000000080000000100000000")
    with pytest.raises(StreamClosedError):
        s.send_data(sid, b"x")
    assert s.stream_count == 0


def test_first_frame_on_inbound_stream_is_a_separate_ack():
    s = server_with_stream(1)
    assert s.send_data(1, b"hi") == 2
    assert s.send_data(1, b"!") == 1
    assert bytes(s.data_to_send()) == (bytes.fromhex("000100020000000100000000")
                                       + data(1, b"hi") + data(1, b"!"))


def test_ack_grants_extra_initial_window():
    s = server_with_stream(1, initial_window=512 * KIB)
    s.close_stream(1)
    assert bytes(s.data_to_send()) == frame(WINDOW, ACK, 1, 256 * KIB) + data(1, b"", FIN)


def test_ping_pong_and_goaway_bytes():
    s = fresh()
    s.ping(7)
    assert bytes(s.data_to_send()) == bytes.fromhex("000200010000000000000007")
    assert s.receive_data(frame(PING, SYN, 0, 0xDEADBEEF)) == []
    assert bytes(s.data_to_send()) == bytes.fromhex("0002000200000000deadbeef")
    assert s.receive_data(frame(PING, ACK, 0, 7)) == [PingAcked(7)]
    assert s.receive_data(frame(PING, ACK, 0, 7)) == []  # answered once only
    s.go_away()
    assert bytes(s.data_to_send()) == bytes.fromhex("000300000000000000000000")
    t = fresh()
    t.go_away(2)
    assert bytes(t.data_to_send()) == bytes.fromhex("000300000000000000000002")


def test_large_writes_are_split_into_256k_frames_and_limited_by_window():
    s = fresh()
    sid = s.open_stream()
    s.data_to_send()
    payload = bytes(range(256)) * 2048  # 512 KiB
    assert s.send_data(sid, payload) == 256 * KIB
    assert s.send_window(sid) == 0
    assert s.send_data(sid, payload) == 0
    assert bytes(s.data_to_send()) == data(sid, payload[:256 * KIB])
    assert s.receive_data(frame(WINDOW, 0, sid, 300 * KIB)) == [SendWindowUpdated(sid)]
    assert s.send_data(sid, memoryview(payload)[256 * KIB:]) == 256 * KIB
    out = bytes(s.data_to_send())
    assert out == data(sid, payload[256 * KIB:])
    assert s.send_window(sid) == 44 * KIB


def test_send_window_accepts_windows_far_above_default():
    s = fresh()
    sid = s.open_stream()
    s.receive_data(frame(WINDOW, ACK, sid, 64 * 1024 * KIB))
    assert s.send_window(sid) == 64 * 1024 * KIB + 256 * KIB
    assert s.send_data(sid, bytes(3 * 1024 * KIB)) == 3 * 1024 * KIB


# --------------------------------------------------------------- input parsing

def test_inbound_syn_data_fin_in_one_frame_and_byte_by_byte():
    wire = data(1, b"payload", SYN | FIN) + data(3, b"x", SYN)
    whole = fresh(False).receive_data(wire)
    assert whole == [StreamOpened(1), DataReceived(1, b"payload"), StreamEnded(1),
                     StreamOpened(3), DataReceived(3, b"x")]
    s = fresh(False)
    events = []
    for i in range(len(wire)):
        events += s.receive_data(wire[i:i + 1])
    merged = []
    for e in events:
        if merged and type(e) is DataReceived and type(merged[-1]) is DataReceived:
            merged[-1] = DataReceived(e.stream_id, merged[-1].data + e.data)
        else:
            merged.append(e)
    assert merged == whole
    assert all(type(e.data) is bytes for e in events if type(e) is DataReceived)


def test_accepts_bytearray_and_memoryview_input():
    wire = bytearray(data(1, b"abc", SYN))
    s = fresh(False)
    assert s.receive_data(memoryview(wire)[:5]) == []
    assert s.receive_data(wire[5:]) == [StreamOpened(1), DataReceived(1, b"abc")]
    wire[:] = b"\xff" * len(wire)  # the engine kept copies, not views
    assert s.send_data(1, b"z") == 1


def test_remote_reset_and_fin_on_window_update():
    s = server_with_stream(1)
    s.receive_data(frame(WINDOW, SYN, 3, 0))
    assert s.receive_data(frame(WINDOW, FIN, 1, 0)) == [StreamEnded(1)]
    assert s.receive_data(frame(WINDOW, RST, 3, 0)) == [StreamReset(3)]
    assert s.send_data(1, b"still writable") == 14
    with pytest.raises(StreamClosedError):
        s.send_data(3, b"x")


def test_frames_for_closed_or_unknown_streams_are_skipped():
    s = server_with_stream(1)
    s.reset_stream(1)
    wire = (data(1, b"late data" * 100) + frame(WINDOW, 0, 1, 1000)
            + data(99, b"never opened") + frame(WINDOW, ACK, 41, 5)
            + data(5, b"ok", SYN))
    assert s.receive_data(wire) == [StreamOpened(5), DataReceived(5, b"ok")]
    assert not s.is_terminated


def test_unsolicited_pong_is_ignored_and_ping_on_nonzero_stream_answered():
    s = fresh()
    assert s.receive_data(frame(PING, ACK, 0, 1234)) == []
    assert s.receive_data(frame(PING, SYN, 5, 42)) == []
    assert bytes(s.data_to_send()) == frame(PING, ACK, 0, 42)


# --------------------------------------------------------------- flow control

def test_window_update_after_half_the_window_is_consumed():
    s = server_with_stream(1)  # no RTT measured: the window never grows
    s.receive_data(data(1, bytes(200 * KIB)))
    s.consumed(1, 128 * KIB - 1, now=1.0)
    assert s.data_to_send() == b""
    s.consumed(1, 1, now=1.0)
    # The ACK rides on the first window update.
    assert bytes(s.data_to_send()) == frame(WINDOW, ACK, 1, 128 * KIB)
    s.consumed(1, 72 * KIB)
    assert s.data_to_send() == b""
    with pytest.raises(ValueError):
        s.consumed(1, 1)


def test_window_doubles_when_drained_within_two_rtts():
    s = fresh(False, now=0.0)
    s.receive_data(frame(PING, ACK, 0, 0), now=0.1)  # RTT probe answered: rtt = 0.1
    assert s.rtt == pytest.approx(0.1)
    s.receive_data(frame(WINDOW, SYN, 1, 0), now=0.1)
    s.receive_data(data(1, bytes(256 * KIB)), now=0.2)
    s.consumed(1, 128 * KIB, now=0.25)
    # window 256K -> 512K; remote credit is 0; grant 512K - 0 - 128K still buffered.
    assert bytes(s.data_to_send()) == frame(WINDOW, ACK, 1, 384 * KIB)
    s.consumed(1, 128 * KIB, now=0.3)
    assert s.data_to_send() == b""  # 128K unreported < half of 512K


def test_window_stays_put_for_a_slow_reader():
    s = fresh(False, now=0.0)
    s.receive_data(frame(PING, ACK, 0, 0), now=0.01)
    s.receive_data(frame(WINDOW, SYN, 1, 0))
    s.receive_data(data(1, bytes(256 * KIB)))
    s.consumed(1, 256 * KIB, now=5.0)
    assert bytes(s.data_to_send()) == frame(WINDOW, ACK, 1, 256 * KIB)


def test_window_growth_is_capped_at_max_window():
    s = fresh(False, max_window=512 * KIB)
    s.receive_data(frame(PING, ACK, 0, 0))  # rtt 0, clock frozen: always "fast"
    s.receive_data(frame(WINDOW, SYN, 1, 0))
    granted = 0
    for _ in range(6):
        s.receive_data(data(1, bytes(256 * KIB)))
        s.consumed(1, 256 * KIB)
        out = bytes(s.data_to_send())
        granted = HDR.unpack_from(out)[4]
    assert granted == 256 * KIB  # steady state with a 512K window
    assert s._streams[1].window == 512 * KIB


def test_frames_as_large_as_a_grown_window_are_accepted():
    s = server_with_stream(1, initial_window=4096 * KIB)
    s.send_data(1, b"ack")  # the ACK grants the window beyond 256 KiB
    assert bytes(s.data_to_send())[:12] == frame(WINDOW, ACK, 1, 3840 * KIB)
    big = bytes(range(256)) * (4096 * 4)
    events = s.receive_data(data(1, big))
    assert events == [DataReceived(1, big)]
    events = s.receive_data(data(1, b"x"))
    assert type(events[-1]) is SessionTerminated  # the window is used up


def test_consumed_on_a_finished_stream_is_a_noop():
    s = server_with_stream(1)
    s.receive_data(data(1, b"abc", FIN))
    s.close_stream(1)
    assert s.stream_count == 0
    s.consumed(1, 3)
    s.data_to_send()
    assert s.data_to_send() == b""


# --------------------------------------------------------------- limits

def test_pending_inbound_streams_beyond_the_bound_are_reset():
    s = fresh(False, max_pending_inbound=2)
    assert s.receive_data(frame(WINDOW, SYN, 1, 0) + frame(WINDOW, SYN, 3, 0)) == [
        StreamOpened(1), StreamOpened(3)]
    assert s.receive_data(data(5, b"dropped", SYN)) == []
    assert bytes(s.data_to_send()) == data(5, b"", RST)
    s.send_data(1, b"ack")  # acknowledges stream 1
    s.data_to_send()
    assert s.receive_data(frame(WINDOW, SYN, 7, 0)) == [StreamOpened(7)]


def test_total_stream_limit():
    s = fresh(True, max_streams=2)
    s.open_stream()
    s.receive_data(frame(WINDOW, SYN, 2, 0))
    with pytest.raises(StreamLimitError):
        s.open_stream()
    s.data_to_send()
    assert s.receive_data(frame(WINDOW, SYN, 4, 0)) == []
    assert bytes(s.data_to_send()) == data(4, b"", RST)


def test_outbound_ack_backlog_is_counted():
    s = fresh()
    a, b = s.open_stream(), s.open_stream()
    assert s.outbound_unacked == 2
    s.receive_data(frame(WINDOW, ACK, a, 0))
    assert s.outbound_unacked == 1
    s.receive_data(data(b, b"", RST))
    assert s.outbound_unacked == 0


# --------------------------------------------------------------- GoAway

def test_remote_normal_goaway_stops_new_streams_only():
    s = fresh()
    sid = s.open_stream()
    assert s.receive_data(frame(GOAWAY, 0, 0, 0)) == [GoAwayReceived(0)]
    with pytest.raises(StreamLimitError):
        s.open_stream()
    assert s.send_data(sid, b"x") == 1
    assert not s.is_terminated


def test_remote_error_goaway_ends_the_session():
    s = fresh()
    events = s.receive_data(frame(GOAWAY, 0, 0, 1) + frame(PING, SYN, 0, 1))
    assert events[0] == GoAwayReceived(1)
    assert type(events[1]) is SessionTerminated and events[1].error is None
    assert s.is_terminated and s.data_to_send() == b""


def test_inbound_syn_after_our_goaway_is_reset():
    s = fresh(False)
    s.go_away()
    s.data_to_send()
    assert s.receive_data(frame(WINDOW, SYN, 1, 0)) == []
    assert bytes(s.data_to_send()) == data(1, b"", RST)
    with pytest.raises(StreamLimitError):
        s.open_stream()


# --------------------------------------------------------------- keepalive

def test_keepalive_timeout_terminates():
    s = YamuxSession(True, now=100.0, keepalive_interval=30.0, keepalive_timeout=10.0)
    s.data_to_send()
    assert s.get_timer() == 110.0  # the RTT probe is unanswered
    assert s.handle_timer(109.9) == []
    assert s.handle_timer(110.0) == [SessionTerminated("keepalive timeout")]
    assert s.is_terminated and s.get_timer() is None


def test_keepalive_pings_periodically_while_answered():
    s = YamuxSession(True, now=0.0, keepalive_interval=30.0, keepalive_timeout=10.0)
    s.data_to_send()
    s.receive_data(frame(PING, ACK, 0, 0), now=0.2)
    assert s.get_timer() == 30.0
    assert s.handle_timer(29.0) == [] and s.data_to_send() == b""
    assert s.handle_timer(30.0) == []
    assert bytes(s.data_to_send()) == frame(PING, SYN, 0, 1)
    assert s.get_timer() == 40.0
    s.receive_data(frame(PING, ACK, 0, 1), now=30.5)
    assert s.rtt == pytest.approx(0.5)
    assert s.get_timer() == 60.0


def test_keepalive_disabled():
    s = YamuxSession(True, keepalive_interval=None)
    assert s.get_timer() is None
    assert s.handle_timer(1e9) == []


# --------------------------------------------------------------- local misuse

def test_local_misuse_raises():
    s = fresh()
    with pytest.raises(StreamClosedError):
        s.send_data(1, b"x")
    sid = s.open_stream()
    s.close_stream(sid)
    with pytest.raises(StreamClosedError):
        s.close_stream(sid)
    with pytest.raises(StreamClosedError):
        s.send_window(sid)
    with pytest.raises(StreamClosedError):
        s.reset_stream(99)
    with pytest.raises(ValueError):
        YamuxSession(True, initial_window=1000)
    with pytest.raises(ValueError):
        s.ping(-1)


# --------------------------------------------------------------- violations

def _violations():
    big = 256 * KIB + 1
    return {
        "bad version": (False, frame(PING, SYN, 0, 0, version=1)),
        "unknown type": (False, frame(4, 0, 0, 0)),
        "data beyond window": (False, frame(WINDOW, SYN, 1, 0) + frame(DATA, 0, 1, big)),
        "syn data beyond default window": (False, frame(DATA, SYN, 1, big)),
        "syn on existing id": (False, frame(WINDOW, SYN, 1, 0) + frame(DATA, SYN, 1, 0)),
        "syn odd id to client": (True, frame(WINDOW, SYN, 1, 0)),
        "syn even id to server": (False, frame(WINDOW, SYN, 2, 0)),
        "syn on stream 0": (False, frame(WINDOW, SYN, 0, 0)),
        "data on stream 0": (False, frame(DATA, 0, 0, 1, b"x")),
        "window update on stream 0": (True, frame(WINDOW, 0, 0, 10)),
        "window overflow on syn": (False, frame(WINDOW, SYN, 1, 0xFFFFFFFF - 256 * KIB + 1)),
        "window overflow": (False, frame(WINDOW, SYN, 1, 0) + frame(WINDOW, 0, 1, 0xFFFFFFF0)
                            + frame(WINDOW, 0, 1, 0xFFFFFFF0)),
        "absurd length on unknown stream": (False, frame(DATA, 0, 9, 0xFFFFFFFF)),
        "data after fin": (False, data(1, b"a", SYN | FIN) + data(1, b"b")),
    }


@pytest.mark.parametrize("name", sorted(_violations()))
def test_protocol_violation_terminates_with_goaway(name):
    initiator, wire = _violations()[name]
    s = fresh(initiator)
    events = s.receive_data(wire + frame(PING, SYN, 0, 5))
    assert type(events[-1]) is SessionTerminated
    assert isinstance(events[-1].error, MuxerError)
    assert not any(type(e) is SessionTerminated for e in events[:-1])
    assert bytes(s.data_to_send()).endswith(GOAWAY_PROTO)  # and no pong afterwards
    assert s.is_terminated
    assert s.receive_data(frame(PING, SYN, 0, 6)) == []
    assert s.data_to_send() == b""
    assert s.stream_count == 0
    with pytest.raises(StreamLimitError):
        s.open_stream()


# --------------------------------------------------------------- fuzz

KNOWN_EVENTS = (StreamOpened, DataReceived, StreamEnded, StreamReset, SendWindowUpdated,
                PingAcked, GoAwayReceived, SessionTerminated)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 40), st.booleans())
def test_arbitrary_bytes_never_raise(blob, step, initiator):
    s = fresh(initiator)
    for i in range(0, len(blob), step):
        for e in s.receive_data(blob[i:i + step]):
            assert isinstance(e, KNOWN_EVENTS)
            if type(e) is SessionTerminated:
                assert e.error is None or isinstance(e.error, MuxerError)


_frames = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 15), st.integers(0, 7),
                             st.integers(0, 40) | st.sampled_from([0xFFFFFFFF, 300000])),
                   max_size=30)


@settings(max_examples=150, deadline=None)
@given(_frames, st.booleans())
def test_arbitrary_frame_sequences_never_raise(frames, initiator):
    s = fresh(initiator)
    wire = b"".join(
        frame(t, f, sid, n, bytes(min(n, 40)) if t == DATA else b"")
        for t, f, sid, n in frames)
    terminated = False
    for e in s.receive_data(wire):
        assert isinstance(e, KNOWN_EVENTS)
        assert not terminated
        terminated = type(e) is SessionTerminated
    # Whatever happened, the local API stays usable or fails cleanly.
    try:
        sid = s.open_stream()
        s.send_data(sid, b"x")
    except StreamLimitError:
        assert s.is_terminated or s._remote_go_away
