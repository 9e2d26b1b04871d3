"""Applications and their provider credentials (push_app_credentials).

Uploaded credentials are checked before they are stored, so a broken key fails at upload
and not at the first send, and the secret parts are stored encrypted. No function here
returns a secret.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from shared.context import ServiceContext
from shared.exceptions import (
    ApplicationExists,
    ApplicationNotFound,
    CredentialsInvalid,
    FeatureDisabled,
)
from shared.requests import (
    ApplicationDetailRequest,
    UpdateApnsRequest,
    UpdateFcmRequest,
    UpdateHmsRequest,
)

# Fields a Google service-account JSON must have for the OAuth 2.0 JWT flow.
SERVICE_ACCOUNT_FIELDS = (
    "type",
    "project_id",
    "private_key_id",
    "private_key",
    "client_email",
    "token_uri",
)

# The two messages the original sends for an unknown appId, depending on the endpoint.
APPLICATION_NOT_FOUND = "Application with given ID does not exist"
CREDENTIALS_NOT_FOUND = "AppCredentials not found"

LIST_APPLICATIONS = """
SELECT app_id,
       ios_private_key IS NOT NULL AS apns,
       android_private_key IS NOT NULL AS fcm,
       hms_client_id IS NOT NULL AND hms_client_secret IS NOT NULL AS hms
FROM push_app_credentials ORDER BY app_id
"""

APPLICATION_DETAIL = """
SELECT app_id, ios_bundle, ios_key_id, ios_team_id, ios_environment, android_project_id,
       hms_project_id, hms_client_id,
       ios_private_key IS NOT NULL AS apns,
       android_private_key IS NOT NULL AS fcm,
       hms_client_id IS NOT NULL AND hms_client_secret IS NOT NULL AS hms
FROM push_app_credentials WHERE app_id = $1
"""

UPDATE_APNS = """
UPDATE push_app_credentials
SET ios_bundle = $2, ios_key_id = $3, ios_team_id = $4, ios_private_key = $5,
    ios_environment = $6, timestamp_last_updated = now()
WHERE app_id = $1
"""

UPDATE_FCM = """
UPDATE push_app_credentials
SET android_project_id = $2, android_private_key = $3, timestamp_last_updated = now()
WHERE app_id = $1
"""

UPDATE_HMS = """
UPDATE push_app_credentials
SET hms_project_id = $2, hms_client_id = $3, hms_client_secret = $4,
    timestamp_last_updated = now()
WHERE app_id = $1
"""

# Removing a provider's credentials nulls every column of that provider.
REMOVE_CREDENTIALS = {
    "apns": "ios_bundle = NULL, ios_key_id = NULL, ios_team_id = NULL,"
    " ios_private_key = NULL, ios_environment = NULL",
    "fcm": "android_project_id = NULL, android_private_key = NULL",
    "hms": "hms_project_id = NULL, hms_client_id = NULL, hms_client_secret = NULL",
}


async def find_application_id(
    connection: asyncpg.Pool | asyncpg.Connection,
    app_id: str,
    message: str = APPLICATION_NOT_FOUND,
) -> int:
    """Return the numeric id of the application named by appId; raise ApplicationNotFound."""
    row_id = await connection.fetchval(
        "SELECT id FROM push_app_credentials WHERE app_id = $1", app_id
    )
    if row_id is None:
        raise ApplicationNotFound(message)
    return int(row_id)


async def list_applications(context: ServiceContext) -> list[dict[str, Any]]:
    """Return every application with a flag per configured provider."""
    rows = await context.pool.fetch(LIST_APPLICATIONS)
    return [
        {"appId": row["app_id"], "apns": row["apns"], "fcm": row["fcm"], "hms": row["hms"]}
        for row in rows
    ]


async def list_unconfigured_applications(context: ServiceContext) -> list[dict[str, Any]]:
    """Return the PowerAuth applications that have no push_app_credentials row."""
    if context.powerauth is None:
        raise FeatureDisabled(
            "Listing unconfigured applications needs PowerAuth Server; set PUSH_POWERAUTH_URL"
        )
    known = await context.powerauth.list_application_ids()
    rows = await context.pool.fetch(
        "SELECT app_id FROM push_app_credentials WHERE app_id = ANY($1::text[])", known
    )
    configured = {row["app_id"] for row in rows}
    return [{"appId": app_id} for app_id in dict.fromkeys(known) if app_id not in configured]


async def get_application_detail(
    context: ServiceContext, request: ApplicationDetailRequest
) -> dict[str, Any]:
    """Return an application's non-secret settings, one group per include flag."""
    row = await context.pool.fetchrow(APPLICATION_DETAIL, request.app_id)
    if row is None:
        raise ApplicationNotFound(APPLICATION_NOT_FOUND)
    detail: dict[str, Any] = {
        "application": {
            "appId": row["app_id"],
            "apns": row["apns"],
            "fcm": row["fcm"],
            "hms": row["hms"],
        }
    }
    if request.include_apns:
        detail["apnsBundle"] = row["ios_bundle"]
        detail["apnsKeyId"] = row["ios_key_id"]
        detail["apnsTeamId"] = row["ios_team_id"]
        detail["apnsEnvironment"] = row["ios_environment"]
    if request.include_fcm:
        detail["fcmProjectId"] = row["android_project_id"]
    if request.include_hms:
        detail["hmsProjectId"] = row["hms_project_id"]
        detail["hmsClientId"] = row["hms_client_id"]
    return {key: value for key, value in detail.items() if value is not None}


async def create_application(context: ServiceContext, app_id: str) -> dict[str, Any]:
    """Create an application without credentials; raise ApplicationExists."""
    row_id = await context.pool.fetchval(
        "INSERT INTO push_app_credentials (app_id) VALUES ($1)"
        " ON CONFLICT (app_id) DO NOTHING RETURNING id",
        app_id,
    )
    if row_id is None:
        raise ApplicationExists("Application already exists")
    return {"appId": app_id}


async def update_apns(context: ServiceContext, request: UpdateApnsRequest) -> None:
    """Check and store APNs credentials; the .p8 key is stored encrypted."""
    key = decode_base64(request.private_key_base64, "privateKeyBase64")
    check_apns_key(key)
    encrypted = context.secret_box.encrypt(key, "ios_private_key")
    environment = request.environment.value if request.environment else None
    await update_or_raise(
        context,
        UPDATE_APNS,
        request.app_id,
        request.bundle,
        request.key_id,
        request.team_id,
        encrypted,
        environment,
    )


async def update_fcm(context: ServiceContext, request: UpdateFcmRequest) -> None:
    """Check and store FCM credentials; the service-account JSON is stored encrypted."""
    document = decode_base64(request.private_key_base64, "privateKeyBase64")
    check_service_account(document)
    encrypted = context.secret_box.encrypt(document, "android_private_key")
    await update_or_raise(context, UPDATE_FCM, request.app_id, request.project_id, encrypted)


async def update_hms(context: ServiceContext, request: UpdateHmsRequest) -> None:
    """Store HMS credentials; the client secret is stored encrypted."""
    encrypted = context.secret_box.encrypt(request.client_secret.encode(), "hms_client_secret")
    await update_or_raise(
        context, UPDATE_HMS, request.app_id, request.project_id, request.client_id, encrypted
    )


async def remove_credentials(context: ServiceContext, app_id: str, provider: str) -> None:
    """Null one provider's credential columns of an application."""
    assignments = REMOVE_CREDENTIALS[provider]
    await update_or_raise(
        context,
        f"UPDATE push_app_credentials SET {assignments}, timestamp_last_updated = now()"
        " WHERE app_id = $1",
        app_id,
    )


async def update_or_raise(context: ServiceContext, query: str, app_id: str, *values: Any) -> None:
    status = await context.pool.execute(query, app_id, *values)
    if status == "UPDATE 0":
        raise ApplicationNotFound(APPLICATION_NOT_FOUND)


def decode_base64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsInvalid(f"{field} is not valid base64") from None


def check_apns_key(key: bytes) -> None:
    """Raise CredentialsInvalid unless the bytes are a PEM EC P-256 private key (a .p8 file)."""
    try:
        private_key = load_pem_private_key(key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialsInvalid(
            "privateKeyBase64 must be the base64 of an APNs .p8 file (a PEM private key)"
        ) from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise CredentialsInvalid("the APNs key must be an EC P-256 private key")


def check_service_account(document: bytes) -> None:
    """Raise CredentialsInvalid unless the bytes are a usable service-account JSON."""
    try:
        account = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise CredentialsInvalid("privateKeyBase64 must encode a service-account JSON") from None
    if not isinstance(account, dict):
        raise CredentialsInvalid("the service-account JSON must be an object")

    missing = [name for name in SERVICE_ACCOUNT_FIELDS if not isinstance(account.get(name), str)]
    if missing:
        raise CredentialsInvalid(f"the service-account JSON lacks {', '.join(missing)}")
    if account["type"] != "service_account":
        raise CredentialsInvalid("the service-account JSON must have type service_account")

    try:
        private_key = load_pem_private_key(account["private_key"].encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialsInvalid(
            "private_key of the service-account JSON is not a PEM key"
        ) from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise CredentialsInvalid("private_key of the service-account JSON must be an RSA key")
