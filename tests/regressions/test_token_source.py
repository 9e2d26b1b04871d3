"""OAuth access token sources when the token endpoint rejects the credentials."""

from __future__ import annotations

import asyncio

from workers.providers.tokens import AccessToken, AccessTokenSource, TokenUnavailable

CALLERS = 10


class RejectedSource(AccessTokenSource):
    """A token source whose endpoint always rejects the credentials; counts the requests."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def fetch(self) -> AccessToken:
        self.requests += 1
        await asyncio.sleep(0.01)
        raise TokenUnavailable("invalid_grant: Invalid JWT Signature.", credentials_rejected=True)


async def test_rejected_fetch_shared_by_waiting_callers() -> None:
    source = RejectedSource()

    results = await asyncio.gather(
        *(source.token() for _ in range(CALLERS)), return_exceptions=True
    )

    assert all(isinstance(result, TokenUnavailable) for result in results)
    assert source.requests == 1
