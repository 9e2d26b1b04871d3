"""Administration endpoints (/admin/app/*), on the current and the deprecated paths."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from api.envelope import ok
from api.handlers.common import context_of, query_text, read_object
from shared import applications
from shared.requests import (
    ApplicationDetailRequest,
    ApplicationRequest,
    UpdateApnsLegacyRequest,
    UpdateApnsRequest,
    UpdateFcmRequest,
    UpdateHmsRequest,
)


async def list_applications(request: web.Request) -> web.Response:
    listed = await applications.list_applications(context_of(request))
    return ok({"applicationList": listed})


async def list_unconfigured(request: web.Request) -> web.Response:
    listed = await applications.list_unconfigured_applications(context_of(request))
    return ok({"applicationList": listed})


async def get_detail(request: web.Request) -> web.Response:
    payload = await read_object(request, ApplicationDetailRequest)
    return ok(await applications.get_application_detail(context_of(request), payload))


async def create_application(request: web.Request) -> web.Response:
    payload = await read_object(request, ApplicationRequest)
    return ok(await applications.create_application(context_of(request), payload.app_id))


async def update_apns(request: web.Request) -> web.Response:
    await applications.update_apns(
        context_of(request), await read_object(request, UpdateApnsRequest)
    )
    return ok()


async def update_apns_legacy(request: web.Request) -> web.Response:
    payload = await read_object(request, UpdateApnsLegacyRequest)
    await applications.update_apns(context_of(request), payload)
    return ok()


async def update_fcm(request: web.Request) -> web.Response:
    await applications.update_fcm(context_of(request), await read_object(request, UpdateFcmRequest))
    return ok()


async def update_hms(request: web.Request) -> web.Response:
    await applications.update_hms(context_of(request), await read_object(request, UpdateHmsRequest))
    return ok()


def remover(provider: str, from_query: bool) -> Handler:
    """Return a handler that removes one provider's credentials.

    The current paths take `?appId=` with DELETE; the deprecated ones a body `{appId}`.
    """

    async def remove(request: web.Request) -> web.Response:
        if from_query:
            app_id = query_text(request, "appId")
        else:
            app_id = (await read_object(request, ApplicationRequest)).app_id
        await applications.remove_credentials(context_of(request), app_id, provider)
        return ok()

    return remove
