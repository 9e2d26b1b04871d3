"""Fake FCM HTTP v1 (`POST /v1/projects/{id}/messages:send`) and Google's OAuth token endpoint.

Both live on the FCM port: `POST /token` takes the service account's JWT-bearer assertion
(RFC 7523) and returns an opaque access token, which the send endpoint then requires as
`Authorization: Bearer`. Errors use the google.rpc.Status JSON body that Google returns.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any

import orjson

from workers.sandbox.faults import retry_after_header
from workers.sandbox.fcm_messages import InvalidMessage, check_send_request
from workers.sandbox.http_server import Headers, Request, Response
from workers.sandbox.jws import MalformedJwt, parse_jwt, verify_rs256
from workers.sandbox.registry import FcmAccount
from workers.sandbox.state import SandboxState

logger = logging.getLogger(__name__)

PROVIDER = "fcm"
TOKEN_PATH = b"/token"
GOOGLE_TOKEN_URLS = frozenset(
    {"https://oauth2.googleapis.com/token", "https://accounts.google.com/o/oauth2/token"}
)
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCEPTED_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
ACCESS_TOKEN_LIFETIME_S = 3599
ASSERTION_MAX_LIFETIME_S = 3600
ASSERTION_CLOCK_SKEW_S = 300
MAX_CACHED_ACCESS_TOKENS = 100_000

_SEND_PATH = re.compile(rb"/v1/projects/([^/]+)/messages:send")

_SHORT_LIVED_TOKEN_MESSAGE = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
    "timeframe. Check your iat and exp values in the JWT claim."
)
_MISSING_CREDENTIALS_MESSAGE = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_INVALID_CREDENTIALS_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_JSON_HEADERS: Headers = [(b"content-type", b"application/json; charset=UTF-8")]

# Built-in markers (when enabled): device tokens containing these get a fixed error.
MARKER_UNREGISTERED = ":unregistered"
MARKER_SENDER_ID_MISMATCH = ":mismatch"
MARKER_INVALID_TOKEN = ":invalid"


class FcmRejection(Exception):
    """A request that FCM rejects with a google.rpc.Status error."""

    def __init__(
        self,
        status: int,
        rpc_status: str,
        message: str,
        error_code: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.rpc_status = rpc_status
        self.message = message
        self.error_code = error_code
        self.details = details or []
        self.extra_headers: Headers = []
        self.delay_s = 0.0

    @property
    def counter_reason(self) -> str:
        return self.error_code or self.rpc_status


# FcmError codes of the fault outcomes: (HTTP status, google.rpc status, message, errorCode).
_FAULT_ANSWERS: dict[str, tuple[int, str, str, str]] = {
    "unregistered": (404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
    "invalid_token": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        "INVALID_ARGUMENT",
    ),
    "sender_id_mismatch": (403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
    "quota_exceeded": (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Messages' of service 'fcm.googleapis.com'.",
        "QUOTA_EXCEEDED",
    ),
    "unavailable": (503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
    "internal": (500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
    "third_party_auth_error": (
        401,
        "UNAUTHENTICATED",
        "Auth error from APNS or Web Push Service",
        "THIRD_PARTY_AUTH_ERROR",
    ),
}


@dataclass(slots=True)
class _AccessToken:
    account: FcmAccount
    expires_at: float


class FcmService:
    """The FCM send endpoint and the OAuth token endpoint on one port."""

    allow_http1 = True

    def __init__(self, state: SandboxState) -> None:
        self.name = "fcm"
        self.state = state
        self.policy = state.policies[PROVIDER]
        # Filled in once the port is bound: the sandbox's own token URLs are valid audiences.
        self.token_audiences: set[str] = set(GOOGLE_TOKEN_URLS)
        self._access_tokens: dict[str, _AccessToken] = {}
        self._message_ids = itertools.count(1)
        self._registry_version = state.registry.version

    def handle(self, request: Request) -> Response:
        if request.path == TOKEN_PATH or request.path.startswith(TOKEN_PATH + b"?"):
            return self._handle_token(request)
        try:
            return self._handle_send(request)
        except FcmRejection as rejection:
            return self._reject(rejection)

    # OAuth token endpoint

    def _handle_token(self, request: Request) -> Response:
        if request.method != b"POST":
            return _oauth_error(405, "invalid_request", "The token endpoint accepts POST only.")
        form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        if grant_type != JWT_BEARER_GRANT:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type: " + grant_type)
        assertion = form.get("assertion", [""])[0]

        outcome = self._check_assertion(assertion)
        if isinstance(outcome, Response):
            self.state.counters.reject(PROVIDER, "oauth_" + _oauth_error_name(outcome))
            return outcome

        self._forget_tokens_after_registry_change()
        access_token = "ya29.sandbox-" + secrets.token_urlsafe(32)
        if len(self._access_tokens) >= MAX_CACHED_ACCESS_TOKENS:
            self._drop_expired_tokens()
        expires_at = self.state.clock.now() + ACCESS_TOKEN_LIFETIME_S
        self._access_tokens[access_token] = _AccessToken(outcome, expires_at)
        body = orjson.dumps(
            {
                "access_token": access_token,
                "expires_in": ACCESS_TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            }
        )
        return Response(200, _JSON_HEADERS, body)

    def _check_assertion(self, assertion: str) -> FcmAccount | Response:
        try:
            parsed = parse_jwt(assertion)
        except MalformedJwt:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        claims = parsed.claims
        account = self.state.registry.fcm_accounts.get(str(claims.get("iss")))
        if account is None or parsed.header.get("alg") != "RS256":
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        kid = parsed.header.get("kid")
        if account.private_key_id is not None and kid is not None and kid != account.private_key_id:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if not verify_rs256(parsed, account.public_key):
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")

        if claims.get("aud") not in self.token_audiences:
            return _oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        if not self._lifetime_is_valid(claims):
            return _oauth_error(400, "invalid_grant", _SHORT_LIVED_TOKEN_MESSAGE)
        scopes = str(claims.get("scope", "")).split()
        if not ACCEPTED_SCOPES.intersection(scopes):
            return _oauth_error(
                400, "invalid_scope", "The scopes do not allow sending FCM messages."
            )
        return account

    def _lifetime_is_valid(self, claims: dict[str, Any]) -> bool:
        issued_at = claims.get("iat")
        expires_at = claims.get("exp")
        if not isinstance(issued_at, int | float) or not isinstance(expires_at, int | float):
            return False
        now = self.state.clock.now()
        if expires_at - issued_at > ASSERTION_MAX_LIFETIME_S:
            return False
        return issued_at <= now + ASSERTION_CLOCK_SKEW_S and expires_at > now

    def _drop_expired_tokens(self) -> None:
        now = self.state.clock.now()
        self._access_tokens = {
            token: entry for token, entry in self._access_tokens.items() if entry.expires_at > now
        }

    # Send endpoint

    def _handle_send(self, request: Request) -> Response:
        match = _SEND_PATH.fullmatch(request.path)
        if match is None:
            raise FcmRejection(404, "NOT_FOUND", "Requested entity was not found.")
        if request.method != b"POST":
            raise FcmRejection(405, "METHOD_NOT_ALLOWED", "Method not allowed.")
        account = self._authenticate(request.headers)
        project_id = match.group(1).decode("utf-8", "replace")
        if project_id != account.project_id:
            raise FcmRejection(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project_id}' "
                "(or it may not exist).",
            )

        try:
            checked = check_send_request(request.body)
        except InvalidMessage as error:
            raise _invalid_message_rejection(error) from error

        delay_s = 0.0
        token = checked.token
        if token is not None:
            if self.state.behaviour.markers:
                _apply_markers(token)
            delay_s = self._apply_faults(token)
        if checked.validate_only:
            name = f"projects/{project_id}/messages/fake_message_id"
        else:
            self.state.counters.accept(PROVIDER, token or checked.target)
            name = f"projects/{project_id}/messages/0:{next(self._message_ids)}%sandbox"
        return Response(200, _JSON_HEADERS, orjson.dumps({"name": name}), delay_s=delay_s)

    def _forget_tokens_after_registry_change(self) -> None:
        # Access tokens of re-registered or removed apps must not keep working.
        registry = self.state.registry
        if registry.version != self._registry_version:
            self._access_tokens.clear()
            self._registry_version = registry.version

    def _authenticate(self, headers: Headers) -> FcmAccount:
        self._forget_tokens_after_registry_change()
        authorization = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
                break
        if not authorization or authorization[:7].lower() != b"bearer ":
            raise FcmRejection(401, "UNAUTHENTICATED", _MISSING_CREDENTIALS_MESSAGE)

        entry = self._access_tokens.get(authorization[7:].strip().decode("ascii", "replace"))
        if entry is None or entry.expires_at <= self.state.clock.now():
            raise FcmRejection(401, "UNAUTHENTICATED", _INVALID_CREDENTIALS_MESSAGE)
        return entry.account

    def _apply_faults(self, token: str) -> float:
        if not self.state.faults.is_active(PROVIDER):
            return 0.0
        decision = self.state.faults.decide(PROVIDER, token)
        if decision is None:
            return 0.0
        if decision.outcome is None:
            return decision.delay_s

        status, rpc_status, message, error_code = _FAULT_ANSWERS[decision.outcome]
        rejection = _fcm_error(status, rpc_status, message, error_code)
        rejection.delay_s = decision.delay_s
        if status in (429, 503, 500):
            rejection.extra_headers = retry_after_header(decision, self.state.clock.now())
        raise rejection

    def _reject(self, rejection: FcmRejection) -> Response:
        self.state.counters.reject(PROVIDER, rejection.counter_reason)
        error: dict[str, Any] = {
            "code": rejection.status,
            "message": rejection.message,
            "status": rejection.rpc_status,
        }
        if rejection.details:
            error["details"] = rejection.details
        body = orjson.dumps({"error": error})
        headers = _JSON_HEADERS + rejection.extra_headers
        if rejection.status == 401:
            headers = [
                *headers,
                (b"www-authenticate", b'Bearer realm="https://accounts.google.com/"'),
            ]
        return Response(rejection.status, headers, body, delay_s=rejection.delay_s)


def _fcm_error(status: int, rpc_status: str, message: str, error_code: str) -> FcmRejection:
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
    ]
    if error_code == "QUOTA_EXCEEDED":
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"subject": "sandbox", "description": "fault rule"}],
            }
        )
    return FcmRejection(status, rpc_status, message, error_code, details)


def _invalid_message_rejection(error: InvalidMessage) -> FcmRejection:
    details: list[dict[str, Any]] = []
    if error.error_code is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": error.error_code,
            }
        )
    if error.field is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": error.field, "description": error.message}],
            }
        )
    return FcmRejection(
        400, "INVALID_ARGUMENT", error.message, error.error_code or "INVALID_ARGUMENT", details
    )


def _apply_markers(token: str) -> None:
    if MARKER_UNREGISTERED in token:
        raise _fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    if MARKER_SENDER_ID_MISMATCH in token:
        raise _fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
    if MARKER_INVALID_TOKEN in token:
        raise _fcm_error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
        )


def _oauth_error(status: int, error: str, description: str) -> Response:
    body = orjson.dumps({"error": error, "error_description": description})
    return Response(status, _JSON_HEADERS, body)


def _oauth_error_name(response: Response) -> str:
    return str(orjson.loads(response.body).get("error", "unknown"))
