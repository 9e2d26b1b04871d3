"""Device endpoints (/push/device/*)."""

from __future__ import annotations

from aiohttp import web

from api.envelope import ok
from api.handlers.common import context_of, read_object, read_raw
from api.metrics import ROWS_WRITTEN
from shared import devices
from shared.requests import (
    CreateDeviceMultiRequest,
    CreateDeviceRequest,
    DeleteDeviceRequest,
    UpdateDeviceStatusRequest,
)


async def create_device(request: web.Request) -> web.Response:
    payload = await read_object(request, CreateDeviceRequest)
    await devices.create_device(context_of(request), payload)
    ROWS_WRITTEN.labels("push_device").inc()
    return ok()


async def create_device_multi(request: web.Request) -> web.Response:
    payload = await read_object(request, CreateDeviceMultiRequest)
    await devices.create_device_multi(context_of(request), payload)
    ROWS_WRITTEN.labels("push_device").inc(len(payload.activation_ids))
    return ok()


async def update_device_status(request: web.Request) -> web.Response:
    payload = await read_raw(request, UpdateDeviceStatusRequest)
    await devices.update_device_status(context_of(request), payload)
    return ok()


async def delete_device(request: web.Request) -> web.Response:
    payload = await read_object(request, DeleteDeviceRequest)
    await devices.delete_device(context_of(request), payload)
    return ok()
