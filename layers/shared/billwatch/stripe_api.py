"""Reads from the Stripe API with a restricted, read-only key."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stripe import StripeClient


class StripeApi:
    def __init__(self, api_key: Callable[[], str], api_base: str | None = None) -> None:
        self._api_key = api_key
        self._api_base = api_base
        self._client: StripeClient | None = None
        self._client_key: str | None = None

    def _stripe(self) -> StripeClient:
        key = self._api_key()
        if self._client is None or key != self._client_key:  # the key was rotated
            # Imported here: the client costs ~10 ms of cold start and only same-second ties need it.
            from stripe import StripeClient

            addresses = {"api": self._api_base} if self._api_base else None
            self._client = StripeClient(key, base_addresses=addresses, max_network_retries=2)
            self._client_key = key
        return self._client

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._stripe().v1.subscriptions.retrieve(subscription_id).to_dict()
