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
    ProviderEndpoints,
    SendResult,
)
from workers.providers.bearer_client import BearerTokenClient
from workers.providers.outcomes import classify_hms
from workers.providers.tokens import AccessTokenSource, HmsAccessTokenSource
from workers.providers.transport import (
    HttpResponse,
    Transport,
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


class HmsClient(BearerTokenClient):
    """Sends to Huawei Push Kit for one application."""

    platform = Platform.HMS

    def __init__(
        self,
        *,
        app_id: str,
        project_id: str,
        endpoints: ProviderEndpoints,
        transport: Transport,
        tokens: AccessTokenSource,
    ) -> None:
        url = f"{endpoints.hms_url.rstrip('/')}/v2/{project_id}/messages:send"
        super().__init__(app_id=app_id, url=url, transport=transport, tokens=tokens)

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

    def read_response(self, response: HttpResponse) -> SendResult:
        return read_response(response)

    def token_rejected(self, result: SendResult) -> bool:
        return result.status == 401 or result.reason in ACCESS_TOKEN_CODES
