"""Parsing and signature checks for the compact JWTs that APNs and Google OAuth receive.

Hand-rolled instead of PyJWT because APNs accepts ES256 signatures both as raw R||S
(RFC 7518, what PyJWT and golang-jwt send) and as DER (what Java's SHA256withECDSA and so
pushy send), and PyJWT verifies only the raw form.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ES256_RAW_SIGNATURE_BYTES = 64


class MalformedJwt(ValueError):
    """The token is not three base64url parts with JSON objects for header and claims."""


@dataclass(frozen=True)
class ParsedJwt:
    """A JWT split into its parts; `signing_input` is what the signature covers."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_jwt(token: str) -> ParsedJwt:
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedJwt(f"expected 3 dot-separated parts, found {len(parts)}")
    try:
        header = orjson.loads(_b64url_decode(parts[0]))
        claims = orjson.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as error:
        raise MalformedJwt(str(error)) from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise MalformedJwt("header and claims must be JSON objects")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return ParsedJwt(header, claims, signing_input, signature)


def verify_es256(parsed: ParsedJwt, public_key: ec.EllipticCurvePublicKey) -> bool:
    """Check an ES256 signature given raw (64 bytes) or DER-encoded."""
    signature = parsed.signature
    if len(signature) == ES256_RAW_SIGNATURE_BYTES:
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        signature = encode_dss_signature(r, s)
    try:
        public_key.verify(signature, parsed.signing_input, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_rs256(parsed: ParsedJwt, public_key: rsa.RSAPublicKey) -> bool:
    try:
        public_key.verify(
            parsed.signature, parsed.signing_input, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _b64url_decode(part: str) -> bytes:
    padded = part + "=" * (-len(part) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))
