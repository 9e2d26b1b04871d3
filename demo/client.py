"""A small client of the push server's REST API and of the sandbox admin endpoint."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson


class ApiError(Exception):
    """The API returned an error envelope or an unexpected status."""

    def __init__(self, path: str, status: int, body: str) -> None:
        super().__init__(f"{path} answered {status}: {body[:500]}")
        self.status = status


class PushApi:
    """Calls the API with an API key as a bearer token."""

    def __init__(self, base_url: str, api_key: str, connections: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {api_key}"},
            connector=aiohttp.TCPConnector(limit=connections),
            json_serialize=lambda value: orjson.dumps(value).decode(),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        """Send one request; return the decoded `responseObject` (or the whole document)."""
        async with self.session.request(
            method, self.base_url + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            if response.status != 200:
                raise ApiError(path, response.status, text)
        answer = orjson.loads(text)
        return answer.get("responseObject", answer)

    async def post(self, path: str, request_object: Any, **kwargs: Any) -> Any:
        return await self.call("POST", path, {"requestObject": request_object}, **kwargs)

    async def get(self, path: str) -> Any:
        return await self.call("GET", path)

    async def close(self) -> None:
        await self.session.close()
