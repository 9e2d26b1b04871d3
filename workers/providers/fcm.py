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
    ProviderEndpoints,
    SendResult,
)
from workers.providers.bearer_client import BearerTokenClient
from workers.providers.outcomes import classify_fcm
from workers.providers.tokens import (
    AccessTokenSource,
    GoogleAccessTokenSource,
    load_service_account,
)
from workers.providers.transport import (
    HttpResponse,
    Transport,
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


class FcmClient(BearerTokenClient):
    """Sends to FCM for one application (one Firebase project)."""

    platform = Platform.FCM

    def __init__(
        self,
        *,
        app_id: str,
        project_id: str,
        endpoints: ProviderEndpoints,
        transport: Transport,
        tokens: AccessTokenSource,
    ) -> None:
        url = f"{endpoints.fcm_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        super().__init__(app_id=app_id, url=url, transport=transport, tokens=tokens)

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

    def read_response(self, response: HttpResponse) -> SendResult:
        return read_response(response)

    def token_rejected(self, result: SendResult) -> bool:
        return result.status == 401

    def retry_with_new_token(self, result: SendResult) -> bool:
        # A 401 without a third-party error means FCM rejected our access token (revoked
        # or expired early). FCM's retry guidance is to refresh it once and retry.
        return (
            result.status == 401
            and result.outcome is Outcome.CREDENTIALS
            and result.reason not in ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR")
        )
