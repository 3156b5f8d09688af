"""The libp2p TLS certificate: make ours, verify a peer's (libp2p/specs ``tls/tls.md``).

A libp2p TLS certificate is self-signed by a throw-away certificate key (ours: ECDSA
P-256, made once per node, as go-libp2p does). The host key is not used to sign
the certificate; instead the certificate carries the libp2p Public Key Extension
(OID ``1.3.6.1.4.1.53594.1.1``), whose value is the DER of::

    SignedKey ::= SEQUENCE {
        publicKey OCTET STRING,   -- the protobuf PublicKey of the host key
        signature OCTET STRING    -- host key's signature over
    }                             --   "libp2p-tls-handshake:" || SubjectPublicKeyInfo

(the spec's text says BIT STRING; go, rust, js and py all write OCTET STRING, which
we write, and we accept both on receipt).

What we send: the libp2p extension is the certificate's **first and only**
extension, non-critical (js-libp2p reads only ``extensions[0]``; go and py mark it
non-critical; every verifier we know accepts either).

What we accept: exactly one certificate, valid now, correctly self-signed with a
hash of at least 256 bits, carrying the libp2p extension anywhere among its
extensions (py-libp2p 0.8.1 puts basicConstraints and keyUsage before it),
critical or not, with no other critical extension we do not understand; the
extension's signature must verify with the host key it carries (all four libp2p
key types), and the host key's peer id must be the expected one when given.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple, Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtensionOID, NameOID

from ..errors import DecodeError, ProtocolError
from ..identity import Keypair, PeerId, PublicKey

__all__ = [
    "EXTENSION_OID", "SIGNATURE_PREFIX", "TlsError", "InvalidCertificate", "PeerIdMismatch",
    "CertifiedPeer", "make_certificate", "verify_certificate_chain",
    "encode_signed_key", "decode_signed_key",
]

#: The libp2p Public Key Extension's object identifier (IANA PEN 53594).
EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
#: What the host key signs, followed by the certificate's DER SubjectPublicKeyInfo.
SIGNATURE_PREFIX = b"libp2p-tls-handshake:"
#: The validity we give our certificates, starting an hour back for clock skew
#: (go-libp2p uses the same 100 years: the key is ours and changes per node start).
VALIDITY = datetime.timedelta(days=365 * 100)
CLOCK_SKEW = datetime.timedelta(hours=1)
#: Critical extensions a peer's certificate may carry besides ours: those whose
#: meaning cannot weaken the checks below (we never use the certificate as a CA).
UNDERSTOOD_CRITICAL = frozenset({
    EXTENSION_OID, ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
})
#: Signature hashes allowed on the self-signature (the spec forbids < 256 bits).
_ALLOWED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

CertificateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]


class TlsError(ProtocolError):
    """The remote broke the libp2p TLS handshake (bad TLS, bad certificate...)."""


class InvalidCertificate(TlsError):
    """The remote's certificate breaks a libp2p TLS rule; the message says which."""


class PeerIdMismatch(TlsError):
    """The remote authenticated as a different peer than the one we dialed."""

    def __init__(self, expected: PeerId, actual: PeerId) -> None:
        super().__init__(f"expected peer {expected} but the remote is {actual}")
        self.expected = expected
        self.actual = actual


class CertifiedPeer(NamedTuple):
    """What a verified certificate proves: the remote's host key and peer id."""

    peer_id: PeerId
    public_key: PublicKey


# -- SignedKey DER ----------------------------------------------------------------------

_SEQUENCE, _OCTET_STRING, _BIT_STRING = 0x30, 0x04, 0x03


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """One DER element at ``pos``: ``(tag, content_start, content_end)``.

    Strict DER: single-byte tags, definite minimal lengths. Raises DecodeError.
    """
    if pos + 2 > len(data):
        raise DecodeError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise DecodeError("unsupported or truncated DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise DecodeError("non-minimal DER length")
        pos += count
    if pos + length > len(data):
        raise DecodeError("DER element longer than its container")
    return tag, pos, pos + length


def encode_signed_key(public_key: bytes, signature: bytes) -> bytes:
    """The DER ``SignedKey`` (two OCTET STRINGs) that is the extension's value."""
    return _der(_SEQUENCE, _der(_OCTET_STRING, public_key) + _der(_OCTET_STRING, signature))


def _string_content(data: bytes, tag: int, start: int, end: int) -> bytes:
    if tag == _OCTET_STRING:
        return data[start:end]
    if tag == _BIT_STRING and end > start and data[start] == 0:  # no unused bits
        return data[start + 1:end]
    raise DecodeError("SignedKey fields must be OCTET STRINGs")


def decode_signed_key(der: bytes) -> tuple[bytes, bytes]:
    """Decode a DER ``SignedKey`` into ``(public_key_protobuf, signature)``.

    Raises :class:`DecodeError` unless ``der`` is exactly one SEQUENCE of two strings.
    """
    der = bytes(der)
    tag, start, end = _read_tlv(der, 0)
    if tag != _SEQUENCE or end != len(der):
        raise DecodeError("SignedKey is not a single DER SEQUENCE")
    fields = []
    pos = start
    while pos < end:
        tag, field_start, pos = _read_tlv(der, pos)
        fields.append(_string_content(der, tag, field_start, pos))
    if len(fields) != 2:
        raise DecodeError(f"SignedKey has {len(fields)} fields, expected 2")
    return fields[0], fields[1]


def _raw_subject_public_key_info(cert: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo exactly as encoded in the certificate (what was signed).

    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
    issuer, validity, subject, subjectPublicKeyInfo, ... }
    """
    tbs = cert.tbs_certificate_bytes
    _tag, pos, _end = _read_tlv(tbs, 0)
    if tbs[pos] == 0xA0:  # explicit version
        pos = _read_tlv(tbs, pos)[2]
    for _field in range(5):  # serial, signature algorithm, issuer, validity, subject
        pos = _read_tlv(tbs, pos)[2]
    _tag, _start, end = _read_tlv(tbs, pos)
    return tbs[pos:end]


# -- making our certificate -------------------------------------------------------------

def make_certificate(keypair: Keypair, cert_key: CertificateKey | None = None, *,
                     now: datetime.datetime | None = None) -> tuple[CertificateKey,
                                                                    x509.Certificate]:
    """A fresh libp2p TLS certificate for ``keypair``: ``(certificate key, certificate)``.

    ``cert_key`` defaults to a new ECDSA P-256 key (what go, rust, js and py accept).
    """
    if cert_key is None:
        cert_key = ec.generate_private_key(ec.SECP256R1())
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    spki = cert_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    signed_key = encode_signed_key(keypair.public_key.to_protobuf(),
                                   keypair.sign(SIGNATURE_PREFIX + spki))
    serial = x509.random_serial_number()
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial))])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).serial_number(serial)
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + VALIDITY)
        .public_key(cert_key.public_key())
        .add_extension(x509.UnrecognizedExtension(EXTENSION_OID, signed_key), critical=False)
    )
    algorithm = None if isinstance(cert_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return cert_key, builder.sign(cert_key, algorithm)


# -- verifying the peer's certificate ---------------------------------------------------

def verify_certificate_chain(chain: Sequence[bytes | x509.Certificate], *,
                             expected_peer: PeerId | None = None,
                             now: datetime.datetime | None = None) -> CertifiedPeer:
    """Check a peer's certificate chain by the libp2p TLS rules; the proven identity.

    ``chain``: DER bytes or parsed certificates, as the peer sent them. Raises
    :class:`InvalidCertificate` (saying which rule failed) or :class:`PeerIdMismatch`.
    """
    if len(chain) != 1:
        raise InvalidCertificate(f"expected exactly one certificate, got {len(chain)}")
    cert = _parse(chain[0])
    _check_validity(cert, now or datetime.datetime.now(datetime.timezone.utc))
    _check_self_signature(cert)
    signed_key = _libp2p_extension(cert)
    public_key = _verify_signed_key(signed_key, _raw_subject_public_key_info(cert))
    peer_id = PeerId.from_public_key(public_key)
    if expected_peer is not None and peer_id != expected_peer:
        raise PeerIdMismatch(expected_peer, peer_id)
    return CertifiedPeer(peer_id, public_key)


def _parse(cert: bytes | x509.Certificate) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    try:
        return x509.load_der_x509_certificate(bytes(cert))
    except (ValueError, x509.InvalidVersion) as exc:
        raise InvalidCertificate(f"malformed certificate: {exc}") from exc


def _check_validity(cert: x509.Certificate, now: datetime.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise InvalidCertificate(f"certificate not valid before {cert.not_valid_before_utc}")
    if now > cert.not_valid_after_utc:
        raise InvalidCertificate(f"certificate expired at {cert.not_valid_after_utc}")


def _check_self_signature(cert: x509.Certificate) -> None:
    try:
        algorithm = cert.signature_hash_algorithm
        if algorithm is not None and not isinstance(algorithm, _ALLOWED_HASHES):
            raise InvalidCertificate(f"certificate signed with weak hash {algorithm.name}")
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        # ValueError covers explicit (non-named) curve parameters, which cryptography
        # refuses to load: the spec requires rejecting them.
        raise InvalidCertificate(f"certificate self-signature invalid: {exc!r}") from exc


def _libp2p_extension(cert: x509.Certificate) -> bytes:
    """The libp2p extension's value; rejects unknown critical extensions."""
    try:
        extensions = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension) as exc:  # malformed or duplicated
        raise InvalidCertificate(f"certificate extensions malformed: {exc}") from exc
    value = None
    for ext in extensions:
        if ext.critical and ext.oid not in UNDERSTOOD_CRITICAL:
            raise InvalidCertificate(f"unknown critical extension {ext.oid.dotted_string}")
        if ext.oid == EXTENSION_OID:
            value = bytes(ext.value.value)
    if value is None:
        raise InvalidCertificate("certificate lacks the libp2p public key extension")
    return value


def _verify_signed_key(signed_key: bytes, spki: bytes) -> PublicKey:
    try:
        key_bytes, signature = decode_signed_key(signed_key)
        public_key = PublicKey.from_protobuf(key_bytes)
    except DecodeError as exc:  # also KeyDecodeError / UnsupportedKeyType
        raise InvalidCertificate(f"libp2p extension malformed: {exc}") from exc
    if not public_key.verify(SIGNATURE_PREFIX + spki, signature):
        raise InvalidCertificate("libp2p extension's host key signature is invalid")
    return public_key
