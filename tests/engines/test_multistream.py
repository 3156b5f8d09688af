"""multistream-select 1.0 engine: byte-exact messages, both roles, hostile input."""

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.engines.multistream import (
    MAX_MESSAGE_SIZE, Agreed, MultistreamDialer, MultistreamError, MultistreamListener,
    NegotiationFailed, encode_ls_response, encode_message)
from libp2p_stream_sync.errors import ProtocolError

HEADER = b"\x13/multistream/1.0.0\n"
NA = b"\x03na\n"
NOISE = b"\x07/noise\n"
YAMUX = b"\x0d/yamux/1.0.0\n"


def supported(*protocols):
    return lambda p: p in protocols


def feed_bytewise(engine, data):
    result = None
    for i in range(len(data)):
        out = engine.receive_data(data[i:i + 1])
        if out is not None:
            assert result is None
            result = out
    return result


# ---------------------------------------------------------------- message framing

def test_encode_message_matches_spec_examples():
    assert encode_message("na") == bytes.fromhex("036e610a")
    assert encode_message("ls") == bytes.fromhex("036c730a")
    assert encode_message("/multistream/1.0.0") == HEADER


def test_ls_response_is_a_message_of_length_prefixed_lines():
    assert encode_ls_response(["/a", "/bc"]) == (
        b"\x0a" + b"\x03/a\n" + b"\x04/bc\n" + b"\n")
    assert encode_ls_response([]) == b"\x01\n"


def test_long_message_uses_multibyte_length():
    proto = "/" + "x" * 199
    assert encode_message(proto) == b"\xc9\x01" + proto.encode() + b"\n"


# ---------------------------------------------------------------- dialer

def test_dialer_sends_header_and_first_proposal_in_one_batch():
    d = MultistreamDialer(["/noise", "/tls/1.0.0"])
    assert d.data_to_send() == HEADER + NOISE
    assert d.data_to_send() == b""


def test_dialer_agrees_on_echo_and_returns_leftover():
    d = MultistreamDialer(["/noise"])
    d.data_to_send()
    assert d.receive_data(HEADER) is None
    assert d.receive_data(NOISE + b"payload") == Agreed("/noise", b"payload")
    assert d.finished


def test_dialer_header_and_echo_split_byte_by_byte():
    d = MultistreamDialer(["/noise"])
    assert feed_bytewise(d, HEADER + NOISE) == Agreed("/noise", b"")


def test_dialer_tries_next_proposal_on_na():
    d = MultistreamDialer(["/tls/1.0.0", "/noise"])
    d.data_to_send()
    assert d.receive_data(HEADER + NA) is None
    assert d.proposing == "/noise"
    assert d.data_to_send() == NOISE
    assert d.receive_data(NOISE + b"\x00\x01") == Agreed("/noise", b"\x00\x01")


def test_dialer_fails_when_every_proposal_is_refused():
    d = MultistreamDialer(["/a", "/b"])
    with pytest.raises(NegotiationFailed) as info:
        d.receive_data(HEADER + NA + NA)
    assert info.value.protocols == ("/a", "/b")
    assert isinstance(info.value, MultistreamError)
    assert d.data_to_send() == HEADER + b"\x03/a\n" + b"\x03/b\n"
    with pytest.raises(RuntimeError):
        d.receive_data(b"")


def test_dialer_rejects_wrong_header():
    d = MultistreamDialer(["/noise"])
    with pytest.raises(MultistreamError, match="multistream/2.0.0"):
        d.receive_data(encode_message("/multistream/2.0.0"))


def test_dialer_rejects_unexpected_answer():
    d = MultistreamDialer(["/noise"])
    with pytest.raises(MultistreamError):
        d.receive_data(HEADER + encode_message("/tls/1.0.0"))


def test_lazy_dialer_queues_everything_and_agrees_on_echo():
    d = MultistreamDialer(["/ipfs/ping/1.0.0"], lazy=True)
    assert d.data_to_send() == HEADER + encode_message("/ipfs/ping/1.0.0")
    assert d.receive_data(HEADER) is None
    assert d.receive_data(encode_message("/ipfs/ping/1.0.0") + b"pong") == Agreed(
        "/ipfs/ping/1.0.0", b"pong")


def test_lazy_dialer_na_fails():
    d = MultistreamDialer(["/x"], lazy=True)
    with pytest.raises(NegotiationFailed):
        d.receive_data(HEADER + NA)


@pytest.mark.parametrize("protocols", [[], ["no\nnewline"], [""], ["na"], ["/" + "a" * 1024]])
def test_dialer_refuses_bad_local_protocols(protocols):
    with pytest.raises(ValueError):
        MultistreamDialer(protocols)


def test_lazy_dialer_takes_exactly_one_protocol():
    with pytest.raises(ValueError):
        MultistreamDialer(["/a", "/b"], lazy=True)
    with pytest.raises(TypeError):
        MultistreamDialer("/a")


# ---------------------------------------------------------------- listener

def test_listener_queues_header_at_construction():
    lst = MultistreamListener(supported("/noise"))
    assert lst.data_to_send() == HEADER


def test_listener_agrees_on_header_and_proposal_in_one_chunk():
    lst = MultistreamListener(supported("/noise"))
    lst.data_to_send()
    assert lst.receive_data(HEADER + NOISE + b"\x00\x20handshake") == Agreed(
        "/noise", b"\x00\x20handshake")
    assert lst.data_to_send() == NOISE


def test_listener_byte_by_byte():
    lst = MultistreamListener(supported("/yamux/1.0.0"))
    assert feed_bytewise(lst, HEADER + YAMUX) == Agreed("/yamux/1.0.0", b"")
    assert lst.data_to_send() == HEADER + YAMUX


def test_listener_answers_na_then_accepts():
    lst = MultistreamListener(supported("/noise"))
    assert lst.receive_data(HEADER + encode_message("/tls/1.0.0")) is None
    assert lst.data_to_send() == HEADER + NA
    assert lst.receive_data(NOISE) == Agreed("/noise", b"")
    assert lst.data_to_send() == NOISE


def test_listener_answers_na_to_odd_and_undecodable_ids():
    lst = MultistreamListener(lambda p: True)
    assert lst.receive_data(HEADER + b"\x03\xff\xfe\n" + NA + encode_message("x" * 2000)) is None
    assert lst.data_to_send() == HEADER + NA * 3


def test_listener_consults_is_supported_each_time():
    registered = {"/echo/1.0.0"}
    lst = MultistreamListener(lambda p: p in registered)
    registered.clear()
    assert lst.receive_data(HEADER + encode_message("/echo/1.0.0")) is None
    assert lst.data_to_send() == HEADER + NA


def test_listener_answers_ls():
    lst = MultistreamListener(supported("/a"), list_protocols=lambda: ["/a", "/bc"])
    lst.data_to_send()
    assert lst.receive_data(HEADER + b"\x03ls\n") is None
    assert lst.data_to_send() == encode_ls_response(["/a", "/bc"])


def test_listener_stops_at_max_output_and_goes_on_when_asked():
    lst = MultistreamListener(supported("/a"), list_protocols=lambda: ["/a", "/bc"],
                              max_output=100)
    lst.data_to_send()
    answer = encode_ls_response(["/a", "/bc"])
    assert lst.receive_data(HEADER + b"\x03ls\n" * 50 + encode_message("/a") + b"x") is None
    assert lst.awaiting_drain and lst.buffered > 0
    answers = lst.data_to_send()
    while lst.awaiting_drain:
        result = lst.receive_data(b"")
        answers += lst.data_to_send()
    assert answers == answer * 50 + encode_message("/a")
    assert result == Agreed("/a", b"x") and lst.buffered == 0


def test_buffered_counts_a_partial_message():
    lst = MultistreamListener(supported("/a"))
    assert lst.receive_data(HEADER + b"\x10/a") is None
    assert lst.buffered == 3 and not lst.awaiting_drain


def test_listener_ls_without_list_callback_answers_empty_list():
    lst = MultistreamListener(supported("/a"))
    lst.data_to_send()
    lst.receive_data(HEADER + b"\x03ls\n")
    assert lst.data_to_send() == b"\x01\n"


def test_listener_rejects_wrong_header():
    lst = MultistreamListener(supported("/noise"))
    with pytest.raises(MultistreamError):
        lst.receive_data(encode_message("/multistream/2.0.0") + NOISE)
    assert lst.finished


def test_listener_rejects_proposal_before_header():
    lst = MultistreamListener(supported("/noise"))
    with pytest.raises(MultistreamError):
        lst.receive_data(NOISE)


@pytest.mark.parametrize("raw", [
    b"\x00",                           # zero-length message
    b"\x03nax",                        # no trailing newline
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",   # varint too long
    b"\x80\x00",                       # non-minimal varint
])
def test_malformed_messages_raise_multistream_error(raw):
    with pytest.raises(MultistreamError):
        MultistreamListener(supported("/a")).receive_data(raw)
    with pytest.raises(MultistreamError):
        MultistreamDialer(["/a"]).receive_data(HEADER + raw)


def test_oversized_message_is_rejected_before_its_body_arrives():
    lst = MultistreamListener(supported("/a"))
    from libp2p_stream_sync.codec.varint import encode_uvarint
    with pytest.raises(MultistreamError, match="exceeds"):
        lst.receive_data(encode_uvarint(MAX_MESSAGE_SIZE + 1))


def test_message_at_size_limit_is_accepted():
    lst = MultistreamListener(supported("/a"))
    big = b"/" + b"z" * (MAX_MESSAGE_SIZE - 2)
    assert lst.receive_data(HEADER + encode_message(big)) is None
    assert lst.data_to_send().endswith(NA)


def test_receive_after_agreement_is_local_misuse():
    lst = MultistreamListener(supported("/a"))
    lst.receive_data(HEADER + encode_message("/a"))
    with pytest.raises(RuntimeError):
        lst.receive_data(b"more")


# ---------------------------------------------------------------- end to end

def pump(dialer, listener):
    """Shuttle bytes both ways until both sides agreed; return both Agreed."""
    d_result = l_result = None
    for _ in range(10):
        to_l = dialer.data_to_send()
        if to_l and l_result is None:
            l_result = listener.receive_data(to_l)
        to_d = listener.data_to_send()
        if to_d and d_result is None:
            d_result = dialer.receive_data(to_d)
        if d_result and l_result:
            return d_result, l_result
    raise AssertionError("negotiation did not finish")


def test_dialer_and_listener_negotiate_second_choice():
    d = MultistreamDialer(["/mplex/6.7.0", "/yamux/1.0.0"])
    lst = MultistreamListener(supported("/yamux/1.0.0"))
    assert pump(d, lst) == (Agreed("/yamux/1.0.0", b""), Agreed("/yamux/1.0.0", b""))


def test_lazy_dialer_data_reaches_listener_as_leftover():
    d = MultistreamDialer(["/echo/1.0.0"], lazy=True)
    wire = d.data_to_send() + b"hello"
    lst = MultistreamListener(supported("/echo/1.0.0"))
    assert lst.receive_data(wire) == Agreed("/echo/1.0.0", b"hello")
    assert d.receive_data(lst.data_to_send() + b"HELLO") == Agreed("/echo/1.0.0", b"HELLO")


# ---------------------------------------------------------------- properties

@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=10))
def test_arbitrary_bytes_only_raise_multistream_error(data, cuts):
    for engine in (MultistreamListener(lambda p: p == "/a", list_protocols=lambda: ["/a"]),
                   MultistreamDialer(["/a", "/b"])):
        pos = 0
        try:
            for cut in cuts + [len(data)]:
                if engine.receive_data(data[pos:pos + cut]) is not None:
                    break
                pos += cut
        except ProtocolError as exc:
            assert isinstance(exc, MultistreamError)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n",
                                               blacklist_categories=("Cs",)),
                        min_size=1, max_size=40).map(lambda s: "/" + s),
                min_size=1, max_size=5, unique=True),
       st.data())
def test_negotiation_picks_first_supported(protocols, data):
    accepted = data.draw(st.sets(st.sampled_from(protocols)))
    d = MultistreamDialer(protocols)
    lst = MultistreamListener(lambda p: p in accepted)
    expected = next((p for p in protocols if p in accepted), None)
    if expected is None:
        with pytest.raises(NegotiationFailed):
            pump(d, lst)
    else:
        assert pump(d, lst) == (Agreed(expected, b""), Agreed(expected, b""))
