"""The REST API process: `push-server api`.

It validates requests, writes rows, publishes their ids and responds. It never calls a
push provider.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import aio_pika
import asyncpg
import uvloop
from aiohttp import web

from api.handlers.common import CONTEXT_KEY
from api.handlers.service import DOCS_PAGE_KEY, OPENAPI_KEY, package_version
from api.middleware import AUTHENTICATOR_KEY, MIDDLEWARES
from api.openapi import build_docs_page, build_openapi
from api.request_ids import correlation_headers, install_log_filter
from api.routes import add_routes
from shared.api_keys import Authenticator, parse_api_keys
from shared.context import ServiceContext, open_context
from shared.exceptions import PushServerError
from shared.idempotency import delete_expired
from shared.logs import configure_logging
from shared.settings import Settings, load_settings

logger = logging.getLogger(__name__)

# Seconds between deletions of expired Idempotency-Keys.
IDEMPOTENCY_CLEANUP_INTERVAL_S = 600.0


def build_authenticator(settings: Settings) -> Authenticator | None:
    """Return the API key check, or None when PUSH_AUTH_DISABLED=true."""
    if settings.auth_disabled:
        logger.warning(
            "authentication is disabled (PUSH_AUTH_DISABLED=true): every caller may use every"
            " endpoint, including /admin/app"
        )
        return None
    keys = parse_api_keys(settings.api_keys.get_secret_value())
    if not keys:
        logger.warning("PUSH_API_KEYS is empty: every endpoint that needs a key returns 401")
    return Authenticator(keys)


def build_app(context: ServiceContext, authenticator: Authenticator | None) -> web.Application:
    """Return the aiohttp application over an open context."""
    app = web.Application(
        middlewares=MIDDLEWARES, client_max_size=context.settings.api_max_bulk_body_bytes
    )
    app[CONTEXT_KEY] = context
    if context.powerauth is not None:
        context.powerauth.forwarded_headers = correlation_headers
    if authenticator is not None:
        app[AUTHENTICATOR_KEY] = authenticator
    add_routes(app)
    document = build_openapi(package_version())
    app[OPENAPI_KEY] = document
    app[DOCS_PAGE_KEY] = build_docs_page(document)
    return app


async def clean_idempotency_keys(pool: asyncpg.Pool) -> None:
    while True:
        await asyncio.sleep(IDEMPOTENCY_CLEANUP_INTERVAL_S)
        try:
            deleted = await delete_expired(pool)
        except (OSError, asyncpg.PostgresError) as failure:
            logger.warning("deleting expired idempotency keys failed: %r", failure)
            continue
        if deleted:
            logger.info("deleted %d expired idempotency keys", deleted)


async def serve(settings: Settings) -> None:
    """Run the API until SIGINT or SIGTERM."""
    authenticator = build_authenticator(settings)
    async with open_context(settings) as context:
        runner = web.AppRunner(build_app(context, authenticator), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.api_host, settings.api_port, backlog=1024)
        await site.start()
        logger.info("API listening on http://%s:%d", settings.api_host, settings.api_port)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        cleaner = asyncio.create_task(clean_idempotency_keys(context.pool))
        await stop.wait()

        logger.info("API stopping")
        cleaner.cancel()
        await runner.cleanup()
    logger.info("API stopped")


def main(argv: Sequence[str]) -> int:
    """Entry point of `push-server api`."""
    argparse.ArgumentParser(
        prog="push-server api",
        description="Run the REST API on PUSH_API_HOST:PUSH_API_PORT.",
    ).parse_args(argv)
    configure_logging()
    install_log_filter()

    try:
        settings: Settings = load_settings()
        uvloop.run(serve(settings))
    except PushServerError as failure:
        logger.error("API start-up failed: %s", failure)
        return 1
    except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError) as failure:
        logger.error("API start-up failed: %r", failure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
