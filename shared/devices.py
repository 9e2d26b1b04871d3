"""Device registration, activation status updates and device removal (push_device).

Registration rules:
- single mode upserts on (application, activation). Any other row of the application with
  the same token is then deleted, because the token moved to this activation.
- create/multi keeps one row per listed activation with this token and deletes the token's
  rows of activations that are not listed;
- a registration without an activation is keyed on (application, token);
- every registration sets timestamp_last_registered and clears timestamp_token_invalidated.
Each rule runs as one SQL statement, so concurrent identical registrations meet in
INSERT ... ON CONFLICT and end with one row and no error.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import asyncpg

from shared.applications import find_application_id
from shared.context import ServiceContext
from shared.exceptions import ActivationRejected, FeatureDisabled, RequestInvalid
from shared.requests import (
    ActivationStatus,
    CreateDeviceMultiRequest,
    CreateDeviceRequest,
    DeleteDeviceRequest,
    Platform,
    TokenRegistration,
    UpdateDeviceStatusRequest,
)

logger = logging.getLogger(__name__)

# APNs device tokens are 32 bytes of hex today. Apple documents that the length may grow,
# so up to 100 bytes are accepted. Spaces and angle brackets come from NSData's description.
APNS_TOKEN = re.compile(r"^(?:[0-9a-f]{2}){16,100}$")
APNS_NOISE = re.compile(r"[\s<>]")
# FCM registration tokens: about 150-200 characters of URL-safe base64 with ':' and '-'.
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:.\-]{16,4096}$")
# HMS tokens: letters, digits and a few punctuation characters, about 130 characters.
HMS_TOKEN = re.compile(r"^[A-Za-z0-9_:.+/=\-]{16,4096}$")

TOKEN_FORMATS = {
    Platform.APNS: (APNS_TOKEN, "an APNs token must be 32 to 100 bytes of hex"),
    Platform.FCM: (FCM_TOKEN, "an FCM token must be 16 to 4096 characters of A-Z a-z 0-9 _ : . -"),
    Platform.HMS: (
        HMS_TOKEN,
        "an HMS token must be 16 to 4096 characters of A-Z a-z 0-9 _ : . + / = -",
    ),
}

# NOTE: two concurrent registrations of one token under two different activations can both
# keep their row, because neither DELETE sees the other's uncommitted insert; the next
# registration of either activation removes the other row.
REGISTER_ACTIVATION = """
WITH upserted AS (
    INSERT INTO push_device AS d (activation_id, user_id, app_id, platform, push_token,
        environment, is_active, timestamp_last_registered, timestamp_token_invalidated)
    VALUES ($2, $3, $1, $4, $5, $6, $7, now(), NULL)
    ON CONFLICT (app_id, activation_id) WHERE activation_id IS NOT NULL DO UPDATE
    SET user_id = excluded.user_id, platform = excluded.platform,
        push_token = excluded.push_token, environment = excluded.environment,
        is_active = excluded.is_active, timestamp_last_registered = now(),
        timestamp_token_invalidated = NULL
    RETURNING d.id
)
DELETE FROM push_device AS other
USING upserted
WHERE other.app_id = $1 AND other.push_token = $5 AND other.id <> upserted.id
"""

REGISTER_WITHOUT_ACTIVATION = """
INSERT INTO push_device AS d (activation_id, user_id, app_id, platform, push_token,
    environment, is_active, timestamp_last_registered, timestamp_token_invalidated)
VALUES (NULL, $2, $1, $3, $4, $5, $6, now(), NULL)
ON CONFLICT ON CONSTRAINT push_device_app_token_activation_key DO UPDATE
SET user_id = excluded.user_id, platform = excluded.platform,
    environment = excluded.environment, is_active = excluded.is_active,
    timestamp_last_registered = now(), timestamp_token_invalidated = NULL
"""

REGISTER_MULTIPLE = """
WITH listed AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::boolean[])
        AS l(activation_id, user_id, is_active)
),
upserted AS (
    INSERT INTO push_device AS d (activation_id, user_id, app_id, platform, push_token,
        environment, is_active, timestamp_last_registered, timestamp_token_invalidated)
    SELECT l.activation_id, l.user_id, $1, $5, $6, $7, l.is_active, now(), NULL FROM listed AS l
    ON CONFLICT (app_id, activation_id) WHERE activation_id IS NOT NULL DO UPDATE
    SET user_id = excluded.user_id, platform = excluded.platform,
        push_token = excluded.push_token, environment = excluded.environment,
        is_active = excluded.is_active, timestamp_last_registered = now(),
        timestamp_token_invalidated = NULL
    RETURNING d.id
)
DELETE FROM push_device AS other
WHERE other.app_id = $1 AND other.push_token = $6
  AND other.id NOT IN (SELECT id FROM upserted)
"""


@dataclass(frozen=True, slots=True)
class ActivationState:
    """Status and user of one activation, from the request or from PowerAuth Server."""

    activation_id: str
    user_id: str
    is_active: bool


def normalize_token(platform: Platform, token: str) -> str:
    """Return the token in stored form; raise RequestInvalid when its format is wrong."""
    if platform is Platform.APNS:
        token = APNS_NOISE.sub("", token).lower()
    pattern, hint = TOKEN_FORMATS[platform]
    # fullmatch: "$" alone would also accept a token that ends in a newline.
    if not pattern.fullmatch(token):
        raise RequestInvalid(
            "Request validation failed",
            [{"fieldName": "requestObject.token", "hint": hint}],
        )
    return token


def stored_environment(request: TokenRegistration) -> str | None:
    # Only APNs has environments; FCM and HMS rows keep NULL.
    if request.platform is Platform.APNS and request.environment is not None:
        return request.environment.value
    return None


async def resolve_activation(
    context: ServiceContext, request: TokenRegistration, activation_id: str
) -> ActivationState:
    """Take status and user from the request, else from PowerAuth; reject REMOVED ones."""
    status = request.activation_status
    user_id = request.user_id
    if status is None or user_id is None:
        if context.powerauth is None:
            raise RequestInvalid(
                "Request validation failed",
                [
                    {
                        "fieldName": "requestObject.activationStatus",
                        "hint": "activationStatus and userId are required because no"
                        " PowerAuth Server is configured (PUSH_POWERAUTH_URL)",
                    }
                ],
            )
        info = await context.powerauth.get_activation(activation_id)
        status = parse_status(info.activation_status)
        user_id = user_id or info.user_id

    if status is None or status is ActivationStatus.REMOVED or not user_id:
        raise ActivationRejected(f"Activation {activation_id} is removed or does not exist")
    return ActivationState(activation_id, user_id, status is ActivationStatus.ACTIVE)


def parse_status(value: str | None) -> ActivationStatus | None:
    """Return PowerAuth's status value as the enum; None for a missing or unknown one."""
    if value is None or value not in ActivationStatus.__members__:
        return None
    return ActivationStatus(value)


async def create_device(context: ServiceContext, request: CreateDeviceRequest) -> None:
    """Register one token (single mode)."""
    token = normalize_token(request.platform, request.token)
    app_row_id = await find_application_id(context.pool, request.app_id)
    environment = stored_environment(request)

    if request.activation_id is None:
        is_active = request.activation_status in (None, ActivationStatus.ACTIVE)
        if request.activation_status is ActivationStatus.REMOVED:
            raise ActivationRejected("A device with activation status REMOVED cannot register")
        await context.pool.execute(
            REGISTER_WITHOUT_ACTIVATION,
            app_row_id,
            request.user_id,
            request.platform.value,
            token,
            environment,
            is_active,
        )
        return

    state = await resolve_activation(context, request, request.activation_id)
    arguments = (
        app_row_id,
        state.activation_id,
        state.user_id,
        request.platform.value,
        token,
        environment,
        state.is_active,
    )
    try:
        await context.pool.execute(REGISTER_ACTIVATION, *arguments)
    except asyncpg.UniqueViolationError:
        # ON CONFLICT arbitrates on (app, activation) only. A concurrent identical
        # registration can still hit the (app, token, activation) constraint before its
        # row is visible to the arbiter. By the retry it is visible, so the retry updates it.
        await context.pool.execute(REGISTER_ACTIVATION, *arguments)
    logger.info(
        "registered device app=%s activation=%s platform=%s",
        request.app_id,
        state.activation_id,
        request.platform.value,
    )


async def create_device_multi(context: ServiceContext, request: CreateDeviceMultiRequest) -> None:
    """Register one token for several activations (create/multi)."""
    if not context.settings.registration_multiple_activations_enabled:
        raise FeatureDisabled(
            "Registration of a token for multiple activations is disabled;"
            " set PUSH_REGISTRATION_MULTIPLE_ACTIVATIONS_ENABLED=true"
        )
    token = normalize_token(request.platform, request.token)
    app_row_id = await find_application_id(context.pool, request.app_id)
    states = [
        await resolve_activation(context, request, activation_id)
        for activation_id in request.activation_ids
    ]

    await context.pool.execute(
        REGISTER_MULTIPLE,
        app_row_id,
        [state.activation_id for state in states],
        [state.user_id for state in states],
        [state.is_active for state in states],
        request.platform.value,
        token,
        stored_environment(request),
    )


async def update_device_status(context: ServiceContext, request: UpdateDeviceStatusRequest) -> int:
    """Set is_active on every device of the activation, in every application.

    Without a status in the request, the status is read from PowerAuth Server.
    Returns the number of rows changed; no row is not an error.
    """
    status = request.activation_status
    if status is None:
        if context.powerauth is None:
            raise RequestInvalid(
                "Request validation failed",
                [
                    {
                        "fieldName": "activationStatus",
                        "hint": "activationStatus is required because no PowerAuth Server is"
                        " configured (PUSH_POWERAUTH_URL)",
                    }
                ],
            )
        info = await context.powerauth.get_activation(request.activation_id)
        status = parse_status(info.activation_status) or ActivationStatus.REMOVED

    result = await context.pool.execute(
        "UPDATE push_device SET is_active = $2 WHERE activation_id = $1",
        request.activation_id,
        status is ActivationStatus.ACTIVE,
    )
    return int(result.split()[-1])


async def delete_device(context: ServiceContext, request: DeleteDeviceRequest) -> int:
    """Delete every device of the application with the token; return the count."""
    app_row_id = await find_application_id(context.pool, request.app_id)
    # The token may arrive in the form it was registered in, before APNs normalisation.
    candidates = list({request.token, APNS_NOISE.sub("", request.token).lower()})
    result = await context.pool.execute(
        "DELETE FROM push_device WHERE app_id = $1 AND push_token = ANY($2::text[])",
        app_row_id,
        candidates,
    )
    return int(result.split()[-1])
