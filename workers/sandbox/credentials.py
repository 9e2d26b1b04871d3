"""Throwaway provider credentials for tests, demos and benchmarks against the sandbox.

`ApnsSigningKey` stands in for a .p8 key, `FcmServiceAccount` for a Google service-account
JSON file, `HmsClientCredentials` for a Huawei OAuth client. Each can produce what the real
client would send (provider token, OAuth assertion) and the registration the sandbox needs.
"""

from __future__ import annotations

import base64
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


def _random_id(length: int = 10) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class ApnsSigningKey:
    """An EC P-256 token-auth key with its key ID, team ID and bundle ID."""

    key_id: str
    team_id: str
    bundle_id: str
    private_key_pem: str
    public_key_pem: str

    @classmethod
    def generate(
        cls, team_id: str | None = None, bundle_id: str = "com.example.app"
    ) -> ApnsSigningKey:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(
            key_id=_random_id(),
            team_id=team_id or _random_id(),
            bundle_id=bundle_id,
            private_key_pem=_private_pem(key),
            public_key_pem=_public_pem(key),
        )

    def provider_token(self, issued_at: float | None = None, der_signature: bool = False) -> str:
        """Sign an ES256 provider token; `der_signature` mimics Java clients such as pushy."""
        iat = int(time.time() if issued_at is None else issued_at)
        token = jwt.encode(
            {"iss": self.team_id, "iat": iat},
            self.private_key_pem,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        if not der_signature:
            return token
        header, claims, _ = token.split(".")
        key = serialization.load_pem_private_key(self.private_key_pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        der = key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        return f"{header}.{claims}.{_b64url(der)}"

    def registration(self, environment: str | None = None) -> dict[str, Any]:
        """Return the body of the sandbox's `POST /apps/apns`."""
        return {
            "key_id": self.key_id,
            "team_id": self.team_id,
            "bundle_ids": [self.bundle_id],
            "public_key_pem": self.public_key_pem,
            "environment": environment,
        }


@dataclass(frozen=True)
class FcmServiceAccount:
    """An RSA service account of one Firebase project."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key_pem: str
    public_key_pem: str

    @classmethod
    def generate(cls, project_id: str = "sandbox-project") -> FcmServiceAccount:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(
            project_id=project_id,
            client_email=f"push-{_random_id(6).lower()}@{project_id}.iam.gserviceaccount.com",
            private_key_id=secrets.token_hex(20),
            private_key_pem=_private_pem(key),
            public_key_pem=_public_pem(key),
        )

    def service_account_info(self, token_uri: str = GOOGLE_TOKEN_URL) -> dict[str, str]:
        """Return the service-account JSON Google issues, with `token_uri` set as given."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "universe_domain": "googleapis.com",
        }

    def assertion(
        self,
        audience: str = GOOGLE_TOKEN_URL,
        scope: str = FCM_SCOPE,
        issued_at: float | None = None,
        lifetime_s: int = 3600,
    ) -> str:
        """Sign the RS256 JWT-bearer assertion that google-auth sends to the token URL."""
        iat = int(time.time() if issued_at is None else issued_at)
        claims = {
            "iss": self.client_email,
            "scope": scope,
            "aud": audience,
            "iat": iat,
            "exp": iat + lifetime_s,
        }
        return jwt.encode(
            claims, self.private_key_pem, algorithm="RS256", headers={"kid": self.private_key_id}
        )

    def registration(self) -> dict[str, Any]:
        """Return the body of the sandbox's `POST /apps/fcm`."""
        return {
            "project_id": self.project_id,
            "client_email": self.client_email,
            "public_key_pem": self.public_key_pem,
            "private_key_id": self.private_key_id,
        }


@dataclass(frozen=True)
class HmsClientCredentials:
    """A Huawei OAuth client; its client ID doubles as the App ID in send paths."""

    client_id: str
    client_secret: str

    @classmethod
    def generate(cls) -> HmsClientCredentials:
        return cls(
            client_id=str(100000000 + secrets.randbelow(900000000)),
            client_secret=secrets.token_hex(32),
        )

    def registration(self) -> dict[str, Any]:
        """Return the body of the sandbox's `POST /apps/hms`."""
        return {"client_id": self.client_id, "client_secret": self.client_secret}


def _private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
