"""Settings read from PUSH_ variables: defaults, rejected values and masked secrets."""

from __future__ import annotations

import base64
import os

import pytest

from shared.exceptions import SettingsError
from shared.settings import DatabaseSettings, Settings, load_settings

VALID_KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def environment(clean_environment: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    clean_environment.setenv(
        "PUSH_DATABASE_URL", "postgresql://push:dbpassword@127.0.0.1:5432/push"
    )
    clean_environment.setenv("PUSH_AMQP_URL", "amqp://push:amqppassword@127.0.0.1:5672/")
    clean_environment.setenv("PUSH_MASTER_KEY", VALID_KEY)
    return clean_environment


def test_valid_environment_loads(environment: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert settings.api_port == 8080
    assert settings.master_keys == {"1": base64.b64decode(VALID_KEY)}


def test_repr_hides_passwords_and_keys(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PUSH_PREVIOUS_MASTER_KEYS", f"old:{VALID_KEY}")
    text = repr(load_settings()) + str(load_settings())

    assert "dbpassword" not in text
    assert "amqppassword" not in text
    assert VALID_KEY not in text
    assert "postgresql://push:***@127.0.0.1:5432/push" in text


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PUSH_MASTER_KEY", "not base64!", "PUSH_MASTER_KEY is not valid base64"),
        ("PUSH_MASTER_KEY", base64.b64encode(b"short").decode(), "must decode to 32 bytes"),
        ("PUSH_DATABASE_URL", "mysql://x@y/z", "PUSH_DATABASE_URL must be a URL like postgresql"),
        ("PUSH_AMQP_URL", "http://x", "PUSH_AMQP_URL must be a URL like amqp"),
        ("PUSH_API_PORT", "eighty", "PUSH_API_PORT Input should be a valid integer"),
        ("PUSH_API_PORT", "70000", "PUSH_API_PORT Input should be less than or equal to 65535"),
        ("PUSH_PREVIOUS_MASTER_KEYS", "nocolon", "PUSH_PREVIOUS_MASTER_KEYS each entry"),
        ("PUSH_PREVIOUS_MASTER_KEYS", "old:abc", "entry 'old' is not valid base64"),
        ("PUSH_CA_FILE", "/no/such/ca.pem", "PUSH_CA_FILE file '/no/such/ca.pem' does not exist"),
        ("PUSH_APNS_DEFAULT_ENVIRONMENT", "staging", "PUSH_APNS_DEFAULT_ENVIRONMENT"),
    ],
)
def test_invalid_value_named(
    environment: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    environment.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert message in str(raised.value)
    assert value not in str(raised.value) or variable == "PUSH_CA_FILE"


def test_missing_values_named(clean_environment: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings()

    for variable in ("PUSH_DATABASE_URL", "PUSH_AMQP_URL", "PUSH_MASTER_KEY"):
        assert f"{variable} is missing" in str(raised.value)


def test_migrate_needs_only_database_url(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("PUSH_DATABASE_URL", "postgresql://push@127.0.0.1/push")

    settings = load_settings(DatabaseSettings)

    assert not isinstance(settings, Settings)
