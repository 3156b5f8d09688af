"""The libp2p TLS certificate: ours is well-formed, peers' are checked by every spec rule.

Hostile certificates are built here with ``cryptography`` so that each test breaks one
rule; ``tests/engines/data/py_libp2p_*.pem`` are certificates made by py-libp2p 0.8.1
(see ``make_py_libp2p_certs.py`` there).
"""

from __future__ import annotations

import datetime
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from libp2p_stream_sync.engines.tls_certificate import (
    EXTENSION_OID, SIGNATURE_PREFIX, InvalidCertificate, PeerIdMismatch, TlsError,
    decode_signed_key, encode_signed_key, make_certificate, verify_certificate_chain,
)
from libp2p_stream_sync.errors import DecodeError, ProtocolError
from libp2p_stream_sync.identity import Keypair, KeyType, PeerId

DATA = pathlib.Path(__file__).resolve().parent / "data"
NOW = datetime.datetime.now(datetime.timezone.utc)
HOUR = datetime.timedelta(hours=1)
KEY_TYPES = [KeyType.ED25519, KeyType.SECP256K1, KeyType.ECDSA, KeyType.RSA]
_KEYPAIRS: dict[KeyType, Keypair] = {}


def keypair(key_type: KeyType = KeyType.ED25519) -> Keypair:
    if key_type not in _KEYPAIRS:
        _KEYPAIRS[key_type] = Keypair.generate(key_type)
    return _KEYPAIRS[key_type]


def spki_of(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def build(host: Keypair | None = None, *, cert_key=None, signer=None, signed_spki=None,
          signed_key: bytes | None = None, before=(), after=(), with_libp2p=True,
          critical=False, not_before=NOW - HOUR, not_after=NOW + HOUR,
          algorithm=hashes.SHA256()) -> x509.Certificate:
    """A certificate breaking at most the rules the arguments say.

    ``before``/``after``: (extension, critical) pairs placed around the libp2p one.
    ``signer``: the key signing the certificate (default: the certificate key).
    ``signed_spki``: what the host key signs instead of the certificate's SPKI.
    """
    host = host or keypair()
    cert_key = cert_key or ec.generate_private_key(ec.SECP256R1())
    if signed_key is None:
        spki = signed_spki if signed_spki is not None else spki_of(cert_key)
        signed_key = encode_signed_key(host.public_key.to_protobuf(),
                                       host.sign(SIGNATURE_PREFIX + spki))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libp2p")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .public_key(cert_key.public_key()))
    for ext, crit in before:
        builder = builder.add_extension(ext, critical=crit)
    if with_libp2p:
        builder = builder.add_extension(x509.UnrecognizedExtension(EXTENSION_OID, signed_key),
                                        critical=critical)
    for ext, crit in after:
        builder = builder.add_extension(ext, critical=crit)
    signer = signer or cert_key
    if isinstance(signer, ed25519.Ed25519PrivateKey):
        algorithm = None
    return builder.sign(signer, algorithm)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def rejected(chain, match: str, **kw) -> None:
    with pytest.raises(InvalidCertificate, match=match):
        verify_certificate_chain(chain, **kw)


# -- our certificate --------------------------------------------------------------------

@pytest.mark.parametrize("key_type", KEY_TYPES, ids=lambda t: t.name)
def test_our_certificate_verifies_for_every_host_key_type(key_type):
    host = keypair(key_type)
    _key, cert = make_certificate(host)
    peer = verify_certificate_chain([der(cert)], expected_peer=host.peer_id)
    assert peer.peer_id == host.peer_id
    assert peer.public_key == host.public_key


def test_our_certificate_has_the_libp2p_extension_first_and_only():
    _key, cert = make_certificate(keypair())
    extensions = list(cert.extensions)
    assert [e.oid for e in extensions] == [EXTENSION_OID]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc
    # The extension value is the DER SEQUENCE of two OCTET STRINGs.
    value = extensions[0].value.value
    assert value[0] == 0x30
    key, sig = decode_signed_key(value)
    assert key == keypair().public_key.to_protobuf()
    assert keypair().public_key.verify(SIGNATURE_PREFIX + spki_of(_key), sig)


def test_an_ed25519_certificate_key_works_too():
    host = keypair()
    _key, cert = make_certificate(host, ed25519.Ed25519PrivateKey.generate())
    assert verify_certificate_chain([cert]).peer_id == host.peer_id


# -- peers' certificates that must be accepted -----------------------------------------

@pytest.mark.parametrize("critical", [False, True], ids=["non-critical", "critical"])
def test_the_extension_may_be_critical_or_not(critical):
    cert = build(critical=critical)
    assert verify_certificate_chain([der(cert)]).peer_id == keypair().peer_id


def test_the_extension_is_accepted_after_other_extensions_as_py_libp2p_sends_it():
    cert = build(before=[(x509.BasicConstraints(ca=False, path_length=None), True),
                         (x509.KeyUsage(True, False, False, False, False, False, False,
                                        False, False), True)])
    assert list(cert.extensions)[2].oid == EXTENSION_OID
    assert verify_certificate_chain([der(cert)]).peer_id == keypair().peer_id


def test_unknown_non_critical_extensions_are_ignored():
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00")
    assert verify_certificate_chain([build(after=[(odd, False)])]).peer_id == keypair().peer_id


@pytest.mark.parametrize("name", ["ed25519", "secp256k1", "rsa"])
def test_py_libp2p_certificates_verify_to_their_peer_id(name):
    text = (DATA / f"py_libp2p_{name}.pem").read_text()
    cert = x509.load_pem_x509_certificate(text.encode())
    expected = PeerId.from_string(text.split("peer-id: ")[1].strip())
    assert [e.oid for e in cert.extensions][-1] == EXTENSION_OID  # not first
    assert verify_certificate_chain([der(cert)], expected_peer=expected).peer_id == expected


def test_signed_key_fields_may_be_bit_strings_as_the_spec_text_says():
    host = keypair()
    cert_key = ec.generate_private_key(ec.SECP256R1())
    key = host.public_key.to_protobuf()
    sig = host.sign(SIGNATURE_PREFIX + spki_of(cert_key))
    bits = b"\x30" + bytes([4 + len(key) + len(sig) + 2]) + b"\x03" + bytes([len(key) + 1]) \
        + b"\x00" + key + b"\x03" + bytes([len(sig) + 1]) + b"\x00" + sig
    cert = build(cert_key=cert_key, signed_key=bits)
    assert verify_certificate_chain([cert]).peer_id == host.peer_id


# -- hostile certificates ---------------------------------------------------------------

def test_the_errors_are_protocol_errors():
    assert issubclass(InvalidCertificate, TlsError)
    assert issubclass(PeerIdMismatch, TlsError)
    assert issubclass(TlsError, ProtocolError)


def test_missing_extension_is_rejected():
    rejected([build(with_libp2p=False)], "lacks the libp2p public key extension")


def test_wrong_peer_id_is_rejected_with_both_ids():
    other = Keypair.generate()
    with pytest.raises(PeerIdMismatch) as info:
        verify_certificate_chain([build()], expected_peer=other.peer_id)
    assert info.value.expected == other.peer_id
    assert info.value.actual == keypair().peer_id


def test_host_signature_over_another_key_is_rejected():
    other_spki = spki_of(ec.generate_private_key(ec.SECP256R1()))
    rejected([build(signed_spki=other_spki)], "host key signature is invalid")


def test_host_signature_with_a_flipped_bit_is_rejected():
    host = keypair()
    cert_key = ec.generate_private_key(ec.SECP256R1())
    sig = bytearray(host.sign(SIGNATURE_PREFIX + spki_of(cert_key)))
    sig[-1] ^= 1
    signed = encode_signed_key(host.public_key.to_protobuf(), bytes(sig))
    rejected([build(cert_key=cert_key, signed_key=signed)], "host key signature is invalid")


def test_bad_self_signature_is_rejected():
    cert = build(signer=ec.generate_private_key(ec.SECP256R1()))
    rejected([cert], "self-signature invalid")


def test_self_signature_with_a_hash_under_256_bits_is_rejected():
    # (cryptography no longer signs with SHA-1 or MD5; SHA-224 is the same rule.)
    rejected([build(algorithm=hashes.SHA224())], "weak hash sha224")


def test_expired_certificate_is_rejected():
    rejected([build(not_before=NOW - 3 * HOUR, not_after=NOW - HOUR)], "expired")


def test_not_yet_valid_certificate_is_rejected():
    rejected([build(not_before=NOW + HOUR, not_after=NOW + 3 * HOUR)], "not valid before")


def test_validity_is_checked_against_the_given_time():
    cert = build()
    rejected([cert], "expired", now=NOW + 2 * HOUR)
    assert verify_certificate_chain([cert], now=NOW).peer_id == keypair().peer_id


def test_unknown_critical_extension_is_rejected():
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00")
    rejected([build(after=[(odd, True)])], "unknown critical extension 1.2.3.4.5")


@pytest.mark.parametrize("count", [0, 2])
def test_chains_of_other_than_one_certificate_are_rejected(count):
    rejected([build() for _ in range(count)], f"exactly one certificate, got {count}")


@pytest.mark.parametrize("signed_key", [
    b"", b"\x30\x00", b"\x04\x00", b"\x30\x02\x04\x00", b"\x30\x04\x04\x00\x04\x00",
    b"\x30\x06\x04\x00\x04\x00\x04\x00", b"\x30\x04\x04\x00\x02\x00",
    b"\x30\x81\x04\x04\x00\x04\x00", b"\x30\x05\x04\x00\x04\x00",
], ids=repr)
def test_malformed_signed_key_is_rejected(signed_key):
    rejected([build(signed_key=signed_key)], "libp2p extension malformed")


def test_unsupported_host_key_type_is_rejected():
    signed = encode_signed_key(b"\x08\x07\x12\x01\x00", b"sig")  # Type = 7
    rejected([build(signed_key=signed)], "libp2p extension malformed")


@pytest.mark.parametrize("blob", [b"", b"\x30", b"garbage", b"\x30\x03\x02\x01\x00"], ids=repr)
def test_malformed_certificate_bytes_are_rejected(blob):
    rejected([blob], "malformed certificate")


def test_signed_key_round_trip_and_strict_decoding():
    long_key = bytes(300)
    encoded = encode_signed_key(long_key, b"s" * 5)
    assert decode_signed_key(encoded) == (long_key, b"s" * 5)
    with pytest.raises(DecodeError):
        decode_signed_key(encoded + b"\x00")
    with pytest.raises(DecodeError):  # non-minimal length
        decode_signed_key(b"\x30\x81\x04\x04\x00\x04\x00")


LIBP2P_OID_DER = bytes.fromhex("060a2b0601040183a25a0101")
ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def der_tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def resign(cert: x509.Certificate, key, old: bytes, new: bytes) -> bytes:
    """``cert`` (signed by a P-256 ``key``) with ``old`` replaced by ``new`` in its TBS
    bytes, signed again: breaks one rule that ``cryptography``'s builder enforces."""
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(old) == 1 and len(old) == len(new)
    tbs = tbs.replace(old, new)
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return der_tlv(0x30, tbs + ECDSA_WITH_SHA256 + der_tlv(0x03, b"\x00" + signature))


def test_resign_makes_a_valid_certificate():
    cert_key = ec.generate_private_key(ec.SECP256R1())
    same = resign(build(cert_key=cert_key), cert_key, LIBP2P_OID_DER, LIBP2P_OID_DER)
    assert verify_certificate_chain([same]).peer_id == keypair().peer_id


def test_a_duplicated_libp2p_extension_is_rejected():
    cert_key = ec.generate_private_key(ec.SECP256R1())
    decoy = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.2")  # the libp2p OID but the last arc
    cert = build(cert_key=cert_key,
                 after=[(x509.UnrecognizedExtension(decoy, b"\x05\x00"), False)])
    duplicated = resign(cert, cert_key, LIBP2P_OID_DER[:-1] + b"\x02", LIBP2P_OID_DER)
    rejected([duplicated], "extensions malformed")


def test_an_unknown_x509_version_is_rejected():
    """A fuzzer finding: cryptography raises InvalidVersion, which is no ValueError."""
    cert_key = ec.generate_private_key(ec.SECP256R1())
    v18 = resign(build(cert_key=cert_key), cert_key, b"\xa0\x03\x02\x01\x02",
                 b"\xa0\x03\x02\x01\x12")
    rejected([v18], "malformed certificate: 18 is not a valid X509 version")
