"""Fake Huawei Push Kit: OAuth client credentials and `POST /v{1,2,3}/{appId}/messages:send`.

Huawei responds with a result code in the JSON body (`80000000` is success). The HTTP status
that goes with each error code is not documented in one place; the sandbox uses 400 for
message errors, 401 for OAuth errors, 503 for traffic control and 500 for internal errors.
"""

from __future__ import annotations

import itertools
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any

import orjson

from workers.sandbox.faults import retry_after_header
from workers.sandbox.http_server import Headers, Request, Response
from workers.sandbox.registry import HmsApp
from workers.sandbox.state import SandboxState

PROVIDER = "hms"
TOKEN_PATHS = frozenset({b"/oauth2/v3/token", b"/oauth2/v2/token"})
ACCESS_TOKEN_LIFETIME_S = 3600
MAX_MESSAGE_BYTES = 4096
MAX_TOKENS_PER_MESSAGE = 1000
MAX_CACHED_ACCESS_TOKENS = 100_000

CODE_SUCCESS = "80000000"
CODE_PARTIAL_SUCCESS = "80100000"
CODE_BAD_STRUCTURE = "80100003"
CODE_AUTH_ERROR = "80200001"
CODE_TOKEN_EXPIRED = "80200003"
CODE_NOT_PERMITTED = "80300002"
CODE_ALL_TOKENS_INVALID = "80300007"
CODE_MESSAGE_TOO_BIG = "80300008"
CODE_TOKEN_COUNT = "80300010"
CODE_INTERNAL_ERROR = "81000001"
# NOTE: Huawei documents traffic control as HTTP 503 without a body code; this one is made up.
CODE_TRAFFIC_CONTROL = "80300013"

# Built-in marker (when enabled): device tokens ending with this count as invalid.
MARKER_INVALID_TOKEN = "-invalid"

_SEND_PATH = re.compile(rb"/v[123]/([^/]+)/messages:send")
_JSON_HEADERS: Headers = [(b"content-type", b"application/json;charset=UTF-8")]
_TARGET_FIELDS = ("token", "topic", "condition")


class HmsRejection(Exception):
    """A rejected send: an HTTP error status and a Huawei result code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra_headers: Headers = []
        self.delay_s = 0.0


# Fault outcome → (HTTP status, result code, message).
_FAULT_ANSWERS: dict[str, tuple[int, str, str]] = {
    "traffic_control": (503, CODE_TRAFFIC_CONTROL, "Traffic control, slow down the sending rate"),
    "internal_error": (500, CODE_INTERNAL_ERROR, "Internal error"),
    "not_permitted": (403, CODE_NOT_PERMITTED, "The app is not permitted to send messages"),
    "invalid_token": (400, CODE_ALL_TOKENS_INVALID, "All the tokens are invalid"),
}


@dataclass(slots=True)
class _AccessToken:
    app: HmsApp
    expires_at: float


class HmsService:
    """The Huawei OAuth endpoint and the Push Kit send endpoint on one port."""

    allow_http1 = True

    def __init__(self, state: SandboxState) -> None:
        self.name = "hms"
        self.state = state
        self.policy = state.policies[PROVIDER]
        self._access_tokens: dict[str, _AccessToken] = {}
        self._request_ids = itertools.count(1)
        self._registry_version = state.registry.version

    def handle(self, request: Request) -> Response:
        path = request.path.split(b"?", 1)[0]
        if path in TOKEN_PATHS:
            return self._handle_token(request)
        try:
            return self._handle_send(request, path)
        except HmsRejection as rejection:
            return self._reject(rejection)

    def _handle_token(self, request: Request) -> Response:
        form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"))
        if request.method != b"POST" or form.get("grant_type", [""])[0] != "client_credentials":
            return _oauth_error(1102, "unsupported grant_type")
        app = self.state.registry.hms_apps.get(form.get("client_id", [""])[0])
        if app is None or not secrets.compare_digest(
            app.client_secret, form.get("client_secret", [""])[0]
        ):
            self.state.counters.reject(PROVIDER, "oauth_invalid_client")
            return _oauth_error(1101, "invalid client")

        self._forget_tokens_after_registry_change()
        if len(self._access_tokens) >= MAX_CACHED_ACCESS_TOKENS:
            self._access_tokens.clear()
        access_token = "sandbox-hms-" + secrets.token_urlsafe(32)
        expires_at = self.state.clock.now() + ACCESS_TOKEN_LIFETIME_S
        self._access_tokens[access_token] = _AccessToken(app, expires_at)
        body = orjson.dumps(
            {
                "access_token": access_token,
                "expires_in": ACCESS_TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            }
        )
        return Response(200, _JSON_HEADERS, body)

    def _handle_send(self, request: Request, path: bytes) -> Response:
        match = _SEND_PATH.fullmatch(path)
        if match is None or request.method != b"POST":
            raise HmsRejection(404, CODE_BAD_STRUCTURE, "Not found")
        app = self._authenticate(request.headers)
        if match.group(1).decode("utf-8", "replace") not in app.app_ids:
            raise HmsRejection(401, CODE_AUTH_ERROR, "Oauth authentication error")

        message, tokens = _check_message(request.body)
        valid_tokens, illegal_tokens = self._split_tokens(tokens)
        if tokens and not valid_tokens:
            raise HmsRejection(400, CODE_ALL_TOKENS_INVALID, "All the tokens are invalid")
        delay_s = self._apply_faults(tokens[0] if tokens else str(message.get("topic", "")))

        for token in valid_tokens:
            self.state.counters.accept(PROVIDER, token)
        if not tokens:
            self.state.counters.accept(PROVIDER, str(message.get("topic") or message["condition"]))
        if illegal_tokens:
            result = {
                "success": len(valid_tokens),
                "failure": len(illegal_tokens),
                "illegal_tokens": illegal_tokens,
            }
            return self._answer(200, CODE_PARTIAL_SUCCESS, orjson.dumps(result).decode(), delay_s)
        return self._answer(200, CODE_SUCCESS, "Success", delay_s)

    def _forget_tokens_after_registry_change(self) -> None:
        # Access tokens of re-registered or removed apps must not keep working.
        registry = self.state.registry
        if registry.version != self._registry_version:
            self._access_tokens.clear()
            self._registry_version = registry.version

    def _authenticate(self, headers: Headers) -> HmsApp:
        self._forget_tokens_after_registry_change()
        authorization = next((value for name, value in headers if name == b"authorization"), b"")
        if authorization[:7].lower() != b"bearer ":
            raise HmsRejection(401, CODE_AUTH_ERROR, "Oauth authentication error")
        entry = self._access_tokens.get(authorization[7:].strip().decode("ascii", "replace"))
        if entry is None:
            raise HmsRejection(401, CODE_AUTH_ERROR, "Oauth authentication error")
        if entry.expires_at <= self.state.clock.now():
            raise HmsRejection(401, CODE_TOKEN_EXPIRED, "Oauth Token expired")
        return entry.app

    def _split_tokens(self, tokens: list[str]) -> tuple[list[str], list[str]]:
        if not self.state.behaviour.markers:
            return tokens, []
        valid = [token for token in tokens if not token.endswith(MARKER_INVALID_TOKEN)]
        if len(valid) == len(tokens):
            return tokens, []
        return valid, [token for token in tokens if token.endswith(MARKER_INVALID_TOKEN)]

    def _apply_faults(self, token: str) -> float:
        if not self.state.faults.is_active(PROVIDER):
            return 0.0
        decision = self.state.faults.decide(PROVIDER, token)
        if decision is None:
            return 0.0
        if decision.outcome is None:
            return decision.delay_s

        status, code, message = _FAULT_ANSWERS[decision.outcome]
        rejection = HmsRejection(status, code, message)
        rejection.delay_s = decision.delay_s
        if status in (429, 500, 503):
            rejection.extra_headers = retry_after_header(decision, self.state.clock.now())
        raise rejection

    def _answer(self, status: int, code: str, message: str, delay_s: float = 0.0) -> Response:
        request_id = f"sandbox{next(self._request_ids):016d}"
        body = orjson.dumps({"code": code, "msg": message, "requestId": request_id})
        return Response(status, _JSON_HEADERS, body, delay_s=delay_s)

    def _reject(self, rejection: HmsRejection) -> Response:
        self.state.counters.reject(PROVIDER, rejection.code)
        response = self._answer(rejection.status, rejection.code, rejection.message)
        response.headers = response.headers + rejection.extra_headers
        response.delay_s = rejection.delay_s
        return response


def _check_message(body: bytes) -> tuple[dict[str, Any], list[str]]:
    """Validate the request body and return the message and its device tokens."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise HmsRejection(400, CODE_BAD_STRUCTURE, "Incorrect message structure") from error
    message = request.get("message") if isinstance(request, dict) else None
    if not isinstance(message, dict):
        raise HmsRejection(400, CODE_BAD_STRUCTURE, "Incorrect message structure")

    targets = [name for name in _TARGET_FIELDS if message.get(name) is not None]
    if len(targets) != 1:
        raise HmsRejection(400, CODE_BAD_STRUCTURE, "Incorrect message structure")
    data = message.get("data")
    if data is not None and not isinstance(data, str):
        raise HmsRejection(400, CODE_BAD_STRUCTURE, "Incorrect message structure")
    _check_android(message.get("android"))

    tokens = message.get("token")
    if tokens is not None:
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise HmsRejection(400, CODE_BAD_STRUCTURE, "Incorrect message structure")
        if not 1 <= len(tokens) <= MAX_TOKENS_PER_MESSAGE:
            raise HmsRejection(400, CODE_TOKEN_COUNT, "The number of tokens must be 1 to 1000")

    if len(body) > MAX_MESSAGE_BYTES:
        counted = {name: value for name, value in message.items() if name != "token"}
        if len(orjson.dumps(counted)) > MAX_MESSAGE_BYTES:
            raise HmsRejection(400, CODE_MESSAGE_TOO_BIG, "The message body size exceeds 4 KB")
    return message, tokens or []


def _check_android(android: Any) -> None:
    if android is None:
        return
    if not isinstance(android, dict):
        raise HmsRejection(400, CODE_BAD_STRUCTURE, "Incorrect message structure")
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and (
        not isinstance(collapse_key, int) or not -1 <= collapse_key <= 100
    ):
        raise HmsRejection(400, CODE_BAD_STRUCTURE, "collapse_key must be -1 to 100")
    urgency = android.get("urgency")
    if urgency is not None and urgency not in ("HIGH", "NORMAL"):
        raise HmsRejection(400, CODE_BAD_STRUCTURE, "urgency must be HIGH or NORMAL")
    if data := android.get("data"):
        if not isinstance(data, str):
            raise HmsRejection(400, CODE_BAD_STRUCTURE, "Incorrect message structure")


def _oauth_error(error: int, description: str) -> Response:
    # NOTE: the shape of Huawei's OAuth error body is a guess; clients should rely on the 400.
    body = orjson.dumps({"error": error, "error_description": description})
    return Response(400, _JSON_HEADERS, body)
