"""Reads from the Stripe API with a restricted, read-only key (and, for the overage drain, sends
billing meter events with a key restricted to them).

Every failed call is classified into a small fixed vocabulary (the ``Code`` of the
``StripeApiError`` metric) and re-raised as :class:`StripeApiFailure`, whose message holds the
code only: Stripe's own messages may quote request details.
"""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, cast

from billwatch.core import parameters as aws_parameters
from billwatch.core.config import ConfigError, Settings
from billwatch.core.ids import is_event_id

if TYPE_CHECKING:
    from stripe import ListObject, StripeClient, StripeObject
    from stripe._base_address import BaseAddresses
    from stripe.params import BalanceTransactionListParams, EventListParams, SubscriptionListParams
    from stripe.params.billing import MeterEventCreateParams
    from stripe.params.v2.billing import MeterEventStreamCreateParamsEvent

    from billwatch.licensing.overage import MeterEvent

Result = TypeVar("Result")
Listed = TypeVar("Listed", bound="StripeObject")


class StripeErrorCode(StrEnum):
    RATE_LIMIT = "rate_limit"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    INVALID_REQUEST = "invalid_request"
    CONNECTION = "connection"
    API_ERROR = "api_error"


class StripeApiFailure(Exception):
    def __init__(self, code: StripeErrorCode) -> None:
        super().__init__(f"the Stripe API call failed: {code.value}")
        self.code = code


def stripe_error_code(error: Exception) -> StripeErrorCode:
    """The class of a stripe-python exception; anything unrecognised is an ``api_error``."""
    import stripe

    for error_class, code in (
        (stripe.RateLimitError, StripeErrorCode.RATE_LIMIT),  # every 429
        (stripe.AuthenticationError, StripeErrorCode.AUTHENTICATION),
        (stripe.PermissionError, StripeErrorCode.PERMISSION),
        (stripe.InvalidRequestError, StripeErrorCode.INVALID_REQUEST),
        (stripe.APIConnectionError, StripeErrorCode.CONNECTION),
        # A read timeout escapes stripe's urllib client as the socket's own TimeoutError.
        (OSError, StripeErrorCode.CONNECTION),
    ):
        if isinstance(error, error_class):
            return code
    return StripeErrorCode.API_ERROR


def configured_api_key(settings: Settings) -> Callable[[], str]:
    """The settings' Stripe API key, read on each call: Powertools caches it, and a rotated key is
    picked up when the cache expires."""

    def api_key() -> str:
        key = aws_parameters.stripe_api_key(settings)
        if key is None:  # callers build a StripeApi only when settings.stripe_api_configured
            raise ConfigError("set STRIPE_API_KEY_SECRET_ID (or STRIPE_API_KEY locally) to read Stripe")
        return key

    return api_key


class _UrllibWithTimeout:
    """urllib.request as stripe's urllib client uses it, with a timeout: the client passes none."""

    Request = urllib.request.Request
    ProxyHandler = urllib.request.ProxyHandler
    build_opener = staticmethod(urllib.request.build_opener)

    def __init__(self, timeout_seconds: float) -> None:
        self.urlopen = functools.partial(urllib.request.urlopen, timeout=timeout_seconds)


# What a scheduled job waits for one Stripe request, never retried: stripe's defaults (80 s a request,
# retried twice) would outlast the probe's period and the report's 120 s.
STRIPE_TIMEOUT_SECONDS = 5.0


class StripeApi:
    def __init__(
        self,
        api_key: Callable[[], str],
        api_base: str | None = None,
        on_error: Callable[[StripeErrorCode], None] | None = None,
        max_network_retries: int = 2,
        timeout_seconds: float | None = None,
        meter_events_base: str | None = None,
    ) -> None:
        self._api_key = api_key
        self._api_base = api_base
        self._meter_events_base = meter_events_base
        self._on_error = on_error
        self._max_network_retries = max_network_retries
        self._timeout_seconds = timeout_seconds
        self._client: StripeClient | None = None
        self._client_key: str | None = None

    def _stripe(self) -> StripeClient:
        key = self._api_key()
        if self._client is None or key != self._client_key:  # the key was rotated
            # Imported here: the client costs ~10 ms of cold start and only same-second ties need it.
            from stripe import StripeClient, UrllibClient

            http_client = (
                UrllibClient(_lib=_UrllibWithTimeout(self._timeout_seconds))
                if self._timeout_seconds
                else None
            )
            bases: BaseAddresses = {}  # Stripe's own address for each left out (a None would unset it)
            if self._api_base:
                bases["api"] = self._api_base
            if self._meter_events_base:
                bases["meter_events"] = self._meter_events_base
            self._client = StripeClient(
                key,
                base_addresses=bases,
                max_network_retries=self._max_network_retries,
                http_client=http_client,
            )
            self._client_key = key
        return self._client

    def _call(self, request: Callable[[StripeClient], Result]) -> Result:
        client = self._stripe()
        import stripe

        try:
            return request(client)
        except (stripe.StripeError, OSError) as error:
            code = stripe_error_code(error)
            if self._on_error is not None:
                self._on_error(code)
            raise StripeApiFailure(code) from error

    def _listed(self, list_call: Callable[[StripeClient], ListObject[Listed]]) -> Iterator[dict[str, Any]]:
        """Every object of a list, through stripe's auto-pagination; each page fetch is classified."""
        pages = iter(self._call(list_call).auto_paging_iter())
        while True:
            try:
                item = self._call(lambda _client: next(pages))
            except StopIteration:
                return
            yield item.to_dict()

    def subscriptions(self, starting_after: str | None = None) -> Iterator[dict[str, Any]]:
        """Every subscription, whatever its status, oldest cursor first; resumable after an id."""
        params: SubscriptionListParams = {"status": "all", "limit": 100}
        if starting_after:
            params["starting_after"] = starting_after
        return self._listed(lambda client: client.v1.subscriptions.list(params=params))

    def events(
        self,
        created_since: int,
        *,
        types: list[str] | None = None,
        undelivered_only: bool = False,
        starting_after: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events created since an epoch second (Stripe keeps 30 days), newest first."""
        params: EventListParams = {"created": {"gte": created_since}, "limit": 100}
        if types:
            params["types"] = types
        if undelivered_only:
            params["delivery_success"] = False
        if starting_after:
            params["starting_after"] = starting_after
        return self._listed(lambda client: client.v1.events.list(params=params))

    def balance_transactions(self, created_from: int, created_before: int) -> Iterator[dict[str, Any]]:
        """Every balance transaction created in [created_from, created_before), epoch seconds, each with
        its source (the charge or refund) expanded (needs the key's Balance read permission, and read
        access to charges)."""
        params: BalanceTransactionListParams = {
            "created": {"gte": created_from, "lt": created_before},
            "limit": 100,
            "expand": ["data.source"],
        }
        return self._listed(lambda client: client.v1.balance_transactions.list(params=params))

    def webhook_endpoints(self) -> Iterator[dict[str, Any]]:
        """Every webhook endpoint of the account (needs the key's Webhook Endpoints read permission)."""
        return self._listed(lambda client: client.v1.webhook_endpoints.list(params={"limit": 100}))

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._call(lambda client: client.v1.subscriptions.retrieve(subscription_id).to_dict())

    def check_access(self) -> None:
        """The cheapest authenticated call the key's Subscriptions-read permission allows."""
        self._call(lambda client: client.v1.subscriptions.list(params={"limit": 1}))

    def snapshot_event_of(self, notification: Mapping[str, Any]) -> dict[str, Any] | None:
        """The v1 event a thin event notification stands for, or None when Stripe names none.

        stripe's notification class fetches the v2 event (GET /v2/core/events/{id}); its
        ``snapshot_event`` is then read with v1 (needs the key's Events read permission).
        """

        def resolve(client: StripeClient) -> dict[str, Any] | None:
            thin = client.parse_event_notification_without_verification(json.dumps(notification))
            snapshot_id = thin.fetch_event().to_dict().get("snapshot_event")
            if not is_event_id(snapshot_id):
                return None
            return client.v1.events.retrieve(snapshot_id).to_dict()

        return self._call(resolve)

    def create_meter_event(self, event: MeterEvent) -> dict[str, Any]:
        """POST /v1/billing/meter_events (the key's Billing Meter Events write permission). The
        identifier is the Idempotency-Key too: a retry of a request Stripe executed replays its answer,
        so a resend must carry the same parameters (timestamp included) or Stripe answers 400
        ``idempotency_error`` for the key's 24 hours."""
        return self._call(
            lambda client: client.v1.billing.meter_events.create(
                params=cast("MeterEventCreateParams", event.params()),
                options={"idempotency_key": event.identifier},
            ).to_dict()
        )

    def meters(self) -> dict[str, str]:
        """Each active meter's event name and id (needs the key's Billing Meters read permission)."""
        return {
            meter["event_name"]: meter["id"]
            for meter in self._listed(
                lambda client: client.v1.billing.meters.list(params={"status": "active", "limit": 100})
            )
        }

    def meter_event_summaries(self, meter_id: str, customer: str, start_time: int, end_time: int) -> float:
        """The meter's aggregated value for the customer over [start_time, end_time), both on minute
        boundaries (Stripe's rule): the sum of every summary page."""
        return sum(
            float(summary["aggregated_value"])
            for summary in self._listed(
                lambda client: client.v1.billing.meters.event_summaries.list(
                    meter_id,
                    params={
                        "customer": customer,
                        "start_time": start_time,
                        "end_time": end_time,
                        "limit": 100,
                    },
                )
            )
        )

    def cancel_meter_event(self, event_name: str, identifier: str) -> dict[str, Any]:
        """POST /v1/billing/meter_event_adjustments, type cancel: Stripe cancels an event only within
        24 hours of receiving it; past that it answers 400 (an ``invalid_request`` failure)."""
        return self._call(
            lambda client: client.v1.billing.meter_event_adjustments.create(
                params={"event_name": event_name, "type": "cancel", "cancel": {"identifier": identifier}}
            ).to_dict()
        )

    def create_meter_event_session(self) -> tuple[str, str]:
        """POST /v2/billing/meter_event_session: the v2 stream's token and when it expires (ISO 8601,
        15 minutes on)."""
        session = self._call(lambda client: client.v2.billing.meter_event_session.create())
        return session.authentication_token, session.expires_at

    def stream_meter_events(self, events: Sequence[MeterEvent]) -> None:
        """POST /v2/billing/meter_event_stream on the meter events host, up to 100 events, with a
        session's token as this client's key. Stripe validates the events later, asynchronously (a
        refused one is reported by a ``v1.billing.meter.error_report_triggered`` event)."""
        self._call(
            lambda client: client.v2.billing.meter_event_stream.create(
                params={"events": [_stream_event(event) for event in events]}
            )
        )


def _stream_event(event: MeterEvent) -> MeterEventStreamCreateParamsEvent:
    """The event as the v2 stream takes it: v1's fields, with the timestamp in ISO 8601."""
    params = event.params()
    moment = datetime.fromtimestamp(event.timestamp, UTC)
    return {
        "event_name": params["event_name"],
        "identifier": params["identifier"],
        "payload": params["payload"],
        "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
