"""HMS (Huawei Push Kit) client: `POST /v2/<project>/messages:send` with an OAuth token.

Huawei returns most results with HTTP 200 and a result code in the JSON body, so the
outcome is read from `code` first and from the HTTP status only without one.
"""

from __future__ import annotations

import logging

import orjson

from workers.providers.base import (
    ApplicationCredentials,
    CredentialsMissing,
    Outcome,
    Platform,
    PreparedPayload,
    ProviderClient,
    ProviderEndpoints,
    SendResult,
)
from workers.providers.outcomes import classify_hms
from workers.providers.tokens import AccessTokenSource, HmsAccessTokenSource, TokenUnavailable
from workers.providers.transport import (
    HttpResponse,
    Transport,
    TransportError,
    TransportFactory,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

# Result codes that mean our access token was refused or expired: refresh once, retry.
ACCESS_TOKEN_CODES = frozenset({"80200001", "80200003"})


def read_response(response: HttpResponse) -> SendResult:
    """Turn an HMS reply into a SendResult."""
    code: str | None = None
    request_id: str | None = None
    message = ""
    try:
        answer = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict):
        code = str(answer["code"]) if answer.get("code") is not None else None
        request_id = answer.get("requestId")
        message = str(answer.get("msg", ""))

    outcome = classify_hms(response.status, code)
    if outcome is not Outcome.SENT:
        logger.info("HMS returned %d code %s: %s", response.status, code, message)
    return SendResult(
        outcome,
        reason=None if outcome is Outcome.SENT else code or f"http_{response.status}",
        provider_message_id=request_id,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        status=response.status,
    )


class HmsClient(ProviderClient):
    """Sends to Huawei Push Kit for one application."""

    def __init__(
        self,
        *,
        app_id: str,
        project_id: str,
        endpoints: ProviderEndpoints,
        transport: Transport,
        tokens: AccessTokenSource,
    ) -> None:
        self.app_id = app_id
        self.url = f"{endpoints.hms_url.rstrip('/')}/v2/{project_id}/messages:send"
        self.transport = transport
        self.tokens = tokens

    @classmethod
    def from_credentials(
        cls,
        credentials: ApplicationCredentials,
        endpoints: ProviderEndpoints,
        transport_factory: TransportFactory,
    ) -> HmsClient:
        """Build the client, raising CredentialsMissing."""
        project_id = credentials.hms_project_id
        client_id = credentials.hms_client_id
        client_secret = credentials.hms_client_secret
        if not (project_id and client_id and client_secret):
            raise CredentialsMissing(
                f"application {credentials.app_id!r} has no HMS project id, client id"
                " or client secret"
            )
        transport = transport_factory()
        tokens = HmsAccessTokenSource(transport, endpoints.hms_token_url, client_id, client_secret)
        return cls(
            app_id=credentials.app_id,
            project_id=project_id,
            endpoints=endpoints,
            transport=transport,
            tokens=tokens,
        )

    async def send(
        self, token: str, payload: PreparedPayload, *, apns_id: str, environment: str | None
    ) -> SendResult:
        if payload.platform is not Platform.HMS:
            raise ValueError(f"payload for {payload.platform} given to the HMS client")
        body = payload.body_for(token)

        result = await self.post(body)
        if result.status == 401 or result.reason in ACCESS_TOKEN_CODES:
            return await self.post(body)
        return result

    async def post(self, body: bytes) -> SendResult:
        try:
            access_token = await self.tokens.token()
        except TokenUnavailable as error:
            logger.warning("application %s: %s", self.app_id, error)
            outcome = Outcome.CREDENTIALS if error.credentials_rejected else Outcome.TRANSIENT
            return SendResult(outcome, reason="access_token_unavailable")

        headers = [
            ("authorization", "Bearer " + access_token),
            ("content-type", "application/json"),
        ]
        try:
            response = await self.transport.request("POST", self.url, headers, body)
        except TransportError as error:
            logger.info("HMS request of application %s failed: %s", self.app_id, error)
            return SendResult(Outcome.TRANSIENT, reason=error.reason)

        result = read_response(response)
        if result.status == 401 or result.reason in ACCESS_TOKEN_CODES:
            self.tokens.invalidate(access_token)
        return result

    async def aclose(self) -> None:
        await self.transport.aclose()
