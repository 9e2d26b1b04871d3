"""Authentication tokens of the providers: APNs provider tokens and OAuth 2.0 access tokens.

- APNs: an ES256 JWT (`kid` = key id, `iss` = team id, `iat`), one per (team, key) per
  process, reused for 50 minutes. Apple rejects a token older than one hour
  (ExpiredProviderToken) and a token change on one connection less than 20 minutes
  after the previous one (TooManyProviderTokenUpdates).
- FCM: an access token from the service account, obtained by google-auth's JWT-bearer
  grant in a thread executor, refreshed before it expires.
- HMS: an access token from the OAuth client-credentials grant, valid one hour.

The OAuth sources are single-flight: concurrent callers wait for one refresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson
import pyreqwest.exceptions
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth import exceptions as google_exceptions
from google.auth import transport as google_transport
from google.oauth2 import service_account
from pyreqwest.client import SyncClientBuilder

from workers.providers.base import CredentialsInvalid
from workers.providers.transport import Transport, TransportError

logger = logging.getLogger(__name__)

APNS_TOKEN_LIFETIME_S = 50 * 60
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# Refresh OAuth tokens this long before they expire, so no request carries a token that
# expires in flight.
OAUTH_REFRESH_MARGIN_S = 300.0
TOKEN_REQUEST_TIMEOUT_S = 20.0
GOOGLE_DEFAULT_LIFETIME_S = 3600.0

Clock = Callable[[], float]


class TokenUnavailable(Exception):
    """An access token could not be obtained.

    `credentials_rejected` is true when the token endpoint rejected the credentials
    (outcome credentials); otherwise the failure is transient (network, 5xx).
    """

    def __init__(self, message: str, *, credentials_rejected: bool) -> None:
        super().__init__(message)
        self.credentials_rejected = credentials_rejected


# --- APNs provider tokens ---------------------------------------------------------


def load_apns_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an APNs .p8 key (PKCS#8 PEM, EC P-256), raising CredentialsInvalid."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise CredentialsInvalid(f"APNs private key is not a valid PEM key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise CredentialsInvalid("APNs private key must be an EC P-256 key (.p8 file)")
    return key


@dataclass(frozen=True, slots=True)
class ProviderToken:
    """A signed APNs provider token and its `iat` in epoch seconds."""

    value: str
    issued_at: int


class ApnsSigner:
    """Signs provider tokens for one (team, key) and keeps the current one."""

    def __init__(self, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self.key = key
        self.current: ProviderToken | None = None

    def sign(self, now: float) -> ProviderToken:
        issued_at = int(now)
        value = jwt.encode(
            {"iss": self.team_id, "iat": issued_at},
            self.key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self.current = ProviderToken(value, issued_at)
        logger.info("signed APNs provider token for team %s key %s", self.team_id, self.key_id)
        return self.current


class ApnsTokenCache:
    """APNs provider tokens, one per (team id, key id), reused for 50 minutes."""

    def __init__(self, clock: Clock = time.time, lifetime_s: float = APNS_TOKEN_LIFETIME_S) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.signers: dict[tuple[str, str], tuple[bytes, ApnsSigner]] = {}

    def signer(self, team_id: str, key_id: str, pem: bytes) -> ApnsSigner:
        """Return the signer of (team, key), replacing it when the key material changed."""
        fingerprint = hashlib.sha256(pem).digest()
        entry = self.signers.get((team_id, key_id))
        if entry is not None and entry[0] == fingerprint:
            return entry[1]
        signer = ApnsSigner(team_id, key_id, load_apns_key(pem))
        self.signers[(team_id, key_id)] = (fingerprint, signer)
        return signer

    def token(self, signer: ApnsSigner) -> ProviderToken:
        """Return the current token, signing a new one when it is 50 minutes old."""
        now = self.clock()
        current = signer.current
        if current is None or now - current.issued_at >= self.lifetime_s:
            return signer.sign(now)
        return current

    def replace_rejected(self, signer: ApnsSigner, rejected: str) -> ProviderToken:
        """Sign a new token after APNs rejected `rejected` as expired.

        Only the first caller for a rejected token signs; the others get that new token.
        """
        current = signer.current
        if current is not None and current.value != rejected:
            return current
        return signer.sign(self.clock())


# One provider-token cache per process, so every client of a (team, key) shares a token.
APNS_TOKENS = ApnsTokenCache()


# --- OAuth access tokens ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at: float


# After a failed token request, callers get the same error for this long instead of each
# asking the OAuth endpoint again: a batch of rows of an application whose credentials are
# rejected would otherwise make one token request per row.
FAILED_FETCH_HOLD_S = 10.0


class AccessTokenSource:
    """A cached OAuth access token, refreshed by one caller at a time."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.current: AccessToken | None = None
        self.lock = asyncio.Lock()
        self.failure: tuple[float, TokenUnavailable] | None = None

    def usable(self, token: AccessToken | None) -> bool:
        return token is not None and token.expires_at - OAUTH_REFRESH_MARGIN_S > self.clock()

    async def token(self) -> str:
        """Return a valid access token, refreshing it when it expires within 5 minutes.

        Raises TokenUnavailable.
        """
        current = self.current
        if current is not None and self.usable(current):
            return current.value
        async with self.lock:
            if self.current is None or not self.usable(self.current):
                self.raise_recent_failure()
                try:
                    self.current = await self.fetch_in_time()
                except TokenUnavailable as error:
                    self.failure = (self.clock() + FAILED_FETCH_HOLD_S, error)
                    raise
                self.failure = None
            return self.current.value

    async def fetch_in_time(self) -> AccessToken:
        """Fetch, bounded by a deadline: every send of the application waits on this."""
        try:
            return await asyncio.wait_for(self.fetch(), TOKEN_REQUEST_TIMEOUT_S + 5.0)
        except TimeoutError:
            raise TokenUnavailable(
                f"token request timed out after {TOKEN_REQUEST_TIMEOUT_S + 5.0:.0f} s",
                credentials_rejected=False,
            ) from None

    def raise_recent_failure(self) -> None:
        if self.failure is not None and self.failure[0] > self.clock():
            raise self.failure[1]

    def invalidate(self, rejected: str) -> None:
        """Drop `rejected` after the provider returned 401 for it; the next call refreshes."""
        if self.current is not None and self.current.value == rejected:
            self.current = None

    async def fetch(self) -> AccessToken:
        raise NotImplementedError


class PyreqwestGoogleRequest(google_transport.Request):
    """google-auth's synchronous HTTP hook on pyreqwest, trusting the configured CA."""

    def __init__(self, ca_pem: bytes | None) -> None:
        builder = SyncClientBuilder().https_only(True).follow_redirects(False)
        if ca_pem is not None:
            builder = builder.add_root_certificate_pem(ca_pem)
        self.client = builder.build()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google_transport.Response:
        builder = self.client.request(method, url).headers(dict(headers or {}))
        if body is not None:
            builder = builder.body_bytes(body)
        builder = builder.timeout(timedelta(seconds=timeout or TOKEN_REQUEST_TIMEOUT_S))
        try:
            response = builder.build().send()
            return GoogleResponse(
                response.status, dict(response.headers.items()), bytes(response.bytes())
            )
        except pyreqwest.exceptions.PyreqwestError as error:
            raise google_exceptions.TransportError(str(error)) from error  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.client.close()


class GoogleResponse(google_transport.Response):
    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self._status = status
        self._headers = headers
        self._data = data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


def load_service_account(
    service_account_json: bytes, token_url: str
) -> service_account.Credentials:
    """Parse a service-account JSON, raising CredentialsInvalid; tokens come from `token_url`."""
    try:
        info = orjson.loads(service_account_json)
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[FCM_SCOPE]
        )
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as error:
        raise CredentialsInvalid(f"FCM service-account JSON is invalid: {error}") from None
    with_token_url: service_account.Credentials = credentials.with_token_uri(token_url)
    return with_token_url


class GoogleAccessTokenSource(AccessTokenSource):
    """FCM access tokens from a service account, fetched by google-auth in a thread."""

    def __init__(
        self,
        credentials: service_account.Credentials,
        ca_pem: bytes | None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.credentials = credentials
        self.request = PyreqwestGoogleRequest(ca_pem)

    async def fetch(self) -> AccessToken:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.credentials.refresh, self.request)
        except google_exceptions.RefreshError as error:
            # google-auth raises RefreshError for rejected grants and, after its own
            # retries, for 5xx responses. Its `retryable` flag separates the two.
            rejected = not getattr(error, "retryable", False)
            raise TokenUnavailable(
                f"FCM token request failed: {error}", credentials_rejected=rejected
            ) from None
        except google_exceptions.TransportError as error:
            raise TokenUnavailable(
                f"FCM token request failed: {error}", credentials_rejected=False
            ) from None

        # google-auth stores the expiry as a naive UTC datetime; the source counts on
        # its own clock, so only the remaining lifetime carries over.
        expiry = self.credentials.expiry
        lifetime = GOOGLE_DEFAULT_LIFETIME_S
        if expiry is not None:
            lifetime = (expiry - datetime.now(UTC).replace(tzinfo=None)).total_seconds()
        logger.info("obtained FCM access token for %s", self.credentials.service_account_email)
        return AccessToken(str(self.credentials.token), self.clock() + lifetime)

    def close(self) -> None:
        self.request.close()


class HmsAccessTokenSource(AccessTokenSource):
    """HMS access tokens from the OAuth client-credentials grant."""

    def __init__(
        self,
        transport: Transport,
        token_url: str,
        client_id: str,
        client_secret: str,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.transport = transport
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret

    async def fetch(self) -> AccessToken:
        form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            }
        ).encode()
        headers = [("content-type", "application/x-www-form-urlencoded")]
        try:
            response = await self.transport.request(
                "POST", self.token_url, headers, form, timeout_s=TOKEN_REQUEST_TIMEOUT_S
            )
        except TransportError as error:
            raise TokenUnavailable(
                f"HMS token request failed: {error}", credentials_rejected=False
            ) from None
        return self.parse(response.status, response.body)

    def parse(self, status: int, body: bytes) -> AccessToken:
        if status >= 500:
            raise TokenUnavailable(
                f"HMS token request failed with HTTP {status}", credentials_rejected=False
            )
        try:
            answer = orjson.loads(body)
            value = str(answer["access_token"])
            expires_in = float(answer.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise TokenUnavailable(
                f"HMS token response (HTTP {status}) has no access token: {body[:200]!r}",
                credentials_rejected=400 <= status < 500,
            ) from None
        logger.info("obtained HMS access token for client %s", self.client_id)
        return AccessToken(value, self.clock() + expires_in)
