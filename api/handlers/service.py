"""Service status, health, metrics and API documentation endpoints (no API key needed)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.envelope import error, json_response, ok
from api.handlers.common import context_of
from shared.exceptions import PublishFailed

logger = logging.getLogger(__name__)

# NOTE: buildTime reports the process start, because the package records no build time.
STARTED_AT = datetime.now(UTC)

# Seconds that the readiness check waits for PostgreSQL.
DATABASE_CHECK_TIMEOUT_S = 5.0

OPENAPI_KEY = web.AppKey("openapi", dict)
DOCS_PAGE_KEY = web.AppKey("docs_page", str)


def package_version() -> str:
    try:
        return version("push-server")
    except PackageNotFoundError:
        return "unknown"


async def service_status(request: web.Request) -> web.Response:
    settings = context_of(request).settings
    return ok(
        {
            "applicationName": settings.application_name,
            "applicationDisplayName": settings.application_display_name,
            "applicationEnvironment": settings.application_environment,
            "version": package_version(),
            "buildTime": STARTED_AT,
            "timestamp": datetime.now(UTC),
        }
    )


async def live(_request: web.Request) -> web.Response:
    return json_response({"status": "UP"})


async def ready(request: web.Request) -> web.Response:
    """Return 200 only when PostgreSQL and RabbitMQ both respond."""
    context = context_of(request)
    checks = {"database": "UP", "broker": "UP"}
    try:
        await asyncio.wait_for(context.pool.fetchval("SELECT 1"), DATABASE_CHECK_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as failure:
        logger.warning("readiness check of PostgreSQL failed: %r", failure)
        checks["database"] = "DOWN"
    try:
        await context.publisher.check()
    except PublishFailed as failure:
        logger.warning("readiness: %s", failure)
        checks["broker"] = "DOWN"

    if "DOWN" in checks.values():
        return error(503, "ERROR_NOT_READY", "A dependency check failed", checks=checks)
    return json_response({"status": "UP", "checks": checks})


async def metrics(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS_PAGE_KEY], content_type="text/html")
