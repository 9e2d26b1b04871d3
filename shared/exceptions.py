"""Exceptions of the push server, named after what went wrong.

PushServerError
├── SettingsError              a PUSH_ variable is missing or invalid
├── MigrationError             a migration file cannot be applied
│   └── MigrationChanged       an applied migration file was edited afterwards
├── SecretError                a secret value cannot be encrypted or decrypted
│   ├── UnknownMasterKey       the value names a master key that is not configured
│   └── SecretTampered         the value fails authentication (corrupt or altered)
├── RequestRejected            a request cannot be carried out as sent
│   ├── RequestInvalid         fields fail validation; carries one violation per field
│   ├── BodyTooLarge           the request body exceeds the route's size limit
│   ├── UnsupportedMediaType   the request body is not JSON
│   ├── ApplicationNotFound    no application has the given appId
│   ├── ApplicationExists      an application with the given appId already exists
│   ├── ActivationRejected     the activation is missing or REMOVED in PowerAuth
│   ├── CampaignNotFound       no campaign has the given id
│   ├── MessageNotFound        no push_message row has the given id
│   ├── FeatureDisabled        the endpoint needs a setting that is off
│   ├── IdempotencyKeyReused   an Idempotency-Key comes back with a different request
│   └── CredentialsInvalid     an uploaded APNs key, service account or HMS value is unusable
├── PowerAuthUnavailable       PowerAuth Server cannot be reached or returns an error
├── AuthenticationRequired     no valid API key came with the request
├── PermissionDenied           the API key lacks the role the endpoint needs
└── PublishFailed              the broker did not confirm a publish
"""

from __future__ import annotations


class PushServerError(Exception):
    """Base class of every error the push server raises on purpose."""


class SettingsError(PushServerError):
    """A PUSH_ environment variable is missing or has an invalid value."""


class MigrationError(PushServerError):
    """A migration file cannot be applied."""


class MigrationChanged(MigrationError):
    """A migration file that is already applied differs from the recorded checksum."""


class SecretError(PushServerError):
    """A secret value cannot be encrypted or decrypted."""


class UnknownMasterKey(SecretError):
    """An encrypted value names a master key id that is not configured."""


class SecretTampered(SecretError):
    """An encrypted value fails AES-GCM authentication: it was corrupted or altered."""


class RequestRejected(PushServerError):
    """A request cannot be carried out as sent; the caller must change it."""


class RequestInvalid(RequestRejected):
    """Request fields fail validation; `violations` names each field."""

    def __init__(self, message: str, violations: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.violations = violations


class BodyTooLarge(RequestRejected):
    """The request body exceeds the size limit of its route."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class UnsupportedMediaType(RequestRejected):
    """The request body has a Content-Type other than JSON."""


class ApplicationNotFound(RequestRejected):
    """No application (push_app_credentials row) has the given appId."""


class ApplicationExists(RequestRejected):
    """An application with the given appId already exists."""


class ActivationRejected(RequestRejected):
    """The activation is missing or REMOVED, so no device may be registered for it."""


class CampaignNotFound(RequestRejected):
    """No campaign has the given id."""


class MessageNotFound(RequestRejected):
    """No push_message row has the given id."""


class FeatureDisabled(RequestRejected):
    """The endpoint needs a setting that is turned off."""


class IdempotencyKeyReused(RequestRejected):
    """An Idempotency-Key was used before with a different request body."""


class CredentialsInvalid(RequestRejected):
    """An uploaded APNs key, FCM service account or HMS value cannot be used."""


class PowerAuthUnavailable(PushServerError):
    """PowerAuth Server cannot be reached, times out or returns an error."""


class AuthenticationRequired(PushServerError):
    """The request carries no API key, or one that matches no configured key."""


class PermissionDenied(PushServerError):
    """The API key is valid but lacks the role that the endpoint needs."""


class PublishFailed(PushServerError):
    """RabbitMQ did not confirm a publish (connection lost, nack or unroutable)."""
