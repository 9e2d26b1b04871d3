"""The table that turns a provider reply into an outcome, kept as data in one place.

Sources, quoted per entry:
- Apple: "Handling notification responses from APNs", the table of status codes and
  reason strings (developer.apple.com/documentation/usernotifications).
- FCM: the ErrorCode reference of FCM HTTP v1 (firebase.google.com/docs/reference/fcm/
  rest/v1/ErrorCode) and the google.rpc.Status error format.
- HMS: Huawei Push Kit server result codes (HMS Core server error code FAQ).

Some reasons mean an invalid token but also appear when the application itself is
misconfigured (wrong APNs environment, bundle id or FCM project). They are listed in
CONFIGURATION_SUSPECT_REASONS so the worker can apply its configuration guard before it
invalidates tokens.
"""

from __future__ import annotations

from workers.providers.base import Outcome

# Reasons that mean "invalid token" for one device but "wrong configuration" when many
# devices of one application get them at once.
CONFIGURATION_SUSPECT_REASONS = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "TopicDisallowed", "SENDER_ID_MISMATCH"}
)

# APNs: reason string -> outcome. Source: Apple's error table unless noted.
APNS_REASONS: dict[str, Outcome] = {
    # 400: the token is malformed or belongs to the other environment.
    "BadDeviceToken": Outcome.TOKEN_INVALID,
    # 400: the token belongs to another app (topic).
    "DeviceTokenNotForTopic": Outcome.TOKEN_INVALID,
    # 400: pushing to this topic is not allowed. Apple's fix is in the configuration, so
    # it is a configuration suspect.
    "TopicDisallowed": Outcome.TOKEN_INVALID,
    # 400: our request is malformed; retrying the same request cannot help.
    "BadCollapseId": Outcome.MESSAGE_REJECTED,
    "BadExpirationDate": Outcome.MESSAGE_REJECTED,
    "BadMessageId": Outcome.MESSAGE_REJECTED,
    "BadPriority": Outcome.MESSAGE_REJECTED,
    "DuplicateHeaders": Outcome.MESSAGE_REJECTED,
    "InvalidPushType": Outcome.MESSAGE_REJECTED,
    "MissingDeviceToken": Outcome.MESSAGE_REJECTED,
    "PayloadEmpty": Outcome.MESSAGE_REJECTED,
    # 400: the bundle id of the application is wrong or missing: configuration.
    "BadTopic": Outcome.CREDENTIALS,
    "MissingTopic": Outcome.CREDENTIALS,
    # 400: Apple's advice is to reconnect and retry.
    "IdleTimeout": Outcome.TRANSIENT,
    # 403: certificate or provider token problems; they never say anything about the
    # device, so they never invalidate a token.
    "BadCertificate": Outcome.CREDENTIALS,
    "BadCertificateEnvironment": Outcome.CREDENTIALS,
    "ExpiredProviderToken": Outcome.CREDENTIALS,
    "InvalidProviderToken": Outcome.CREDENTIALS,
    "MissingProviderToken": Outcome.CREDENTIALS,
    "UnrelatedKeyIdInToken": Outcome.CREDENTIALS,
    "BadEnvironmentKeyIdInToken": Outcome.CREDENTIALS,
    "Forbidden": Outcome.CREDENTIALS,
    # 404 and 405: a wrong path or method is a client defect.
    "BadPath": Outcome.MESSAGE_REJECTED,
    "MethodNotAllowed": Outcome.MESSAGE_REJECTED,
    # 410: the token is no longer active; the reply carries a timestamp in ms.
    "ExpiredToken": Outcome.TOKEN_INVALID,
    "Unregistered": Outcome.TOKEN_INVALID,
    # 413: the body is over 4096 bytes.
    "PayloadTooLarge": Outcome.MESSAGE_REJECTED,
    # 429: too many pushes to one device, or provider tokens rotated under 20 minutes.
    "TooManyRequests": Outcome.THROTTLED,
    "TooManyProviderTokenUpdates": Outcome.THROTTLED,
    # 500 and 503: retry with backoff; Shutdown means this server is going away.
    "InternalServerError": Outcome.TRANSIENT,
    "ServiceUnavailable": Outcome.TRANSIENT,
    "Shutdown": Outcome.TRANSIENT,
}

# APNs: status -> outcome when the reason is missing or unknown. Source: Apple's status
# table (400 bad request, 403 authentication, 410 inactive token, 429, 5xx).
APNS_STATUSES: dict[int, Outcome] = {
    400: Outcome.MESSAGE_REJECTED,
    403: Outcome.CREDENTIALS,
    404: Outcome.MESSAGE_REJECTED,
    405: Outcome.MESSAGE_REJECTED,
    410: Outcome.TOKEN_INVALID,
    413: Outcome.MESSAGE_REJECTED,
    429: Outcome.THROTTLED,
}

# FCM: FcmError errorCode -> outcome. Source: FCM ErrorCode reference.
FCM_ERROR_CODES: dict[str, Outcome] = {
    # 400: bad payload, or a malformed token. fcm.py separates the two by the
    # message.token field violation and the "not a valid FCM registration token" text.
    "INVALID_ARGUMENT": Outcome.MESSAGE_REJECTED,
    # 404: the token is no longer valid (app uninstalled, token expired).
    "UNREGISTERED": Outcome.TOKEN_INVALID,
    # 403: the token belongs to another project; a configuration suspect.
    "SENDER_ID_MISMATCH": Outcome.TOKEN_INVALID,
    # 429: project, device or topic rate exceeded.
    "QUOTA_EXCEEDED": Outcome.THROTTLED,
    # 503 and 500: retry with backoff, honouring Retry-After.
    "UNAVAILABLE": Outcome.TRANSIENT,
    "INTERNAL": Outcome.TRANSIENT,
    # 401: the APNs key or certificate stored in the Firebase project is invalid.
    "THIRD_PARTY_AUTH_ERROR": Outcome.CREDENTIALS,
    "APNS_AUTH_ERROR": Outcome.CREDENTIALS,
}

# FCM: HTTP status -> outcome without a known errorCode. Source: google.rpc.Status
# codes (401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 429 RESOURCE_EXHAUSTED). A 404
# without UNREGISTERED means a wrong project in the URL, so it is configuration.
FCM_STATUSES: dict[int, Outcome] = {
    400: Outcome.MESSAGE_REJECTED,
    401: Outcome.CREDENTIALS,
    403: Outcome.CREDENTIALS,
    404: Outcome.CREDENTIALS,
    413: Outcome.MESSAGE_REJECTED,
    429: Outcome.THROTTLED,
}

# HMS: result code in the JSON body -> outcome. Source: Huawei Push Kit result codes.
HMS_SUCCESS_CODE = "80000000"
HMS_CODES: dict[str, Outcome] = {
    HMS_SUCCESS_CODE: Outcome.SENT,
    # Partial success; with one token per request it means that token is illegal.
    "80100000": Outcome.TOKEN_INVALID,
    # Incorrect message structure, or sensitive content.
    "80100003": Outcome.MESSAGE_REJECTED,
    "80100016": Outcome.MESSAGE_REJECTED,
    # OAuth failure or expired access token (hms.py refreshes once before giving up).
    "80200001": Outcome.CREDENTIALS,
    "80200003": Outcome.CREDENTIALS,
    # The app is not permitted to send.
    "80300002": Outcome.CREDENTIALS,
    # All tokens invalid.
    "80300007": Outcome.TOKEN_INVALID,
    # Message body over 4 KB, or token count outside 1-1000.
    "80300008": Outcome.MESSAGE_REJECTED,
    "80300010": Outcome.MESSAGE_REJECTED,
    # Internal error.
    "81000001": Outcome.TRANSIENT,
}

# HMS: HTTP status -> outcome without a known code. Source: Huawei's HTTP status list
# (400 parameter error, 401 authentication, 404 wrong URL, 5xx, 503 traffic control).
HMS_STATUSES: dict[int, Outcome] = {
    400: Outcome.MESSAGE_REJECTED,
    401: Outcome.CREDENTIALS,
    403: Outcome.CREDENTIALS,
    404: Outcome.CREDENTIALS,
    # On 503 (traffic control) Huawei's guidance is to slow down and spread sends.
    503: Outcome.THROTTLED,
}


def classify_status(statuses: dict[int, Outcome], status: int) -> Outcome:
    """Return the outcome for a status code alone; 5xx and unknown codes are transient."""
    known = statuses.get(status)
    if known is not None:
        return known
    if 400 <= status < 500:
        return Outcome.MESSAGE_REJECTED
    return Outcome.TRANSIENT


def classify_apns(status: int, reason: str | None) -> Outcome:
    """Return the outcome of one APNs reply."""
    if status == 200:
        return Outcome.SENT
    if reason is not None and reason in APNS_REASONS:
        return APNS_REASONS[reason]
    return classify_status(APNS_STATUSES, status)


def classify_fcm(status: int, error_code: str | None, token_rejected: bool = False) -> Outcome:
    """Return the outcome of one FCM reply.

    `token_rejected` is true when an INVALID_ARGUMENT names the registration token,
    which then is invalid rather than the message.
    """
    if status == 200:
        return Outcome.SENT
    if error_code == "INVALID_ARGUMENT" and token_rejected:
        return Outcome.TOKEN_INVALID
    if error_code is not None and error_code in FCM_ERROR_CODES:
        return FCM_ERROR_CODES[error_code]
    return classify_status(FCM_STATUSES, status)


def classify_hms(status: int, code: str | None) -> Outcome:
    """Return the outcome of one HMS reply, reading the body's code before the status."""
    if code is not None and code in HMS_CODES:
        return HMS_CODES[code]
    # An unknown code, even with HTTP 200, falls through to the status: a 200 becomes
    # transient, so the worker retries and fails the row after its attempt limit.
    return classify_status(HMS_STATUSES, status)
