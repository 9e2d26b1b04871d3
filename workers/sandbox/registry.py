"""Applications registered with the sandbox: APNs signing keys, FCM service accounts, HMS apps.

The sandbox stores only public halves (and the HMS client secret, which is a shared secret
by design). Registration replaces an earlier entry with the same identifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class InvalidRegistration(ValueError):
    """A registration request carries a key of the wrong type or unparsable PEM."""


@dataclass
class ApnsKey:
    """A token-auth signing key (.p8) of one team and the bundle IDs it may push to."""

    key_id: str
    team_id: str
    bundle_ids: frozenset[str]
    public_key: ec.EllipticCurvePublicKey
    # None means a key valid in both environments, like keys created before 2025.
    environment: str | None = None


@dataclass
class FcmAccount:
    """A Google service account allowed to send for one Firebase project."""

    project_id: str
    client_email: str
    public_key: rsa.RSAPublicKey
    private_key_id: str | None = None


@dataclass
class HmsApp:
    """A Huawei OAuth client; `app_ids` are the IDs accepted in the send path."""

    client_id: str
    client_secret: str
    app_ids: frozenset[str]


@dataclass
class AppRegistry:
    """All registered applications, looked up by the identifier each protocol carries."""

    apns_keys: dict[str, ApnsKey] = field(default_factory=dict)
    fcm_accounts: dict[str, FcmAccount] = field(default_factory=dict)
    hms_apps: dict[str, HmsApp] = field(default_factory=dict)
    # Incremented on every change, so services know when to drop their verification caches.
    version: int = 0

    def add_apns_key(
        self,
        key_id: str,
        team_id: str,
        bundle_ids: list[str],
        public_key_pem: str,
        environment: str | None = None,
    ) -> ApnsKey:
        public_key = _load_public_key(public_key_pem)
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise InvalidRegistration(f"APNs key {key_id!r} must be an EC P-256 public key")
        if environment not in (None, "development", "production"):
            raise InvalidRegistration(
                f"APNs key environment must be development or production, not {environment!r}"
            )
        key = ApnsKey(key_id, team_id, frozenset(bundle_ids), public_key, environment)
        self.apns_keys[key_id] = key
        self.version += 1
        return key

    def team_bundle_ids(self, team_id: str) -> frozenset[str]:
        """Return every bundle ID registered under any key of `team_id`."""
        bundle_ids: set[str] = set()
        for key in self.apns_keys.values():
            if key.team_id == team_id:
                bundle_ids |= key.bundle_ids
        return frozenset(bundle_ids)

    def add_fcm_account(
        self,
        project_id: str,
        client_email: str,
        public_key_pem: str,
        private_key_id: str | None = None,
    ) -> FcmAccount:
        public_key = _load_public_key(public_key_pem)
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidRegistration(f"FCM account {client_email!r} must have an RSA public key")
        account = FcmAccount(project_id, client_email, public_key, private_key_id)
        self.fcm_accounts[client_email] = account
        self.version += 1
        return account

    def add_hms_app(
        self, client_id: str, client_secret: str, app_ids: list[str] | None = None
    ) -> HmsApp:
        # The Huawei App ID and the OAuth client ID are the same number for most apps.
        app = HmsApp(client_id, client_secret, frozenset(app_ids or [client_id]))
        self.hms_apps[client_id] = app
        self.version += 1
        return app

    def clear(self) -> None:
        self.apns_keys.clear()
        self.fcm_accounts.clear()
        self.hms_apps.clear()
        self.version += 1

    def summary(self) -> dict[str, object]:
        """Return the registered identifiers, without key material or secrets."""
        return {
            "apns": [
                {
                    "key_id": key.key_id,
                    "team_id": key.team_id,
                    "bundle_ids": sorted(key.bundle_ids),
                    "environment": key.environment,
                }
                for key in self.apns_keys.values()
            ],
            "fcm": [
                {"project_id": account.project_id, "client_email": account.client_email}
                for account in self.fcm_accounts.values()
            ],
            "hms": [
                {"client_id": app.client_id, "app_ids": sorted(app.app_ids)}
                for app in self.hms_apps.values()
            ],
        }


def _load_public_key(pem: str) -> object:
    """Load a public key from a PEM public key, or take the public half of a private key."""
    data = pem.encode()
    try:
        if b"PRIVATE KEY" in data:
            return serialization.load_pem_private_key(data, password=None).public_key()
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise InvalidRegistration(f"invalid PEM key: {error}") from error
