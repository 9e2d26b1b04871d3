"""Admin HTTP endpoint (plain HTTP, JSON): registrations, fault rules, counters, reset.

Routes (bodies and answers are JSON):

    GET    /health                      {"status": "ok"}
    GET    /info                        service URLs and the CA file
    GET    /apps                        registered apps (no key material)
    POST   /apps/apns                   {key_id, team_id, bundle_ids | bundle_id, public_key_pem,
                                         environment?}
    POST   /apps/fcm                    {project_id, client_email, public_key_pem, private_key_id?}
    POST   /apps/hms                    {client_id, client_secret, app_ids?}
    DELETE /apps                        remove every registration
    GET    /faults                      list of rules
    POST   /faults                      one rule -> the rule with its rule_id
    DELETE /faults                      remove every rule
    DELETE /faults/{rule_id}            remove one rule
    GET    /connections                 connection policy per provider
    PUT    /connections/{provider}      {max_concurrent_streams?, goaway_after_streams?}
    GET    /settings                    behaviour switches
    PATCH  /settings                    {markers?, strict_token_updates?, count_tokens?, ...}
    GET    /counters                    accepted, rejected per reason, per-token summary
    POST   /counters/tokens             {provider, tokens: [...]} -> {token: accepted count}
    POST   /reset                       zero the counters; {"everything": true} also clears apps,
                                         rules, policies, settings and the clock offset
    PUT    /clock                       {offset_s} shifts the sandbox clock
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workers.sandbox.faults import FaultRule, InvalidFaultRule
from workers.sandbox.http_server import SandboxServer
from workers.sandbox.registry import InvalidRegistration
from workers.sandbox.state import Behaviour, SandboxState

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApnsKeyRegistration(_Strict):
    key_id: str = Field(min_length=1)
    team_id: str = Field(min_length=1)
    bundle_ids: list[str] = Field(default_factory=list)
    bundle_id: str | None = None
    public_key_pem: str
    environment: Literal["development", "production"] | None = None

    @model_validator(mode="after")
    def _merge_bundle_id(self) -> ApnsKeyRegistration:
        if self.bundle_id is not None:
            self.bundle_ids = [*self.bundle_ids, self.bundle_id]
        if not self.bundle_ids:
            raise ValueError("bundle_ids or bundle_id is required")
        return self


class FcmAccountRegistration(_Strict):
    project_id: str = Field(min_length=1)
    client_email: str = Field(min_length=1)
    public_key_pem: str
    private_key_id: str | None = None


class HmsAppRegistration(_Strict):
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    app_ids: list[str] | None = None


class FaultRuleRequest(_Strict):
    provider: Literal["apns", "fcm", "hms"]
    outcome: str | None = None
    token: str | None = None
    probability: float = 1.0
    latency_ms: float = 0.0
    retry_after: int | str | None = None
    retry_after_as_date: bool = False
    count: int | None = None


class ConnectionPolicyUpdate(_Strict):
    max_concurrent_streams: int | None = Field(default=None, ge=1)
    goaway_after_streams: int | None = Field(default=None, ge=1)
    clear_goaway: bool = False


class SettingsUpdate(_Strict):
    markers: bool | None = None
    strict_token_updates: bool | None = None
    background_priority_check: bool | None = None
    apns_token_lengths: list[int] | None = None
    count_tokens: bool | None = None
    fault_seed: int | None = None


class TokenCountQuery(_Strict):
    provider: Literal["apns", "fcm", "hms"]
    tokens: list[str]


class ResetRequest(_Strict):
    everything: bool = False


class ClockUpdate(_Strict):
    offset_s: float


class AdminApi:
    """aiohttp application exposing the sandbox state."""

    def __init__(
        self,
        state: SandboxState,
        servers: dict[str, list[SandboxServer]],
        info: dict[str, Any],
    ) -> None:
        self.state = state
        self.servers = servers
        self.info = info

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[_error_middleware])
        app.router.add_get("/health", self.health)
        app.router.add_get("/info", self.get_info)
        app.router.add_get("/apps", self.list_apps)
        app.router.add_post("/apps/apns", self.register_apns)
        app.router.add_post("/apps/fcm", self.register_fcm)
        app.router.add_post("/apps/hms", self.register_hms)
        app.router.add_delete("/apps", self.clear_apps)
        app.router.add_get("/faults", self.list_faults)
        app.router.add_post("/faults", self.add_fault)
        app.router.add_delete("/faults", self.clear_faults)
        app.router.add_delete("/faults/{rule_id}", self.remove_fault)
        app.router.add_get("/connections", self.get_connections)
        app.router.add_put("/connections/{provider}", self.update_connections)
        app.router.add_get("/settings", self.get_settings)
        app.router.add_patch("/settings", self.update_settings)
        app.router.add_get("/counters", self.get_counters)
        app.router.add_post("/counters/tokens", self.count_tokens)
        app.router.add_post("/reset", self.reset)
        app.router.add_put("/clock", self.set_clock)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def get_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info)

    async def list_apps(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.registry.summary())

    async def register_apns(self, request: web.Request) -> web.Response:
        body = ApnsKeyRegistration.model_validate(await _json(request))
        self.state.registry.add_apns_key(
            body.key_id, body.team_id, body.bundle_ids, body.public_key_pem, body.environment
        )
        logger.info("registered APNs key %s of team %s", body.key_id, body.team_id)
        return web.json_response({"registered": "apns", "key_id": body.key_id}, status=201)

    async def register_fcm(self, request: web.Request) -> web.Response:
        body = FcmAccountRegistration.model_validate(await _json(request))
        self.state.registry.add_fcm_account(
            body.project_id, body.client_email, body.public_key_pem, body.private_key_id
        )
        logger.info("registered FCM account %s of project %s", body.client_email, body.project_id)
        return web.json_response(
            {"registered": "fcm", "client_email": body.client_email}, status=201
        )

    async def register_hms(self, request: web.Request) -> web.Response:
        body = HmsAppRegistration.model_validate(await _json(request))
        self.state.registry.add_hms_app(body.client_id, body.client_secret, body.app_ids)
        logger.info("registered HMS client %s", body.client_id)
        return web.json_response({"registered": "hms", "client_id": body.client_id}, status=201)

    async def clear_apps(self, request: web.Request) -> web.Response:
        self.state.registry.clear()
        return web.json_response({"cleared": "apps"})

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response([rule.as_dict() for rule in self.state.faults.rules()])

    async def add_fault(self, request: web.Request) -> web.Response:
        body = FaultRuleRequest.model_validate(await _json(request))
        rule = FaultRule(
            provider=body.provider,
            outcome=body.outcome,
            token=body.token,
            probability=body.probability,
            latency_ms=body.latency_ms,
            retry_after=None if body.retry_after is None else str(body.retry_after),
            retry_after_as_date=body.retry_after_as_date,
            remaining=body.count,
        )
        self.state.faults.add(rule)
        logger.info("added fault rule %s", rule.as_dict())
        return web.json_response(rule.as_dict(), status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.state.faults.clear()
        return web.json_response({"cleared": "faults"})

    async def remove_fault(self, request: web.Request) -> web.Response:
        rule_id = request.match_info["rule_id"]
        if not rule_id.isdigit() or not self.state.faults.remove(int(rule_id)):
            raise web.HTTPNotFound(
                text=_error_text(f"fault rule {rule_id} not found"), content_type="application/json"
            )
        return web.json_response({"removed": int(rule_id)})

    async def get_connections(self, request: web.Request) -> web.Response:
        return web.json_response(
            {provider: vars(policy) for provider, policy in self.state.policies.items()}
        )

    async def update_connections(self, request: web.Request) -> web.Response:
        provider = request.match_info["provider"]
        if provider not in self.state.policies:
            raise web.HTTPNotFound(
                text=_error_text(f"unknown provider {provider!r}; use apns, fcm or hms"),
                content_type="application/json",
            )
        body = ConnectionPolicyUpdate.model_validate(await _json(request))
        policy = self.state.policies[provider]
        if body.max_concurrent_streams is not None:
            policy.max_concurrent_streams = body.max_concurrent_streams
        if body.goaway_after_streams is not None:
            policy.goaway_after_streams = body.goaway_after_streams
        if body.clear_goaway:
            policy.goaway_after_streams = None
        self._apply_policies()
        logger.info("connection policy of %s is now %s", provider, vars(policy))
        return web.json_response(vars(policy))

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._settings())

    async def update_settings(self, request: web.Request) -> web.Response:
        body = SettingsUpdate.model_validate(await _json(request))
        behaviour = self.state.behaviour
        for name in ("markers", "strict_token_updates", "background_priority_check"):
            value = getattr(body, name)
            if value is not None:
                setattr(behaviour, name, value)
        if body.apns_token_lengths is not None:
            behaviour.apns_token_lengths = tuple(body.apns_token_lengths)
        if body.count_tokens is not None:
            self.state.counters.count_tokens = body.count_tokens
        if body.fault_seed is not None:
            self.state.faults.reseed(body.fault_seed)
        return web.json_response(self._settings())

    async def get_counters(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.counters.snapshot())

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = TokenCountQuery.model_validate(await _json(request))
        return web.json_response(self.state.counters.lookup(body.provider, body.tokens))

    async def reset(self, request: web.Request) -> web.Response:
        body = ResetRequest.model_validate(await _json(request, default={}))
        self.state.counters.reset()
        if body.everything:
            self.state.registry.clear()
            self.state.faults.clear()
            self.state.reset_policies()
            self.state.behaviour = Behaviour()
            self.state.clock.offset_s = 0.0
            self._apply_policies()
        return web.json_response({"reset": "everything" if body.everything else "counters"})

    async def set_clock(self, request: web.Request) -> web.Response:
        body = ClockUpdate.model_validate(await _json(request))
        self.state.clock.offset_s = body.offset_s
        return web.json_response({"offset_s": body.offset_s})

    def _settings(self) -> dict[str, object]:
        settings = self.state.behaviour.as_dict()
        settings["count_tokens"] = self.state.counters.count_tokens
        return settings

    def _apply_policies(self) -> None:
        for servers in self.servers.values():
            for server in servers:
                server.apply_policy()


async def _json(request: web.Request, default: Any = None) -> Any:
    if not request.can_read_body:
        if default is not None:
            return default
        raise web.HTTPBadRequest(
            text=_error_text("a JSON request body is required"), content_type="application/json"
        )
    try:
        return await request.json()
    except ValueError as error:
        raise web.HTTPBadRequest(
            text=_error_text(f"invalid JSON body: {error}"), content_type="application/json"
        ) from error


def _error_text(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationError as error:
        details = [
            {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
            for item in error.errors()
        ]
        return web.json_response({"error": "invalid request body", "details": details}, status=400)
    except (InvalidRegistration, InvalidFaultRule) as error:
        return web.json_response({"error": str(error)}, status=400)
