"""Every endpoint of the REST API in one table: path, verbs, role, request model.

The table drives routing, the role check of the auth middleware and the OpenAPI document.
Paths and verbs are the original's, including its alternatives (POST or PUT, POST or
DELETE) and the deprecated administration paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from api.handlers import admin, campaigns, devices, messages, service
from shared.api_keys import Role
from shared.requests import (
    ApplicationDetailRequest,
    ApplicationRequest,
    CreateCampaignRequest,
    CreateDeviceMultiRequest,
    CreateDeviceRequest,
    DeleteDeviceRequest,
    SendMessageBatchRequest,
    SendMessageRequest,
    TestCampaignRequest,
    UpdateApnsLegacyRequest,
    UpdateApnsRequest,
    UpdateDeviceStatusRequest,
    UpdateFcmRequest,
    UpdateHmsRequest,
)


class UserIdListRequest(BaseModel):
    """A list of user ids in the envelope: `{"requestObject": ["user1", ...]}`."""

    requestObject: list[str]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One path with its verbs, handler and the role an API key needs (None: public)."""

    methods: tuple[str, ...]
    path: str
    handler: Handler
    role: Role | None
    summary: str
    tag: str
    request_model: type[BaseModel] | None = None
    envelope: bool = True
    bulk_body: bool = False
    deprecated: bool = False
    query: tuple[tuple[str, str, bool], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


POST = ("POST",)
POST_PUT = ("POST", "PUT")
POST_DELETE = ("POST", "DELETE")
GET = ("GET",)

REGISTRAR, SENDER, ADMIN = Role.REGISTRAR, Role.SENDER, Role.ADMIN

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        GET, "/push/service/status", service.service_status, None, "Service status", "service"
    ),
    Endpoint(GET, "/health/live", service.live, None, "Liveness", "service"),
    Endpoint(
        GET,
        "/health/ready",
        service.ready,
        None,
        "Readiness: PostgreSQL and RabbitMQ respond",
        "service",
    ),
    Endpoint(GET, "/metrics", service.metrics, None, "Prometheus metrics", "service"),
    Endpoint(GET, "/openapi.json", service.openapi, None, "This OpenAPI document", "service"),
    Endpoint(GET, "/docs", service.docs, None, "API documentation page", "service"),
    # Devices
    Endpoint(
        POST,
        "/push/device/create",
        devices.create_device,
        REGISTRAR,
        "Register a push token for an activation",
        "device",
        CreateDeviceRequest,
    ),
    Endpoint(
        POST,
        "/push/device/create/multi",
        devices.create_device_multi,
        REGISTRAR,
        "Register a push token for several activations",
        "device",
        CreateDeviceMultiRequest,
    ),
    Endpoint(
        POST_PUT,
        "/push/device/status/update",
        devices.update_device_status,
        REGISTRAR,
        "Activation status callback of PowerAuth Server (raw body, no requestObject)",
        "device",
        UpdateDeviceStatusRequest,
        envelope=False,
    ),
    Endpoint(
        POST_DELETE,
        "/push/device/delete",
        devices.delete_device,
        REGISTRAR,
        "Remove the devices with a token",
        "device",
        DeleteDeviceRequest,
    ),
    # Messages
    Endpoint(
        POST,
        "/push/message/send",
        messages.send_message,
        SENDER,
        "Send a message to a user's devices",
        "message",
        SendMessageRequest,
    ),
    Endpoint(
        POST,
        "/push/message/batch/send",
        messages.send_message_batch,
        SENDER,
        "Send several messages",
        "message",
        SendMessageBatchRequest,
    ),
    Endpoint(
        GET,
        "/push/message/{id}",
        messages.get_message,
        SENDER,
        "Delivery state of one message (addition)",
        "message",
    ),
    # Campaigns
    Endpoint(
        POST,
        "/push/campaign/create",
        campaigns.create_campaign,
        SENDER,
        "Create a campaign",
        "campaign",
        CreateCampaignRequest,
    ),
    Endpoint(
        POST_DELETE,
        "/push/campaign/{id}/delete",
        campaigns.delete_campaign,
        SENDER,
        "Delete a campaign, cancelling it when it is sending",
        "campaign",
    ),
    Endpoint(
        GET,
        "/push/campaign/{id}/detail",
        campaigns.get_campaign,
        SENDER,
        "Campaign detail",
        "campaign",
    ),
    Endpoint(
        GET,
        "/push/campaign/list",
        campaigns.list_campaigns,
        SENDER,
        "List campaigns; all=false lists the campaigns not sent yet",
        "campaign",
        query=(("all", "boolean", False),),
    ),
    Endpoint(
        POST_PUT,
        "/push/campaign/{id}/user/add",
        campaigns.add_users,
        SENDER,
        "Add users to a campaign",
        "campaign",
        UserIdListRequest,
        bulk_body=True,
    ),
    Endpoint(
        GET,
        "/push/campaign/{id}/user/list",
        campaigns.list_users,
        SENDER,
        "List a campaign's users, paged",
        "campaign",
        query=(("page", "integer", False), ("size", "integer", False)),
    ),
    Endpoint(
        POST_DELETE,
        "/push/campaign/{id}/user/delete",
        campaigns.delete_users,
        SENDER,
        "Remove users from a campaign",
        "campaign",
        UserIdListRequest,
        bulk_body=True,
    ),
    Endpoint(
        POST,
        "/push/campaign/send/test/{id}",
        campaigns.send_test,
        SENDER,
        "Send the campaign's message to one user",
        "campaign",
        TestCampaignRequest,
    ),
    Endpoint(
        POST,
        "/push/campaign/send/live/{id}",
        campaigns.send_live,
        SENDER,
        "Start sending a campaign; returns at once",
        "campaign",
    ),
    Endpoint(
        GET,
        "/push/campaign/{id}/progress",
        campaigns.get_progress,
        SENDER,
        "Campaign progress: counts, rate, time left (addition)",
        "campaign",
    ),
    # Administration
    Endpoint(GET, "/admin/app/list", admin.list_applications, ADMIN, "List applications", "admin"),
    Endpoint(
        GET,
        "/admin/app/unconfigured/list",
        admin.list_unconfigured,
        ADMIN,
        "List PowerAuth applications without push configuration",
        "admin",
    ),
    Endpoint(
        POST,
        "/admin/app/detail",
        admin.get_detail,
        ADMIN,
        "Application detail (never secrets)",
        "admin",
        ApplicationDetailRequest,
    ),
    Endpoint(
        POST,
        "/admin/app/create",
        admin.create_application,
        ADMIN,
        "Create an application",
        "admin",
        ApplicationRequest,
    ),
    Endpoint(
        POST_PUT,
        "/admin/app/apns",
        admin.update_apns,
        ADMIN,
        "Store APNs credentials",
        "admin",
        UpdateApnsRequest,
    ),
    Endpoint(
        ("DELETE",),
        "/admin/app/apns",
        admin.remover("apns", True),
        ADMIN,
        "Remove APNs credentials",
        "admin",
        query=(("appId", "string", True),),
    ),
    Endpoint(
        POST_PUT,
        "/admin/app/fcm",
        admin.update_fcm,
        ADMIN,
        "Store FCM credentials",
        "admin",
        UpdateFcmRequest,
    ),
    Endpoint(
        ("DELETE",),
        "/admin/app/fcm",
        admin.remover("fcm", True),
        ADMIN,
        "Remove FCM credentials",
        "admin",
        query=(("appId", "string", True),),
    ),
    Endpoint(
        POST_PUT,
        "/admin/app/hms",
        admin.update_hms,
        ADMIN,
        "Store HMS credentials",
        "admin",
        UpdateHmsRequest,
    ),
    Endpoint(
        ("DELETE",),
        "/admin/app/hms",
        admin.remover("hms", True),
        ADMIN,
        "Remove HMS credentials",
        "admin",
        query=(("appId", "string", True),),
    ),
    Endpoint(
        POST_PUT,
        "/admin/app/ios/update",
        admin.update_apns_legacy,
        ADMIN,
        "Store APNs credentials (deprecated path)",
        "admin",
        UpdateApnsLegacyRequest,
        deprecated=True,
    ),
    Endpoint(
        POST_DELETE,
        "/admin/app/ios/remove",
        admin.remover("apns", False),
        ADMIN,
        "Remove APNs credentials (deprecated path)",
        "admin",
        ApplicationRequest,
        deprecated=True,
    ),
    Endpoint(
        POST_PUT,
        "/admin/app/android/update",
        admin.update_fcm,
        ADMIN,
        "Store FCM credentials (deprecated path)",
        "admin",
        UpdateFcmRequest,
        deprecated=True,
    ),
    Endpoint(
        POST_DELETE,
        "/admin/app/android/remove",
        admin.remover("fcm", False),
        ADMIN,
        "Remove FCM credentials (deprecated path)",
        "admin",
        ApplicationRequest,
        deprecated=True,
    ),
    Endpoint(
        POST_PUT,
        "/admin/app/huawei/update",
        admin.update_hms,
        ADMIN,
        "Store HMS credentials (deprecated path)",
        "admin",
        UpdateHmsRequest,
        deprecated=True,
    ),
    Endpoint(
        POST_DELETE,
        "/admin/app/huawei/remove",
        admin.remover("hms", False),
        ADMIN,
        "Remove HMS credentials (deprecated path)",
        "admin",
        ApplicationRequest,
        deprecated=True,
    ),
)

ENDPOINT_KEY = "endpoint"


def add_routes(app: web.Application) -> None:
    """Register every endpoint; the matched Endpoint is stored on the route for middleware."""
    for endpoint in ENDPOINTS:
        for method in endpoint.methods:
            route = app.router.add_route(method, endpoint.path, endpoint.handler)
            setattr(route, ENDPOINT_KEY, endpoint)


def endpoint_of(request: web.Request) -> Endpoint | None:
    route = request.match_info.route
    endpoint: Endpoint | None = getattr(route, ENDPOINT_KEY, None)
    return endpoint
