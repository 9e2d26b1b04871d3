"""API keys and roles.

PUSH_API_KEYS contains comma-separated `name:role[+role]:sha256-hex` entries. Keys are random
32-byte values, so an unsalted SHA-256 digest is enough to store them. A caller sends the
key as `Authorization: Bearer <key>`, or as HTTP Basic credentials with the entry's name as
user name and the key as password, which is what clients of the original can configure.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from dataclasses import dataclass

from shared.exceptions import AuthenticationRequired, PermissionDenied, SettingsError

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Role(enum.StrEnum):
    """A permission of an API key; admin includes every other role."""

    REGISTRAR = "registrar"
    SENDER = "sender"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key: its name, roles and the SHA-256 digest of the key."""

    name: str
    roles: frozenset[Role]
    digest: bytes

    def allows(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles


def parse_api_keys(text: str) -> list[ApiKey]:
    """Parse PUSH_API_KEYS; raise SettingsError naming the bad entry (never its digest)."""
    keys: list[ApiKey] = []
    for position, entry in enumerate(filter(None, (item.strip() for item in text.split(",")))):
        parts = entry.split(":")
        if len(parts) != 3 or not parts[0]:
            raise SettingsError(
                f"PUSH_API_KEYS entry {position + 1} must look like name:role[+role]:sha256-hex"
            )
        name, role_text, digest = parts
        try:
            roles = frozenset(Role(role) for role in role_text.split("+"))
        except ValueError:
            raise SettingsError(
                f"PUSH_API_KEYS entry {name!r} has an unknown role in {role_text!r};"
                " roles are registrar, sender and admin"
            ) from None
        if not SHA256_HEX.match(digest.lower()):
            raise SettingsError(
                f"PUSH_API_KEYS entry {name!r} must end with the 64 hex digits of the key's"
                " SHA-256 digest, e.g. from: printf %s KEY | sha256sum"
            )
        keys.append(ApiKey(name, roles, bytes.fromhex(digest)))
    return keys


def digest_key(key: str) -> bytes:
    # A header with bytes that are not UTF-8 arrives with surrogate escapes. It can match no
    # key, so it is hashed in a form that cannot fail.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def same_name(expected: str, given: str) -> bool:
    """Compare key names in constant time; compare_digest rejects non-ASCII str."""
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogateescape"), given.encode("utf-8", "surrogateescape")
    )


class Authenticator:
    """Finds the configured key of a request's Authorization header."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def authenticate(self, authorization: str | None) -> ApiKey:
        """Return the matching key; raise AuthenticationRequired."""
        name, secret = split_authorization(authorization)
        digest = digest_key(secret)
        found: ApiKey | None = None
        # Compare with every key, so the time taken does not tell which digest matched.
        for key in self.keys:
            matches = hmac.compare_digest(key.digest, digest)
            if matches and (name is None or same_name(key.name, name)):
                found = key
        if found is None:
            raise AuthenticationRequired("Invalid API key")
        return found

    @staticmethod
    def authorize(key: ApiKey, role: Role) -> None:
        """Raise PermissionDenied unless the key has the role (or admin)."""
        if not key.allows(role):
            raise PermissionDenied(f"API key {key.name!r} lacks the role {role.value}")


def split_authorization(authorization: str | None) -> tuple[str | None, str]:
    """Return (Basic user name or None, key) from an Authorization header."""
    if not authorization:
        raise AuthenticationRequired("Missing API key: send Authorization: Bearer <key>")
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return None, credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, ValueError):
            raise AuthenticationRequired("Malformed HTTP Basic credentials") from None
        name, separator, secret = decoded.partition(":")
        if separator and secret:
            return name, secret
    raise AuthenticationRequired("Unsupported Authorization header: use Bearer or Basic")
