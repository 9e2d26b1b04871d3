"""The two PowerAuth Server calls the push server makes: activation status and app list.

Both use PowerAuth's REST envelope: `POST {PUSH_POWERAUTH_URL}/rest/v3/...` with
`{"requestObject": {...}}`, returning `{"status": "OK", "responseObject": {...}}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from shared.exceptions import PowerAuthUnavailable

logger = logging.getLogger(__name__)

ACTIVATION_STATUS_PATH = "/rest/v3/activation/status"
APPLICATION_LIST_PATH = "/rest/v3/application/list"


@dataclass(frozen=True, slots=True)
class ActivationInfo:
    """The activation facts that registration needs."""

    activation_status: str | None
    user_id: str | None


class PowerAuthClient:
    """Calls PowerAuth Server over one shared HTTP session."""

    def __init__(
        self, base_url: str, timeout_s: float, client_token: str = "", client_secret: str = ""
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        # PowerAuth Server's optional HTTP Basic credentials (its client token and secret).
        self.auth = aiohttp.BasicAuth(client_token, client_secret) if client_token else None
        self._session: aiohttp.ClientSession | None = None
        # Headers of the current request to pass on, such as X-Correlation-ID; set by the API.
        self.forwarded_headers: Callable[[], Mapping[str, str]] = dict

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get_activation(self, activation_id: str) -> ActivationInfo:
        """Return the activation's status and user; raise PowerAuthUnavailable."""
        result = await self._call(ACTIVATION_STATUS_PATH, {"activationId": activation_id})
        status = result.get("activationStatus")
        user_id = result.get("userId")
        return ActivationInfo(
            activation_status=status if isinstance(status, str) else None,
            user_id=str(user_id) if user_id is not None else None,
        )

    async def list_application_ids(self) -> list[str]:
        """Return the ids of every application registered in PowerAuth Server."""
        result = await self._call(APPLICATION_LIST_PATH, {})
        applications = result.get("applications") or []
        if not isinstance(applications, list):
            raise PowerAuthUnavailable("PowerAuth Server sent an application list of wrong type")
        return [
            str(item["applicationId"])
            for item in applications
            if isinstance(item, dict) and item.get("applicationId") is not None
        ]

    async def _call(self, path: str, request_object: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        try:
            session = self._get_session()
            async with session.post(
                url,
                data=orjson.dumps({"requestObject": request_object}),
                headers={"Content-Type": "application/json", **self.forwarded_headers()},
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            logger.warning("PowerAuth Server call %s failed: %r", path, error)
            raise PowerAuthUnavailable(f"PowerAuth Server cannot be reached: {error!r}") from error
        return parse_response(path, status, body)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, auth=self.auth)
        return self._session


def parse_response(path: str, status: int, body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if status != 200 or not isinstance(document, dict) or document.get("status") != "OK":
        logger.warning("PowerAuth Server call %s failed with HTTP %d", path, status)
        raise PowerAuthUnavailable(f"PowerAuth Server returned HTTP {status} for {path}")
    result = document.get("responseObject")
    if not isinstance(result, dict):
        raise PowerAuthUnavailable(f"PowerAuth Server sent no responseObject for {path}")
    return result
