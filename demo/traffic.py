"""Demo traffic: the application, device registrations, a campaign and direct sends."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from demo.client import PushApi
from demo.data import DemoDevice
from workers.sandbox.control import SandboxAdmin
from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount, HmsClientCredentials

logger = logging.getLogger(__name__)

APP_ID = "demo-app"
USERS_PER_REQUEST = 50_000

# Bodies of the campaign and the direct sends: localisation keys, emoji, non-Latin text,
# extras, and long text near the payload limits.
BODIES: list[dict[str, Any]] = [
    {
        "title": "Your order shipped 📦",
        "body": "It arrives on Tuesday.",
        "sound": "default",
        "badge": 1,
        "extras": {"orderId": "A-1042", "deepLink": "shop://orders/A-1042"},
    },
    {
        "titleLocKey": "payment.received.title",
        "bodyLocKey": "payment.received.body",
        "bodyLocArgs": ["€12.50", "Café Müller"],
        "category": "PAYMENT",
    },
    {
        "title": "Ваш код подтверждения",
        "body": "Никому не сообщайте этот код: 482913",
        "collapseKey": "otp",
    },
    {
        "title": "新しいメッセージ",
        "body": "田中さんから写真が届きました 🌸",
        "threadId": "chat-77",
        "image": "https://cdn.example.com/p/77.jpg",
        "mutableContent": True,
    },
    {
        "title": "تم تأكيد الحجز",
        "body": "رحلتك إلى دبي يوم الجمعة ✈️",
        "interruptionLevel": "time-sensitive",
        "channelId": "travel",
    },
    {"body": "Ein langer Text " + "mit vielen Wörtern " * 40, "subtitle": "Neuigkeiten"},
]

CAMPAIGN_BODY: dict[str, Any] = {
    "title": "Winter sale ❄️ up to 50 % off",
    "body": "Nur heute: Rabatte auf alles. 今日だけ！",
    "sound": "default",
    "extras": {"campaign": "winter-2026", "discount": 50, "tags": ["sale", "winter"]},
}


@dataclass
class DemoApplication:
    """The demo application's credentials, as uploaded and as registered with the sandbox."""

    apns: ApnsSigningKey
    fcm: FcmServiceAccount
    hms: HmsClientCredentials


@dataclass
class SendTally:
    """Counts and row ids of the direct-send burst."""

    requests: int = 0
    messages: int = 0
    message_ids: list[int] = field(default_factory=list)
    synchronous_counters: dict[str, int] = field(default_factory=dict)


async def create_application(api: PushApi, sandbox: SandboxAdmin) -> DemoApplication:
    """Create the demo application with generated credentials in the real file formats."""
    application = DemoApplication(
        ApnsSigningKey.generate(bundle_id="com.example.demo"),
        FcmServiceAccount.generate(project_id="demo-project"),
        HmsClientCredentials.generate(),
    )
    await asyncio.to_thread(sandbox.register_apns_key, application.apns)
    await asyncio.to_thread(sandbox.register_fcm_account, application.fcm)
    await asyncio.to_thread(sandbox.register_hms_app, application.hms)

    applications = await api.get("/admin/app/list")
    if APP_ID not in {item["appId"] for item in applications.get("applicationList", [])}:
        await api.post("/admin/app/create", {"appId": APP_ID})
    await upload_credentials(api, application)
    return application


async def upload_credentials(api: PushApi, application: DemoApplication) -> None:
    apns, fcm, hms = application.apns, application.fcm, application.hms
    await api.post(
        "/admin/app/apns",
        {
            "appId": APP_ID,
            "bundle": apns.bundle_id,
            "keyId": apns.key_id,
            "teamId": apns.team_id,
            "privateKeyBase64": base64.b64encode(apns.private_key_pem.encode()).decode(),
            # A development application may send to both environments.
            "environment": "development",
        },
    )
    service_account = orjson.dumps(fcm.service_account_info())
    await api.post(
        "/admin/app/fcm",
        {
            "appId": APP_ID,
            "projectId": fcm.project_id,
            "privateKeyBase64": base64.b64encode(service_account).decode(),
        },
    )
    await api.post(
        "/admin/app/hms",
        {
            "appId": APP_ID,
            "projectId": hms.client_id,
            "clientId": hms.client_id,
            "clientSecret": hms.client_secret,
        },
    )


def registration(device: DemoDevice, activation_id: str, user_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "appId": APP_ID,
        "token": device.registered_token,
        "platform": device.platform,
        "activationId": activation_id,
        "activationStatus": "ACTIVE" if device.active else "BLOCKED",
        "userId": user_id,
    }
    if device.environment:
        body["environment"] = device.environment
    return body


async def register_devices(
    api: PushApi, devices: Sequence[DemoDevice], concurrency: int, report: Callable[[int], None]
) -> float:
    """Register every device through the API.

    A token marked as moved is first registered for another activation, so the second
    registration moves it.
    """
    started = time.perf_counter()
    moved = [d for d in devices if d.moved_from]
    await run_bounded(
        (
            api.post("/push/device/create", registration(d, d.moved_from or "", "moved-owner"))
            for d in moved
        ),
        concurrency,
        lambda done: None,
    )
    await run_bounded(
        (
            api.post("/push/device/create", registration(d, d.activation_id, d.user_id))
            for d in devices
        ),
        concurrency,
        report,
    )
    return time.perf_counter() - started


async def run_bounded(
    calls: Iterable[Awaitable[Any]], concurrency: int, report: Callable[[int], None]
) -> None:
    """Await the calls with at most `concurrency` in flight, reporting every 1,000."""
    iterator = iter(calls)
    done = 0

    async def drain() -> None:
        nonlocal done
        for call in iterator:
            await call
            done += 1
            if done % 1000 == 0:
                report(done)

    await asyncio.gather(*(drain() for _ in range(concurrency)))


async def create_campaign(api: PushApi, user_ids: Sequence[str]) -> int:
    answer = await api.post(
        "/push/campaign/create",
        {"appId": APP_ID, "message": CAMPAIGN_BODY, "priority": "HIGH"},
    )
    campaign_id = int(answer["id"])
    for start in range(0, len(user_ids), USERS_PER_REQUEST):
        chunk = list(user_ids[start : start + USERS_PER_REQUEST])
        await api.call("PUT", f"/push/campaign/{campaign_id}/user/add", {"requestObject": chunk})
    return campaign_id


async def send_burst(api: PushApi, user_ids: Sequence[str], seed: int) -> SendTally:
    """Direct sends: single and batch, ASYNCHRONOUS and SYNCHRONOUS, silent and personal."""
    rng = random.Random(seed)
    tally = SendTally()

    def message() -> dict[str, Any]:
        silent = rng.random() < 0.15
        return {
            "userId": rng.choice(user_ids),
            "priority": "NORMAL" if silent else rng.choice(["HIGH", "NORMAL"]),
            "attributes": {"silent": silent, "personal": rng.random() < 0.3},
            "body": rng.choice(BODIES),
        }

    async def single(mode: str) -> None:
        answer = await api.post(
            "/push/message/send", {"appId": APP_ID, "mode": mode, "message": message()}
        )
        record(tally, answer, 1)

    async def batch(mode: str, size: int) -> None:
        answer = await api.post(
            "/push/message/batch/send",
            {"appId": APP_ID, "mode": mode, "batch": [message() for _ in range(size)]},
        )
        record(tally, answer, size)

    calls: list[Awaitable[None]] = [single("ASYNCHRONOUS") for _ in range(300)]
    calls += [single("SYNCHRONOUS") for _ in range(30)]
    calls += [batch("ASYNCHRONOUS", 100) for _ in range(20)]
    calls += [batch("SYNCHRONOUS", 50) for _ in range(5)]
    rng.shuffle(calls)
    await run_bounded(calls, 16, lambda done: None)
    return tally


def record(tally: SendTally, answer: dict[str, Any], messages: int) -> None:
    tally.requests += 1
    tally.messages += messages
    tally.message_ids.extend(answer.get("messageIds", []))
    if answer.get("mode") == "SYNCHRONOUS":
        for provider in ("apns", "fcm", "hms"):
            for counter, value in (answer.get(provider) or {}).items():
                key = f"{provider}.{counter}"
                tally.synchronous_counters[key] = tally.synchronous_counters.get(key, 0) + value
