"""Provider tokens: APNs JWT reuse and replacement, OAuth token caching and refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.providers.keys import apns_key_pem, rsa_key_pem, service_account_json
from workers.providers.base import CredentialsInvalid
from workers.providers.tokens import (
    AccessToken,
    AccessTokenSource,
    ApnsTokenCache,
    HmsAccessTokenSource,
    TokenUnavailable,
    load_apns_key,
    load_service_account,
)
from workers.providers.transport import HttpResponse, Transport


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_apns_token_claims_and_header() -> None:
    pem, public_key = apns_key_pem()
    cache = ApnsTokenCache(clock=FakeClock())
    token = cache.token(cache.signer("TEAM123456", "KEY1234567", pem))

    header = jwt.get_unverified_header(token.value)
    claims = jwt.decode(
        token.value, public_key, algorithms=["ES256"], options={"verify_iat": False}
    )
    assert header["alg"] == "ES256"
    assert header["kid"] == "KEY1234567"
    assert claims == {"iss": "TEAM123456", "iat": 1_800_000_000}


def test_apns_token_reused_for_50_minutes() -> None:
    pem, _public = apns_key_pem()
    clock = FakeClock()
    cache = ApnsTokenCache(clock=clock)
    signer = cache.signer("TEAM123456", "KEY1234567", pem)

    first = cache.token(signer)
    clock.now += 49 * 60
    assert cache.token(signer) is first

    clock.now += 60
    renewed = cache.token(signer)
    assert renewed.value != first.value
    assert renewed.issued_at == int(clock.now)


def test_apns_one_signer_per_team_and_key() -> None:
    pem, _public = apns_key_pem()
    cache = ApnsTokenCache(clock=FakeClock())

    first = cache.signer("TEAM123456", "KEY1234567", pem)
    assert cache.signer("TEAM123456", "KEY1234567", pem) is first
    assert cache.signer("TEAM123456", "KEY7654321", pem) is not first


def test_apns_signer_replaced_when_key_changes() -> None:
    pem, _public = apns_key_pem()
    other_pem, other_public = apns_key_pem()
    cache = ApnsTokenCache(clock=FakeClock())

    first = cache.signer("TEAM123456", "KEY1234567", pem)
    second = cache.signer("TEAM123456", "KEY1234567", other_pem)

    assert second is not first
    token = cache.token(second)
    assert (
        jwt.decode(token.value, other_public, algorithms=["ES256"], options={"verify_iat": False})[
            "iss"
        ]
        == "TEAM123456"
    )


def test_apns_rejected_token_replaced_once() -> None:
    pem, _public = apns_key_pem()
    clock = FakeClock()
    cache = ApnsTokenCache(clock=clock)
    signer = cache.signer("TEAM123456", "KEY1234567", pem)
    rejected = cache.token(signer)

    clock.now += 1
    first = cache.replace_rejected(signer, rejected.value)
    second = cache.replace_rejected(signer, rejected.value)

    assert first.value != rejected.value
    assert second is first
    assert cache.token(signer) is first


def test_apns_key_must_be_p256() -> None:
    other_curve = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(CredentialsInvalid, match="P-256"):
        load_apns_key(rsa_key_pem(other_curve))


def test_apns_key_must_be_pem() -> None:
    with pytest.raises(CredentialsInvalid, match="PEM"):
        load_apns_key(b"not a key")


def test_apns_key_rejects_rsa() -> None:
    with pytest.raises(CredentialsInvalid):
        load_apns_key(rsa_key_pem(rsa.generate_private_key(65537, 2048)))


class CountingSource(AccessTokenSource):
    def __init__(self, clock: FakeClock, lifetime_s: float = 3600.0) -> None:
        super().__init__(clock)
        self.fetches = 0
        self.lifetime_s = lifetime_s

    async def fetch(self) -> AccessToken:
        self.fetches += 1
        await asyncio.sleep(0)
        return AccessToken(f"token-{self.fetches}", self.clock() + self.lifetime_s)


async def test_access_token_single_flight() -> None:
    source = CountingSource(FakeClock())

    tokens = await asyncio.gather(*(source.token() for _ in range(50)))

    assert set(tokens) == {"token-1"}
    assert source.fetches == 1


async def test_access_token_refreshed_before_expiry() -> None:
    clock = FakeClock()
    source = CountingSource(clock)
    assert await source.token() == "token-1"

    clock.now += 3600 - 301
    assert await source.token() == "token-1"

    clock.now += 2
    assert await source.token() == "token-2"


async def test_access_token_invalidate_only_drops_that_token() -> None:
    source = CountingSource(FakeClock())
    assert await source.token() == "token-1"

    source.invalidate("some-older-token")
    assert await source.token() == "token-1"

    source.invalidate("token-1")
    assert await source.token() == "token-2"


class ScriptedTransport(Transport):
    def __init__(self, responses: Sequence[HttpResponse]) -> None:
        self.responses = list(responses)
        self.requests: list[tuple[str, str, bytes]] = []

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        self.requests.append((method, url, body))
        return self.responses.pop(0)

    async def aclose(self) -> None:
        pass


async def test_hms_token_request_uses_client_credentials() -> None:
    answer = orjson.dumps({"access_token": "hms-access", "expires_in": 3600})
    transport = ScriptedTransport([HttpResponse(200, {}, answer)])
    source = HmsAccessTokenSource(transport, "https://hms.test/token", "client", "s3cret&x")

    assert await source.token() == "hms-access"
    method, url, body = transport.requests[0]
    assert (method, url) == ("POST", "https://hms.test/token")
    assert body == b"grant_type=client_credentials&client_id=client&client_secret=s3cret%26x"


async def test_hms_token_rejected_credentials() -> None:
    answer = orjson.dumps({"error": 1101, "error_description": "invalid client"})
    transport = ScriptedTransport([HttpResponse(400, {}, answer)])
    source = HmsAccessTokenSource(transport, "https://hms.test/token", "client", "wrong")

    with pytest.raises(TokenUnavailable) as caught:
        await source.token()
    assert caught.value.credentials_rejected is True


async def test_hms_token_server_error_is_not_credentials() -> None:
    transport = ScriptedTransport([HttpResponse(503, {}, b"")])
    source = HmsAccessTokenSource(transport, "https://hms.test/token", "client", "secret")

    with pytest.raises(TokenUnavailable) as caught:
        await source.token()
    assert caught.value.credentials_rejected is False


def test_service_account_token_url_overridden() -> None:
    info, _public = service_account_json("project-1")
    credentials = load_service_account(info, "https://127.0.0.1:9/token")

    assert credentials._token_uri == "https://127.0.0.1:9/token"
    assert credentials.service_account_email == "push@project-1.iam.gserviceaccount.com"


def test_service_account_invalid_json() -> None:
    with pytest.raises(CredentialsInvalid, match="service-account"):
        load_service_account(b"{not json", "https://127.0.0.1:9/token")
    with pytest.raises(CredentialsInvalid, match="service-account"):
        load_service_account(b'{"type": "service_account"}', "https://127.0.0.1:9/token")
