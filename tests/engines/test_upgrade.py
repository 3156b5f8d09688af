"""The upgrade engine: multistream-select of a security protocol from a table, its
handshake, then the muxer (early or by multistream-select), without any I/O."""

from __future__ import annotations

import pytest

from libp2p_stream_sync.engines.noise import PeerIdMismatch
from libp2p_stream_sync.engines.upgrade import (NOISE, SecurityProtocol, Upgrade,
                                                prepare_identities)
from libp2p_stream_sync.errors import DialError
from libp2p_stream_sync.identity import Keypair

YAMUX, MPLEX = "/yamux/1.0.0", "/mplex/6.7.0"


def pair(dialer_muxers=(YAMUX,), listener_muxers=(YAMUX,), dialer_security=(NOISE,),
         listener_security=(NOISE,), expected=None):
    a, b = Keypair.generate(), Keypair.generate()
    dialer = Upgrade(a, initiator=True, expected_peer=expected, security=dialer_security,
                     muxers=dialer_muxers, identities=prepare_identities(a, dialer_security))
    listener = Upgrade(b, initiator=False, expected_peer=None, security=listener_security,
                       muxers=listener_muxers,
                       identities=prepare_identities(b, listener_security))
    return a, b, dialer, listener


def pump(x: Upgrade, y: Upgrade, rounds: int = 20) -> None:
    """Move wire bytes both ways (decrypting once secure) until nothing moves."""
    for _ in range(rounds):
        moved = False
        for src, dst in ((x, y), (y, x)):
            for chunk in src.data_to_send():
                moved = True
                if dst.transport is None:
                    dst.receive_data(chunk)
                else:
                    plain = dst.transport.receive_data(chunk)
                    if plain:
                        dst.receive_plain(plain)
        if not moved:
            return


@pytest.mark.parametrize("muxers", [(YAMUX,), (MPLEX, YAMUX)])
def test_both_sides_agree_on_security_muxer_and_peers(muxers):
    a, b, dialer, listener = pair(dialer_muxers=muxers, listener_muxers=(YAMUX, MPLEX))
    pump(dialer, listener)
    assert dialer.complete and listener.complete
    assert dialer.security_protocol == listener.security_protocol == "/noise"
    assert dialer.muxer_protocol == listener.muxer_protocol == muxers[0]
    assert dialer.remote_peer_id == b.peer_id and listener.remote_peer_id == a.peer_id


def test_a_second_table_entry_is_chosen_when_the_first_is_not_shared():
    other = SecurityProtocol("/other-security/1.0.0", NOISE.make_handshake,
                             NOISE.make_identity)
    _, _, dialer, listener = pair(dialer_security=(other, NOISE),
                                  listener_security=(NOISE,))
    pump(dialer, listener)
    assert dialer.complete and dialer.security_protocol == "/noise"


def test_no_common_security_protocol_is_a_dial_error():
    other = SecurityProtocol("/other-security/1.0.0", NOISE.make_handshake)
    _, _, dialer, listener = pair(dialer_security=(other,))
    with pytest.raises(DialError, match="does not support /other-security"):
        pump(dialer, listener)


def test_no_common_muxer_is_a_dial_error():
    _, _, dialer, listener = pair(dialer_muxers=(MPLEX,), listener_muxers=(YAMUX,))
    with pytest.raises(DialError, match="no common stream muxer"):
        pump(dialer, listener)


def test_the_wrong_peer_fails_the_handshake():
    _, _, dialer, listener = pair(expected=Keypair.generate().peer_id)
    with pytest.raises(PeerIdMismatch):
        pump(dialer, listener)
