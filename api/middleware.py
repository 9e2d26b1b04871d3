"""Middleware: request ids, metrics, the exception-to-status mapping, and API keys.

`error_middleware` is the only place that maps exceptions to HTTP status codes: the request logic
raises the exceptions of `shared.exceptions`, and this module turns them into the
original's error envelope.
"""

from __future__ import annotations

import logging
import time

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from api.envelope import error
from api.metrics import REQUEST_SECONDS, REQUESTS
from api.request_ids import (
    accepted_correlation_id,
    choose_request_id,
    correlation_id_var,
    request_id_var,
)
from api.routes import endpoint_of
from shared.api_keys import Authenticator
from shared.error_codes import status_and_code
from shared.exceptions import AuthenticationRequired, RequestInvalid

logger = logging.getLogger(__name__)

AUTHENTICATOR_KEY = web.AppKey("authenticator", Authenticator)

HTTP_ERROR_CODES = {404: "ERROR_NOT_FOUND", 405: "ERROR_METHOD_NOT_ALLOWED"}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request id to the logs of this request and echo it as X-Request-ID."""
    request_id = choose_request_id(request.headers.get("X-Request-ID"))
    request_token = request_id_var.set(request_id)
    correlation_token = correlation_id_var.set(
        accepted_correlation_id(request.headers.get("X-Correlation-ID"))
    )
    try:
        response = await handler(request)
    finally:
        request_id_var.reset(request_token)
        correlation_id_var.reset(correlation_token)
    response.headers["X-Request-ID"] = request_id
    return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    endpoint = endpoint_of(request)
    route = endpoint.path if endpoint is not None else "unmatched"
    response = await handler(request)
    REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
    REQUESTS.labels(request.method, route, str(response.status)).inc()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into the error envelope; no exception reaches aiohttp."""
    try:
        return await handler(request)
    except web.HTTPException as failure:
        if failure.status < 400:
            raise
        code = HTTP_ERROR_CODES.get(failure.status, "ERROR_GENERIC")
        return error(failure.status, code, failure.reason)
    except asyncpg.DataError as failure:
        # Values PostgreSQL refuses (an out-of-range number, a bad encoding) are the
        # caller's input, not a server fault.
        logger.info("request rejected by PostgreSQL: %s", failure)
        return error(400, "ERROR_REQUEST", f"Invalid value: {failure}")
    except Exception as failure:
        return map_exception(request, failure)


def map_exception(request: web.Request, failure: Exception) -> web.Response:
    known = status_and_code(failure)
    if known is not None:
        return known_error(request, failure, *known)
    logger.exception("%s %s failed", request.method, request.path)
    return error(500, "ERROR_GENERIC", "Internal server error")


def known_error(request: web.Request, failure: Exception, status: int, code: str) -> web.Response:
    level = logging.WARNING if status >= 500 else logging.INFO
    logger.log(
        level, "%s %s returned %d %s: %s", request.method, request.path, status, code, failure
    )
    if isinstance(failure, RequestInvalid):
        return error(status, code, str(failure), violations=failure.violations)
    response = error(status, code, str(failure))
    if isinstance(failure, AuthenticationRequired):
        response.headers["WWW-Authenticate"] = 'Bearer, Basic realm="push-server"'
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the API key and role of endpoints that need one."""
    endpoint = endpoint_of(request)
    authenticator = request.app.get(AUTHENTICATOR_KEY)
    if endpoint is None or endpoint.role is None or authenticator is None:
        return await handler(request)

    key = authenticator.authenticate(request.headers.get("Authorization"))
    authenticator.authorize(key, endpoint.role)
    return await handler(request)


MIDDLEWARES = (request_id_middleware, metrics_middleware, error_middleware, auth_middleware)
