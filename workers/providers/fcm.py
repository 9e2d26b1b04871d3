"""FCM HTTP v1 client: `POST /v1/projects/<project>/messages:send` with an OAuth 2.0 token.

Errors arrive as google.rpc.Status JSON; the outcome is read from the FcmError
`errorCode` in `error.details`, falling back to the HTTP status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

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
from workers.providers.outcomes import classify_fcm
from workers.providers.tokens import (
    AccessTokenSource,
    GoogleAccessTokenSource,
    TokenUnavailable,
    load_service_account,
)
from workers.providers.transport import (
    HttpResponse,
    Transport,
    TransportError,
    TransportFactory,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
INVALID_TOKEN_TEXT = "registration token"


@dataclass(frozen=True, slots=True)
class FcmErrorBody:
    """The parts of an FCM error body: status name, FcmError code, violated fields, message."""

    status: str | None = None
    error_code: str | None = None
    fields: tuple[str, ...] = ()
    message: str = ""

    @property
    def names_token(self) -> bool:
        """Return whether an INVALID_ARGUMENT is about the registration token."""
        return "message.token" in self.fields or INVALID_TOKEN_TEXT in self.message.lower()


def read_error_details(details: list[Any]) -> tuple[str | None, tuple[str, ...]]:
    error_code = None
    fields: list[str] = []
    for detail in details:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR_TYPE:
            error_code = detail.get("errorCode")
        elif detail.get("@type") == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations") or []
            fields.extend(str(v.get("field")) for v in violations if isinstance(v, dict))
    return error_code, tuple(fields)


def read_error_body(body: bytes) -> FcmErrorBody:
    """Parse a google.rpc.Status error body; a body that is not one gives an empty result."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return FcmErrorBody()
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return FcmErrorBody()

    details = error.get("details")
    error_code, fields = read_error_details(details if isinstance(details, list) else [])
    return FcmErrorBody(
        status=error.get("status"),
        error_code=error_code,
        fields=fields,
        message=str(error.get("message", "")),
    )


def read_response(response: HttpResponse) -> SendResult:
    """Turn an FCM reply into a SendResult."""
    if response.status == 200:
        try:
            name = orjson.loads(response.body).get("name")
        except (orjson.JSONDecodeError, AttributeError):
            name = None
        return SendResult(Outcome.SENT, provider_message_id=name, status=200)

    error = read_error_body(response.body)
    outcome = classify_fcm(response.status, error.error_code, error.names_token)
    if error.error_code is None:
        logger.info("FCM returned %d %s: %s", response.status, error.status, error.message)
    return SendResult(
        outcome,
        reason=error.error_code or error.status or f"http_{response.status}",
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        status=response.status,
    )


class FcmClient(ProviderClient):
    """Sends to FCM for one application (one Firebase project)."""

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
        self.url = f"{endpoints.fcm_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self.transport = transport
        self.tokens = tokens

    @classmethod
    def from_credentials(
        cls,
        credentials: ApplicationCredentials,
        endpoints: ProviderEndpoints,
        transport_factory: TransportFactory,
    ) -> FcmClient:
        """Build the client, raising CredentialsMissing or CredentialsInvalid."""
        if not (credentials.fcm_project_id and credentials.fcm_service_account):
            raise CredentialsMissing(
                f"application {credentials.app_id!r} has no FCM project id or service account"
            )
        service_account = load_service_account(
            credentials.fcm_service_account, endpoints.fcm_token_url
        )
        ca_pem = endpoints.ca_file.read_bytes() if endpoints.ca_file is not None else None
        return cls(
            app_id=credentials.app_id,
            project_id=credentials.fcm_project_id,
            endpoints=endpoints,
            transport=transport_factory(),
            tokens=GoogleAccessTokenSource(service_account, ca_pem),
        )

    async def send(
        self, token: str, payload: PreparedPayload, *, apns_id: str, environment: str | None
    ) -> SendResult:
        if payload.platform is not Platform.FCM:
            raise ValueError(f"payload for {payload.platform} given to the FCM client")
        body = payload.body_for(token)

        result = await self.post(body)
        if result.status != 401 or result.outcome is not Outcome.CREDENTIALS:
            return result
        # A 401 without a third-party error means FCM rejected our access token (revoked
        # or expired early). FCM's retry guidance is to refresh it once and retry.
        if result.reason in ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"):
            return result
        return await self.post(body)

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
            logger.info("FCM request of application %s failed: %s", self.app_id, error)
            return SendResult(Outcome.TRANSIENT, reason=error.reason)

        if response.status == 401:
            self.tokens.invalidate(access_token)
        return read_response(response)

    async def aclose(self) -> None:
        await self.transport.aclose()
        close = getattr(self.tokens, "close", None)
        if close is not None:
            close()
