"""Fake APNs provider API: `POST /3/device/<token>` over HTTP/2 with token (JWT) auth.

Checks run in this order, and the first failing one decides the response: method and path,
duplicate headers, provider token, request headers, device token, payload, then the
built-in token markers and fault rules. Real APNs does not document its order; auth comes
before the headers here because APNs gates the stream count on auth.
"""

from __future__ import annotations

import logging
import re
import uuid

import orjson

from workers.sandbox.faults import FaultDecision, retry_after_header
from workers.sandbox.http_server import ConnectionContext, Headers, Request, Response
from workers.sandbox.jws import MalformedJwt, parse_jwt, verify_es256
from workers.sandbox.registry import ApnsKey
from workers.sandbox.state import SandboxState

logger = logging.getLogger(__name__)

PROVIDER = "apns"
DEVICE_PATH_PREFIX = b"/3/device/"

# Body limits from Apple's "Sending notification requests to APNs".
MAX_PAYLOAD_BYTES = 4096
MAX_VOIP_PAYLOAD_BYTES = 5120
MAX_COLLAPSE_ID_BYTES = 64

PROVIDER_TOKEN_MAX_AGE_S = 3600
# Allowance for provider clocks running ahead before an `iat` counts as "in the future".
PROVIDER_TOKEN_FUTURE_SKEW_S = 60
# Apple allows a new provider token at most once every 20 minutes on one connection;
# enforced only when the strict_token_updates switch is on.
PROVIDER_TOKEN_MIN_UPDATE_INTERVAL_S = 20 * 60
MAX_CACHED_PROVIDER_TOKENS = 10_000

# apns-push-type → topic suffix after the bundle ID (None: any topic, as for MDM).
PUSH_TYPE_TOPIC_SUFFIXES: dict[bytes, str | None] = {
    b"alert": "",
    b"background": "",
    b"voip": ".voip",
    b"complication": ".complication",
    b"fileprovider": ".pushkit.fileprovider",
    b"liveactivity": ".push-type.liveactivity",
    b"location": ".location-query",
    b"pushtotalk": ".voip-ptt",
    b"controls": ".push-type.controls",
    b"widgets": ".push-type.widgets",
    b"mdm": None,
}
_SUFFIX_PUSH_TYPES = sorted(
    ((suffix, push_type) for push_type, suffix in PUSH_TYPE_TOPIC_SUFFIXES.items() if suffix),
    key=lambda item: -len(item[0]),
)

# Apple shows lowercase UUIDs; uppercase is accepted because the real rule is not documented.
_APNS_ID = re.compile(
    rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_HEX = re.compile(rb"[0-9a-fA-F]+")
_INTEGER = re.compile(rb"-?[0-9]+")
_PRIORITIES = frozenset({b"1", b"5", b"10"})

# Built-in markers (when enabled): device tokens ending like this get a fixed error.
MARKER_UNREGISTERED = "0000dead"
MARKER_BAD_DEVICE_TOKEN = "00000bad"

_FAULT_ANSWERS: dict[str, tuple[int, str]] = {
    "unregistered": (410, "Unregistered"),
    "expired_token": (410, "ExpiredToken"),
    "bad_device_token": (400, "BadDeviceToken"),
    "device_token_not_for_topic": (400, "DeviceTokenNotForTopic"),
    "too_many_requests": (429, "TooManyRequests"),
    "internal_server_error": (500, "InternalServerError"),
    "service_unavailable": (503, "ServiceUnavailable"),
    "shutdown": (503, "Shutdown"),
}


class ApnsRejection(Exception):
    """A request that APNs rejects with an error status and reason."""

    def __init__(self, status: int, reason: str, delay_s: float = 0.0) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.delay_s = delay_s
        self.extra_headers: Headers = []


class _VerifiedProviderToken:
    __slots__ = ("issued_at", "key")

    def __init__(self, key: ApnsKey, issued_at: float) -> None:
        self.key = key
        self.issued_at = issued_at


class ApnsService:
    """One APNs environment (development or production) served on one port."""

    allow_http1 = False

    def __init__(self, state: SandboxState, environment: str) -> None:
        self.name = f"apns-{environment}"
        self.state = state
        self.environment = environment
        self.policy = state.policies[PROVIDER]
        self.development = environment == "development"
        self._token_cache: dict[str, _VerifiedProviderToken | str] = {}
        self._topic_cache: dict[tuple[str, bytes, bytes | None], str | None] = {}
        self._registry_version = -1
        self._error_bodies: dict[str, bytes] = {}

    def handle(self, request: Request) -> Response:
        try:
            return self._handle(request)
        except ApnsRejection as rejection:
            return self._reject(request, rejection)

    def _handle(self, request: Request) -> Response:
        if request.method != b"POST":
            raise ApnsRejection(405, "MethodNotAllowed")
        if not request.path.startswith(DEVICE_PATH_PREFIX):
            raise ApnsRejection(404, "BadPath")
        headers = _collect_headers(request.headers)

        key = self._authenticate(headers.get(b"authorization"), request.connection)
        apns_id = _check_apns_id(headers.get(b"apns-id"))
        push_type = self._check_headers(headers, key)
        token = _check_device_token(request.path, self.state.behaviour.apns_token_lengths)
        _check_payload(request.body, push_type)

        delay_s = 0.0
        if self.state.behaviour.markers:
            _apply_markers(token)
        if self.state.faults.is_active(PROVIDER):
            decision = self.state.faults.decide(PROVIDER, token)
            if decision is not None:
                self._apply_fault(decision)
                delay_s = decision.delay_s

        self.state.counters.accept(PROVIDER, token)
        response_headers = [(b"apns-id", apns_id)]
        if self.development:
            response_headers.append((b"apns-unique-id", str(uuid.uuid4()).encode()))
        return Response(200, response_headers, delay_s=delay_s)

    def _authenticate(self, authorization: bytes | None, connection: ConnectionContext) -> ApnsKey:
        if not authorization or not authorization[:7].lower() == b"bearer ":
            raise ApnsRejection(403, "MissingProviderToken")
        token = authorization[7:].strip().decode("ascii", "replace")
        if not token:
            raise ApnsRejection(403, "MissingProviderToken")

        verified = self._verified_token(token)
        if isinstance(verified, str):
            raise ApnsRejection(403, verified)

        now = self.state.clock.now()
        if verified.issued_at > now + PROVIDER_TOKEN_FUTURE_SKEW_S:
            raise ApnsRejection(403, "InvalidProviderToken")
        if now - verified.issued_at > PROVIDER_TOKEN_MAX_AGE_S:
            raise ApnsRejection(403, "ExpiredProviderToken")
        key = verified.key
        if key.environment is not None and key.environment != self.environment:
            raise ApnsRejection(403, "BadEnvironmentKeyIdInToken")

        self._bind_connection(connection, key, token, now)
        return key

    def _bind_connection(
        self, connection: ConnectionContext, key: ApnsKey, token: str, now: float
    ) -> None:
        # One connection serves one team: the first accepted token binds it.
        state = connection.state
        bound_team = state.get("team_id")
        if bound_team is None:
            state["team_id"] = key.team_id
            state["token"] = token
            state["token_since"] = now
            connection.unlock_streams()
            return
        if bound_team != key.team_id:
            raise ApnsRejection(403, "InvalidProviderToken")
        if state["token"] != token:
            too_soon = now - state["token_since"] < PROVIDER_TOKEN_MIN_UPDATE_INTERVAL_S
            if too_soon and self.state.behaviour.strict_token_updates:
                raise ApnsRejection(429, "TooManyProviderTokenUpdates")
            state["token"] = token
            state["token_since"] = now

    def _verified_token(self, token: str) -> _VerifiedProviderToken | str:
        registry = self.state.registry
        if registry.version != self._registry_version:
            self._token_cache.clear()
            self._topic_cache.clear()
            self._registry_version = registry.version

        cached = self._token_cache.get(token)
        if cached is not None:
            return cached
        if len(self._token_cache) >= MAX_CACHED_PROVIDER_TOKENS:
            self._token_cache.clear()
        verified = self._verify_token(token)
        self._token_cache[token] = verified
        return verified

    def _verify_token(self, token: str) -> _VerifiedProviderToken | str:
        """Verify signature and claims once; return the key and iat, or a rejection reason."""
        try:
            parsed = parse_jwt(token)
        except MalformedJwt as error:
            logger.debug("unparsable APNs provider token: %s", error)
            return "InvalidProviderToken"

        if parsed.header.get("alg") != "ES256":
            return "InvalidProviderToken"
        key = self.state.registry.apns_keys.get(str(parsed.header.get("kid")))
        if key is None:
            logger.debug("APNs provider token with unknown key id %r", parsed.header.get("kid"))
            return "InvalidProviderToken"
        if parsed.claims.get("iss") != key.team_id:
            return "InvalidProviderToken"
        issued_at = parsed.claims.get("iat")
        if not isinstance(issued_at, int | float) or isinstance(issued_at, bool):
            return "InvalidProviderToken"
        if not verify_es256(parsed, key.public_key):
            logger.debug("APNs provider token signature invalid for key %s", key.key_id)
            return "InvalidProviderToken"
        return _VerifiedProviderToken(key, float(issued_at))

    def _check_headers(self, headers: dict[bytes, bytes], key: ApnsKey) -> bytes:
        """Validate the apns-* headers and return the effective push type."""
        expiration = headers.get(b"apns-expiration")
        if expiration is not None and not _INTEGER.fullmatch(expiration):
            raise ApnsRejection(400, "BadExpirationDate")
        priority = headers.get(b"apns-priority", b"10")
        if priority not in _PRIORITIES:
            raise ApnsRejection(400, "BadPriority")
        push_type = headers.get(b"apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPE_TOPIC_SUFFIXES:
            raise ApnsRejection(400, "InvalidPushType")
        collapse_id = headers.get(b"apns-collapse-id")
        if collapse_id is not None and len(collapse_id) > MAX_COLLAPSE_ID_BYTES:
            raise ApnsRejection(400, "BadCollapseId")

        topic = headers.get(b"apns-topic")
        if not topic:
            raise ApnsRejection(400, "MissingTopic")
        effective_push_type = self._check_topic(key, topic, push_type)

        background = effective_push_type == b"background"
        if background and priority != b"5" and self.state.behaviour.background_priority_check:
            raise ApnsRejection(400, "BadPriority")
        return effective_push_type

    def _check_topic(self, key: ApnsKey, topic: bytes, push_type: bytes | None) -> bytes:
        cache_key = (key.team_id, topic, push_type)
        if cache_key not in self._topic_cache:
            self._topic_cache[cache_key] = self._topic_problem(key, topic, push_type)
        problem = self._topic_cache[cache_key]
        if problem is not None:
            raise ApnsRejection(400, problem)
        if push_type is not None:
            return push_type
        return _push_type_from_topic(topic.decode("utf-8", "replace"))

    def _topic_problem(
        self, key: ApnsKey, topic_bytes: bytes, push_type: bytes | None
    ) -> str | None:
        topic = topic_bytes.decode("utf-8", "replace")
        bundle_ids = self.state.registry.team_bundle_ids(key.team_id)
        if push_type is None:
            push_type = _push_type_from_topic(topic)
        suffix = PUSH_TYPE_TOPIC_SUFFIXES[push_type]
        if suffix is None:
            return None
        if topic in bundle_ids and suffix == "":
            return None
        if suffix and topic.endswith(suffix) and topic[: -len(suffix)] in bundle_ids:
            return None
        if any(topic.startswith(bundle_id) for bundle_id in bundle_ids):
            # The bundle is the team's, but the suffix does not fit the push type.
            return "BadTopic"
        return "TopicDisallowed"

    def _apply_fault(self, decision: FaultDecision) -> None:
        if decision.outcome is None:
            return
        status, reason = _FAULT_ANSWERS[decision.outcome]
        rejection = ApnsRejection(status, reason, decision.delay_s)
        if status in (429, 500, 503):
            rejection.extra_headers = retry_after_header(decision, self.state.clock.now())
        raise rejection

    def _reject(self, request: Request, rejection: ApnsRejection) -> Response:
        self.state.counters.reject(PROVIDER, rejection.reason)
        apns_id = _response_apns_id(request.headers)
        headers: Headers = [(b"content-type", b"application/json"), (b"apns-id", apns_id)]
        headers += rejection.extra_headers
        if rejection.status == 410:
            timestamp_ms = int(self.state.clock.now() * 1000)
            body = orjson.dumps({"reason": rejection.reason, "timestamp": timestamp_ms})
        else:
            body = self._error_body(rejection.reason)
        return Response(rejection.status, headers, body, delay_s=rejection.delay_s)

    def _error_body(self, reason: str) -> bytes:
        body = self._error_bodies.get(reason)
        if body is None:
            body = orjson.dumps({"reason": reason})
            self._error_bodies[reason] = body
        return body


def _collect_headers(headers: Headers) -> dict[bytes, bytes]:
    collected: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in collected and (name[:5] == b"apns-" or name == b"authorization"):
            raise ApnsRejection(400, "DuplicateHeaders")
        collected[name] = value
    return collected


def _check_apns_id(apns_id: bytes | None) -> bytes:
    if apns_id is None:
        return str(uuid.uuid4()).encode()
    if not _APNS_ID.fullmatch(apns_id):
        raise ApnsRejection(400, "BadMessageId")
    return apns_id


def _response_apns_id(headers: Headers) -> bytes:
    """Echo a well-formed request apns-id on errors too, else make one up."""
    for name, value in headers:
        if name == b"apns-id" and _APNS_ID.fullmatch(value):
            return value
    return str(uuid.uuid4()).encode()


def _check_device_token(path: bytes, allowed_lengths: tuple[int, ...]) -> str:
    token = path[len(DEVICE_PATH_PREFIX) :]
    query_start = token.find(b"?")
    if query_start >= 0:
        token = token[:query_start]
    if not token:
        raise ApnsRejection(400, "MissingDeviceToken")
    if len(token) not in allowed_lengths or not _HEX.fullmatch(token):
        raise ApnsRejection(400, "BadDeviceToken")
    return token.decode("ascii")


def _check_payload(body: bytes, push_type: bytes) -> None:
    if not body:
        raise ApnsRejection(400, "PayloadEmpty")
    limit = MAX_VOIP_PAYLOAD_BYTES if push_type == b"voip" else MAX_PAYLOAD_BYTES
    if len(body) > limit:
        raise ApnsRejection(413, "PayloadTooLarge")


def _push_type_from_topic(topic: str) -> bytes:
    """Infer the push type of a request without apns-push-type from its topic suffix."""
    for suffix, push_type in _SUFFIX_PUSH_TYPES:
        if topic.endswith(suffix):
            return push_type
    return b"alert"


def _apply_markers(token: str) -> None:
    if token.endswith(MARKER_UNREGISTERED):
        raise ApnsRejection(410, "Unregistered")
    if token.endswith(MARKER_BAD_DEVICE_TOKEN):
        raise ApnsRejection(400, "BadDeviceToken")
