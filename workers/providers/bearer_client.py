"""The part of the FCM and HMS clients that they share: JSON sends with an OAuth bearer token.

Both fetch an access token, post the payload with it, drop the token when the provider
rejects it and retry once with a new one. Each provider decides from its own reply when
the token was rejected and how the reply becomes an outcome.
"""

from __future__ import annotations

import abc
import logging

from workers.providers.base import Outcome, Platform, PreparedPayload, ProviderClient, SendResult
from workers.providers.tokens import AccessTokenSource, TokenUnavailable
from workers.providers.transport import HttpResponse, Transport, TransportError

logger = logging.getLogger(__name__)


class BearerTokenClient(ProviderClient):
    """Sends to one provider for one application with an OAuth access token."""

    platform: Platform

    def __init__(
        self, *, app_id: str, url: str, transport: Transport, tokens: AccessTokenSource
    ) -> None:
        self.app_id = app_id
        self.url = url
        self.transport = transport
        self.tokens = tokens

    @abc.abstractmethod
    def read_response(self, response: HttpResponse) -> SendResult:
        """Classify the provider's reply."""

    @abc.abstractmethod
    def token_rejected(self, result: SendResult) -> bool:
        """Return whether the provider rejected the access token itself."""

    def retry_with_new_token(self, result: SendResult) -> bool:
        """Return whether to send again with a new token; by default when it was refused."""
        return self.token_rejected(result)

    async def send(
        self, token: str, payload: PreparedPayload, *, apns_id: str, environment: str | None
    ) -> SendResult:
        if payload.platform is not self.platform:
            raise ValueError(f"payload for {payload.platform} given to the {self.platform} client")
        body = payload.body_for(token)

        result = await self.post(body)
        if self.retry_with_new_token(result):
            return await self.post(body)
        return result

    async def post(self, body: bytes) -> SendResult:
        """Send once with the current access token."""
        try:
            access_token = await self.tokens.token()
        except TokenUnavailable as error:
            logger.warning("application %s: %s", self.app_id, error)
            outcome = Outcome.CREDENTIALS if error.credentials_rejected else Outcome.TRANSIENT
            return SendResult(outcome, reason="access_token_unavailable")

        headers = [
            ("authorization", "Bearer " + access_token),
            ("content-type", "application/json"),
        ]
        try:
            response = await self.transport.request("POST", self.url, headers, body)
        except TransportError as error:
            logger.info(
                "%s request of application %s failed: %s", self.platform, self.app_id, error
            )
            return SendResult(Outcome.TRANSIENT, reason=error.reason)

        result = self.read_response(response)
        if self.token_rejected(result):
            self.tokens.invalidate(access_token)
        return result

    async def aclose(self) -> None:
        await self.transport.aclose()
        close = getattr(self.tokens, "close", None)
        if close is not None:
            close()
