"""Campaign endpoints (/push/campaign/*)."""

from __future__ import annotations

from aiohttp import web

from api.envelope import ok
from api.handlers.common import (
    context_of,
    path_id,
    query_bool,
    query_int,
    read_object,
    read_user_ids,
)
from api.metrics import ROWS_WRITTEN
from shared import campaigns
from shared.requests import CreateCampaignRequest, TestCampaignRequest

# Spring's Pageable defaults, which clients of the original rely on.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 10_000


async def create_campaign(request: web.Request) -> web.Response:
    payload = await read_object(request, CreateCampaignRequest)
    campaign_id = await campaigns.create_campaign(context_of(request), payload)
    ROWS_WRITTEN.labels("push_campaign").inc()
    return ok({"id": campaign_id})


async def delete_campaign(request: web.Request) -> web.Response:
    deleted = await campaigns.delete_campaign(context_of(request), path_id(request))
    return ok({"deleted": deleted})


async def get_campaign(request: web.Request) -> web.Response:
    return ok(await campaigns.get_campaign(context_of(request), path_id(request)))


async def list_campaigns(request: web.Request) -> web.Response:
    include_sent = query_bool(request, "all", default=False)
    return ok(await campaigns.list_campaigns(context_of(request), include_sent))


async def add_users(request: web.Request) -> web.Response:
    campaign_id = path_id(request)
    user_ids = await read_user_ids(request)
    added = await campaigns.add_users(context_of(request), campaign_id, user_ids)
    ROWS_WRITTEN.labels("push_campaign_user").inc(added)
    return ok()


async def list_users(request: web.Request) -> web.Response:
    campaign_id = path_id(request)
    page = query_int(request, "page", 0, 0, 2**31 - 1)
    size = query_int(request, "size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    users = await campaigns.list_users(context_of(request), campaign_id, page, size)
    return ok(users, page=page, size=size)


async def delete_users(request: web.Request) -> web.Response:
    campaign_id = path_id(request)
    user_ids = await read_user_ids(request)
    await campaigns.delete_users(context_of(request), campaign_id, user_ids)
    return ok()


async def send_test(request: web.Request) -> web.Response:
    campaign_id = path_id(request)
    payload = await read_object(request, TestCampaignRequest)
    result = await campaigns.send_test(context_of(request), campaign_id, payload)
    ROWS_WRITTEN.labels("push_message").inc(len(result.all_ids))
    return ok()


async def send_live(request: web.Request) -> web.Response:
    await campaigns.send_live(context_of(request), path_id(request))
    return ok()


async def get_progress(request: web.Request) -> web.Response:
    return ok(await campaigns.get_progress(context_of(request), path_id(request)))
