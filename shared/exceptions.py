"""Exceptions of the push server, named after what went wrong.

PushServerError
├── SettingsError              a PUSH_ variable is missing or invalid
├── MigrationError             a migration file cannot be applied
│   └── MigrationChanged       an applied migration file was edited afterwards
└── SecretError                a secret value cannot be encrypted or decrypted
    ├── UnknownMasterKey       the value names a master key that is not configured
    └── SecretTampered         the value fails authentication (corrupt or altered)
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
