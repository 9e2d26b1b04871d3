"""Key material generated per test run: APNs .p8 keys and FCM service accounts."""

from __future__ import annotations

import uuid

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def rsa_key_pem(key: PrivateKeyTypes) -> bytes:
    """Return any private key as PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def apns_key_pem() -> tuple[bytes, ec.EllipticCurvePublicKey]:
    """Return a new APNs key as .p8 PEM and its public key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return rsa_key_pem(key), key.public_key()


def service_account_json(project_id: str) -> tuple[bytes, str]:
    """Return a service-account JSON for `project_id` and its public key PEM."""
    key = rsa.generate_private_key(65537, 2048)
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": uuid.uuid4().hex,
        "private_key": rsa_key_pem(key).decode(),
        "client_email": f"push@{project_id}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return orjson.dumps(info), public_pem(key)
