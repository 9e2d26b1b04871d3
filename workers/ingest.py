"""AMQP ingest: send requests that backends publish to RabbitMQ instead of calling HTTP.

Backends publish to the `<prefix>.ingest` exchange (direct, routing key `<prefix>.ingest`).
The AMQP `type` property names the request; the body is exactly the HTTP request body of the
matching endpoint, with its `requestObject` envelope:

- `push.message.send`: the body of POST /push/message/send;
- `push.message.batch.send`: the body of POST /push/message/batch/send;
- `push.campaign.send.live`: `{"requestObject": {"campaignId": N}}`.

The consumer validates with the REST API's models and writes rows with its request logic,
then acks only after the rows are committed and their delivery batches are confirmed. The
publisher's `message_id` is the idempotency key (the store of the HTTP Idempotency-Key), so a
redelivered or republished request writes no second set of rows. With `reply_to` and
`correlation_id` set, the consumer publishes the JSON that the REST API would return to the
`reply_to` queue.
An invalid request goes to the dead-letter queue with the reason in the
`x-rejection-reason` header, and is never requeued.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import Counter as MetricCounter
from pydantic import BaseModel, ConfigDict, Field

from shared.campaigns import send_live
from shared.context import ServiceContext, open_context
from shared.error_codes import status_and_code
from shared.exceptions import BodyTooLarge, PublishFailed, PushServerError, RequestInvalid
from shared.idempotency import check_key
from shared.logs import configure_logging
from shared.messages import send_messages
from shared.queue import REJECTION_REASON_HEADER, QueueNames, connect
from shared.requests import (
    ObjectRequest,
    SendMessageBatchRequest,
    SendMessageRequest,
    decode_json,
    parse_request,
)
from shared.settings import Settings, load_settings

logger = logging.getLogger(__name__)

TYPE_SEND = "push.message.send"
TYPE_BATCH_SEND = "push.message.batch.send"
TYPE_CAMPAIGN_SEND_LIVE = "push.campaign.send.live"
REQUEST_TYPES = (TYPE_SEND, TYPE_BATCH_SEND, TYPE_CAMPAIGN_SEND_LIVE)

# Seconds a request waits before it goes back to the queue after a database or broker
# failure, so an outage does not become a hot redelivery loop.
RETRY_DELAY_S = 1.0

INGESTED = MetricCounter(
    "push_ingest_requests_total", "AMQP send requests by type and result", ["type", "result"]
)


class CampaignSendRequest(BaseModel):
    """The requestObject of `push.campaign.send.live`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    campaign_id: int = Field(alias="campaignId", ge=1, le=2**63 - 1, strict=True)


class InvalidIngestRequest(PushServerError):
    """An AMQP request has no usable type or message id."""

    def __init__(self, field: str, hint: str) -> None:
        super().__init__(hint)
        self.violation: dict[str, object] = {"fieldName": field, "hint": hint}


def error_document(failure: Exception) -> dict[str, Any]:
    """Build the REST API's error envelope for a failure, with the same code."""
    if isinstance(failure, InvalidIngestRequest):
        failure = RequestInvalid("Request validation failed", [failure.violation])
    known = status_and_code(failure)
    response: dict[str, Any] = {
        "code": known[1] if known else "ERROR_GENERIC",
        "message": str(failure),
    }
    if isinstance(failure, RequestInvalid):
        response["violations"] = failure.violations
    return {"status": "ERROR", "responseObject": response}


class IngestConsumer:
    """Consumes `<prefix>.ingest` with the request logic of a ServiceContext."""

    def __init__(
        self, context: ServiceContext, connection: AbstractRobustConnection, prefetch: int
    ) -> None:
        self.context = context
        self.connection = connection
        self.names = QueueNames(context.settings.queue_prefix)
        self.prefetch = prefetch
        self.channel: AbstractChannel | None = None
        self.consumer_tag: str | None = None
        self.in_flight: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=self.prefetch)
        queue = await self.channel.get_queue(self.names.ingest, ensure=True)
        self.queue = queue
        self.consumer_tag = await queue.consume(self.on_message)
        logger.info("AMQP ingest consuming %s, prefetch %d", self.names.ingest, self.prefetch)

    async def stop(self, grace_s: float) -> None:
        """Stop consuming and let requests in progress finish within the grace period."""
        if self.consumer_tag is not None:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, RuntimeError):
                await self.queue.cancel(self.consumer_tag)
        if self.in_flight:
            _done, pending = await asyncio.wait(set(self.in_flight), timeout=grace_s)
            for task in pending:
                task.cancel()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        try:
            await self.handle(message)
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Run one request; ack, dead-letter or requeue it."""
        request_type = message.type or ""
        try:
            answer = await self.run_request(message, request_type)
        except (PublishFailed, asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as error:
            await self.retry_later(message, request_type, error)
            return
        except (PushServerError, ValueError) as error:
            await self.reject(message, request_type, error)
            return
        except Exception as error:
            # An unexpected error must not leave the message unacked: it would hold a
            # prefetch slot and come back after every restart. It is dead-lettered instead.
            logger.exception("AMQP %s (message_id %s) failed", request_type, message.message_id)
            await self.reject(message, request_type, error)
            return

        # The REST API omits a null responseObject, so the reply does too.
        document: dict[str, Any] = {"status": "OK"}
        if answer is not None:
            document["responseObject"] = answer
        await self.reply(message, document)
        INGESTED.labels(request_type, "ok").inc()
        await message.ack()

    async def run_request(self, message: AbstractIncomingMessage, request_type: str) -> Any:
        if request_type not in REQUEST_TYPES:
            choices = ", ".join(REQUEST_TYPES)
            raise InvalidIngestRequest(
                "type", f"unknown request type {request_type!r}; use one of {choices}"
            )
        limit = self.context.settings.api_max_body_bytes
        if len(message.body) > limit:
            raise BodyTooLarge(limit)
        document = decode_json(message.body)
        if request_type == TYPE_CAMPAIGN_SEND_LIVE:
            campaign = parse_object(CampaignSendRequest, document)
            await send_live(self.context, campaign.campaign_id)
            return None

        model: type[SendMessageRequest] | type[SendMessageBatchRequest]
        model = SendMessageRequest if request_type == TYPE_SEND else SendMessageBatchRequest
        request = parse_object(model, document)
        key = idempotency_key_of(message)
        # NOTE: single sends over AMQP cost PostgreSQL about 25 times more per request than
        # over HTTP (703 against 5,104 requests/s in the ingest benchmark). A likely cause is
        # that their rows are not written in shared statements here, but it is unconfirmed.
        result = await send_messages(self.context, request, key, require_publish=True)
        logger.info(
            "AMQP %s of app=%s wrote %d messages%s (message_id %s)",
            request_type,
            request.app_id,
            len(result.all_ids),
            " (replayed)" if result.replayed else "",
            message.message_id,
        )
        return result.to_response()

    async def retry_later(
        self, message: AbstractIncomingMessage, request_type: str, error: Exception
    ) -> None:
        logger.warning(
            "AMQP %s (message_id %s) failed, back to the queue in %.0f s: %s",
            request_type,
            message.message_id,
            RETRY_DELAY_S,
            error,
        )
        INGESTED.labels(request_type, "retried").inc()
        await asyncio.sleep(RETRY_DELAY_S)
        await message.nack(requeue=True)

    async def reject(
        self, message: AbstractIncomingMessage, request_type: str, error: Exception
    ) -> None:
        """Dead-letter an invalid request with the reason, and reply with the error."""
        document = error_document(error)
        reason = describe_rejection(document)
        logger.info(
            "AMQP %s (message_id %s) rejected: %s", request_type, message.message_id, reason
        )
        await self.dead_letter(message, reason)
        await self.reply(message, document)
        INGESTED.labels(request_type or "none", "rejected").inc()
        await message.ack()

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        assert self.channel is not None
        exchange = await self.channel.get_exchange(self.names.dead_exchange)
        headers = dict(message.headers or {})
        headers[REJECTION_REASON_HEADER] = reason[:1000]
        await exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                type=message.type,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.names.ingest,
        )

    async def reply(self, message: AbstractIncomingMessage, document: dict[str, Any]) -> None:
        """Publish the reply to `reply_to` when the request has one; a failed reply is logged."""
        if not message.reply_to:
            return
        assert self.channel is not None
        reply = aio_pika.Message(
            orjson.dumps(document, default=str),
            content_type="application/json",
            correlation_id=message.correlation_id,
            type=f"{message.type}.reply" if message.type else None,
        )
        try:
            await self.channel.default_exchange.publish(reply, routing_key=message.reply_to)
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            logger.warning(
                "reply to %s (correlation_id %s) failed: %r",
                message.reply_to,
                message.correlation_id,
                error,
            )


def parse_object(model: type[Any], document: Any) -> Any:
    """Parse `{"requestObject": ...}` as the REST API does."""
    envelope = parse_request(envelope_of(model), document)
    return envelope.request_object


# Envelope models by request model. pydantic keeps parametrised generic models only
# weakly, so building the class again per request would repeat its schema construction.
ENVELOPES: dict[type[Any], type[Any]] = {}


def envelope_of(model: type[Any]) -> type[Any]:
    """Return the envelope model of a request model, built once per process."""
    envelope = ENVELOPES.get(model)
    if envelope is None:
        envelope = ObjectRequest[model]  # type: ignore[valid-type]
        ENVELOPES[model] = envelope
    return envelope


def idempotency_key_of(message: AbstractIncomingMessage) -> str | None:
    """Return the publisher's message_id, the idempotency key of the request."""
    if not message.message_id:
        return None
    try:
        return check_key(message.message_id)
    except RequestInvalid:
        raise InvalidIngestRequest(
            "message_id", "the message_id property must be 1 to 255 printable characters"
        ) from None


def describe_rejection(document: dict[str, Any]) -> str:
    response = document["responseObject"]
    violations = response.get("violations") or []
    details = "; ".join(f"{item.get('fieldName')}: {item.get('hint')}" for item in violations)
    return f"{response['code']}: {response['message']}" + (f" ({details})" if details else "")


async def serve(settings: Settings) -> None:
    """Run the ingest consumer alone until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    async with open_context(settings) as context:
        connection = await connect(settings.amqp_url.get_secret_value())
        consumer = IngestConsumer(context, connection, settings.ingest_prefetch)
        await consumer.start()
        await stop.wait()
        await consumer.stop(settings.shutdown_grace_s)
        await connection.close()
    logger.info("AMQP ingest stopped")


def main(argv: Sequence[str]) -> int:
    """Entry point of `push-server ingest`."""
    argparse.ArgumentParser(
        prog="push-server ingest",
        description="Run the AMQP ingest consumer alone (push-server worker runs it too).",
    ).parse_args(argv)
    configure_logging()

    try:
        settings: Settings = load_settings()
        import uvloop

        uvloop.run(serve(settings))
    except PushServerError as error:
        logger.error("ingest start-up failed: %s", error)
        return 1
    except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError) as error:
        logger.error("ingest failed: %r", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
