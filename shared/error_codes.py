"""Error codes of the original's error envelope, per exception, with the HTTP status.

The REST API responds with the status and code; the AMQP ingest consumer puts the same code
in its error replies. Keeping both in one table makes an error read the same on both paths.
"""

from __future__ import annotations

import asyncpg

from shared.exceptions import (
    AuthenticationRequired,
    BodyTooLarge,
    IdempotencyKeyReused,
    MessageNotFound,
    PermissionDenied,
    PowerAuthUnavailable,
    PublishFailed,
    RequestInvalid,
    RequestRejected,
    UnsupportedMediaType,
)

# Status and code per exception class; the first matching class wins, so subclasses
# come before their base class.
ERROR_STATUSES: tuple[tuple[type[Exception], int, str], ...] = (
    (RequestInvalid, 400, "ERROR_REQUEST"),
    (BodyTooLarge, 413, "ERROR_REQUEST"),
    (UnsupportedMediaType, 415, "ERROR_REQUEST"),
    (MessageNotFound, 404, "ERROR_MESSAGE_NOT_FOUND"),
    (IdempotencyKeyReused, 409, "ERROR_IDEMPOTENCY_KEY_REUSED"),
    (RequestRejected, 400, "ERROR_GENERIC"),
    (PowerAuthUnavailable, 400, "ERROR_PA_SERVER_COMM"),
    (AuthenticationRequired, 401, "ERROR_UNAUTHORIZED"),
    (PermissionDenied, 403, "ERROR_FORBIDDEN"),
    (PublishFailed, 503, "ERROR_SERVICE_UNAVAILABLE"),
    (asyncpg.UniqueViolationError, 409, "ERROR_DATA_INTEGRITY"),
)


def status_and_code(failure: Exception) -> tuple[int, str] | None:
    """Return the HTTP status and error code of an exception, or None when it is unexpected."""
    for kind, status, code in ERROR_STATUSES:
        if isinstance(failure, kind):
            return status, code
    return None
