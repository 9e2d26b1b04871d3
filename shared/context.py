"""What the request logic needs from its process: pool, publisher, settings and clients.

The REST API and the AMQP ingest consumer build one `ServiceContext` at start-up and pass
it to the functions of `shared.devices`, `shared.messages`, `shared.campaigns` and
`shared.applications`, which know nothing about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from shared.secrets import SecretBox
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.delivery_publisher import DeliveryPublisher
    from shared.message_waiter import MessageWaiter
    from shared.powerauth import PowerAuthClient


@dataclass(slots=True)
class ServiceContext:
    """The shared resources of one API or ingest process."""

    settings: Settings
    pool: asyncpg.Pool
    publisher: DeliveryPublisher
    secret_box: SecretBox
    powerauth: PowerAuthClient | None
    waiter: MessageWaiter
