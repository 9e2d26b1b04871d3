"""APNs client: `POST /3/device/<token>` over HTTP/2 with an ES256 provider token.

One client serves one application, with one transport (set of connections) per APNs
environment, so a connection only ever carries one team's key as Apple requires.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson

from workers.providers.base import (
    ApplicationCredentials,
    CredentialsMissing,
    EnvironmentMismatch,
    Outcome,
    Platform,
    PreparedPayload,
    ProviderClient,
    ProviderEndpoints,
    SendResult,
)
from workers.providers.outcomes import classify_apns
from workers.providers.tokens import APNS_TOKENS, ApnsSigner, ApnsTokenCache, ProviderToken
from workers.providers.transport import (
    HttpResponse,
    Transport,
    TransportError,
    TransportFactory,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

DEVELOPMENT = "development"
PRODUCTION = "production"

# Apple returns TooManyProviderTokenUpdates when one connection carries a new provider
# token less than 20 minutes after the previous one.
MIN_TOKEN_SWITCH_INTERVAL_S = 20 * 60


def resolve_environment(device: str | None, application: str | None, default: str) -> str:
    """Return the APNs environment for one device, as the original server decides it.

    The application's environment (else the default) applies to devices without one.
    A production device goes to production. A development device goes to development
    only when the application's environment is development; otherwise it raises
    EnvironmentMismatch.
    """
    effective = application or default
    if device is None:
        return effective
    if device == PRODUCTION:
        return PRODUCTION
    if device == DEVELOPMENT and effective == DEVELOPMENT:
        return DEVELOPMENT
    raise EnvironmentMismatch(
        f"device environment {device!r} does not match the application's {effective!r}"
    )


class EnvironmentLane:
    """The transport of one APNs environment and the provider token its connections carry."""

    def __init__(self, base_url: str, transport: Transport) -> None:
        self.base_url = base_url.rstrip("/") + "/3/device/"
        self.transport = transport
        self.token: str | None = None
        self.token_switched_at: float | None = None

    async def use_token(self, token: ProviderToken, now: float) -> None:
        """Record a token change; renew the connections if the last one was too recent."""
        if token.value == self.token:
            return
        recent = (
            self.token_switched_at is not None
            and now - self.token_switched_at < MIN_TOKEN_SWITCH_INTERVAL_S
        )
        self.token = token.value
        self.token_switched_at = now
        if recent:
            logger.info("provider token changed within 20 minutes; opening new connections")
            await self.transport.renew_connection(None)


class ApnsClient(ProviderClient):
    """Sends to APNs for one application (team, key, bundle id)."""

    def __init__(
        self,
        *,
        app_id: str,
        signer: ApnsSigner,
        bundle: str,
        app_environment: str | None,
        endpoints: ProviderEndpoints,
        transport_factory: TransportFactory,
        tokens: ApnsTokenCache = APNS_TOKENS,
    ) -> None:
        self.app_id = app_id
        self.signer = signer
        self.bundle = bundle
        self.app_environment = app_environment
        self.endpoints = endpoints
        self.transport_factory = transport_factory
        self.tokens = tokens
        self.lanes: dict[str, EnvironmentLane] = {}

    @classmethod
    def from_credentials(
        cls,
        credentials: ApplicationCredentials,
        endpoints: ProviderEndpoints,
        transport_factory: TransportFactory,
        tokens: ApnsTokenCache = APNS_TOKENS,
    ) -> ApnsClient:
        """Build the client, raising CredentialsMissing or CredentialsInvalid."""
        key_id = credentials.apns_key_id
        team_id = credentials.apns_team_id
        bundle = credentials.apns_bundle
        pem = credentials.apns_private_key
        if not (key_id and team_id and bundle and pem):
            raise CredentialsMissing(
                f"application {credentials.app_id!r} has no complete APNs credentials"
                " (key id, team id, bundle id and private key)"
            )
        return cls(
            app_id=credentials.app_id,
            signer=tokens.signer(team_id, key_id, pem),
            bundle=bundle,
            app_environment=credentials.apns_environment,
            endpoints=endpoints,
            transport_factory=transport_factory,
            tokens=tokens,
        )

    def lane(self, environment: str) -> EnvironmentLane:
        lane = self.lanes.get(environment)
        if lane is None:
            base_url = (
                self.endpoints.apns_development_url
                if environment == DEVELOPMENT
                else self.endpoints.apns_production_url
            )
            lane = EnvironmentLane(base_url, self.transport_factory())
            self.lanes[environment] = lane
        return lane

    async def send(
        self, token: str, payload: PreparedPayload, *, apns_id: str, environment: str | None
    ) -> SendResult:
        if payload.platform is not Platform.APNS:
            raise ValueError(f"payload for {payload.platform} given to the APNs client")
        try:
            resolved = resolve_environment(
                environment, self.app_environment, self.endpoints.apns_default_environment
            )
        except EnvironmentMismatch as error:
            logger.warning("application %s: %s", self.app_id, error)
            return SendResult(Outcome.MESSAGE_REJECTED, reason="environment_mismatch")

        lane = self.lane(resolved)
        provider_token = self.tokens.token(self.signer)
        result, response = await self.post(lane, provider_token, token, payload, apns_id)
        if result.reason != "ExpiredProviderToken" or response is None:
            return result

        # Apple: after ExpiredProviderToken sign a new token, use it on a new connection
        # (the old one may stay unusable), and retry once.
        logger.warning(
            "APNs rejected the provider token of team %s as expired; retrying once",
            self.signer.team_id,
        )
        renewed = self.tokens.replace_rejected(self.signer, provider_token.value)
        await lane.transport.renew_connection(response.connection_id)
        result, _response = await self.post(lane, renewed, token, payload, apns_id)
        return result

    async def post(
        self,
        lane: EnvironmentLane,
        provider_token: ProviderToken,
        device_token: str,
        payload: PreparedPayload,
        apns_id: str,
    ) -> tuple[SendResult, HttpResponse | None]:
        await lane.use_token(provider_token, time.time())
        headers = [
            *payload.headers,
            ("apns-topic", self.bundle),
            ("apns-id", apns_id),
            ("authorization", "bearer " + provider_token.value),
        ]
        try:
            response = await lane.transport.request(
                "POST", lane.base_url + device_token, headers, payload.body_prefix
            )
        except TransportError as error:
            logger.info("APNs request of application %s failed: %s", self.app_id, error)
            return SendResult(Outcome.TRANSIENT, reason=error.reason), None
        return read_response(response, apns_id), response

    async def aclose(self) -> None:
        lanes, self.lanes = self.lanes, {}
        for lane in lanes.values():
            await lane.transport.aclose()


def read_response(response: HttpResponse, apns_id: str) -> SendResult:
    """Turn an APNs reply into a SendResult."""
    message_id = response.headers.get("apns-id", apns_id)
    if response.status == 200:
        return SendResult(Outcome.SENT, provider_message_id=message_id, status=200)

    reason, timestamp = read_error_body(response.body)
    outcome = classify_apns(response.status, reason)
    invalid_since = None
    if response.status == 410 and timestamp is not None:
        invalid_since = datetime.fromtimestamp(timestamp / 1000, UTC)
    return SendResult(
        outcome,
        reason=reason or f"http_{response.status}",
        provider_message_id=message_id,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        token_invalid_since=invalid_since,
        status=response.status,
    )


def read_error_body(body: bytes) -> tuple[str | None, int | None]:
    """Return the reason and the 410 timestamp (epoch ms) of an APNs error body."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    reason = answer.get("reason")
    timestamp = answer.get("timestamp")
    return (
        reason if isinstance(reason, str) else None,
        int(timestamp) if isinstance(timestamp, int | float) else None,
    )
