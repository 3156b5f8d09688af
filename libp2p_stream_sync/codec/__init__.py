"""Stateless codecs: varints, protobuf, base58, multihash, CID."""
