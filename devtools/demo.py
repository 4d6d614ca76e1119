"""`make demo`: a realistic day of Stripe traffic through the whole local stack, then a summary.

    python -m devtools.demo [--hours 24] [--step-minutes 5] [--seed 7] [--log-file PATH]

It starts its own local stack (moto, every function, the template's schedules and alarms) on a
clock that moves in steps of ``--step-minutes`` (5 local minutes; the health probe runs every 5
minutes, the template's HealthProbeIntervalMinutes at its slowest, so that a day takes about a
minute and a half). At each step it delivers that step's webhooks signed as Stripe would, calls the
licensing API, fires the schedules that fall due, evaluates every alarm and lets the alert
dispatcher deliver what they publish. The day holds:

* signups through checkout (some delivered twice, as Stripe retries), abandoned checkouts;
* upgrades from the free price, renewals, failed payments that recover or end in a churn,
  cancellations;
* 13:00 to 13:20, a DynamoDB outage: the intake answers 503 and, as Stripe does, the deliveries
  are sent again later, and applied then;
* an account on the free tier that runs through its ``api_calls`` quota;
* what the business dashboard draws: first invoices paid (card, bank debit), trials and
  subscriptions left incomplete, declined payment attempts with their decline codes, refunds, a
  dispute, a Radar early fraud warning, a buyer opening a dozen checkout sessions in a minute,
  and quota grants by an admin.

``--hours`` shorter than a day replays the same story in less time: the traffic and the quota's
use are drawn closer together, the outage keeps its 20 minutes at 13:00 and the clock starts as
much before it as the day would have, in proportion.

The console gets the summary: the webhook deliveries by outcome, the usage checks, the alarms
that fired and cleared, the alerts sent to each receiver, the business dashboard's figures for the
replay (the funnel, subscriptions by plan and status, payments by decline reason, refunds, ...)
and the billing report's SLOs and KPIs.
What the functions and the stack log (JSON lines, the outage's tracebacks) goes to a file, whose
path is printed first (``--log-file``, else a new file in the temporary directory).

Events carry the real time as ``created`` (the intake measures upgrade latency against it); the
local clock stamps the metrics, schedules and alarms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import random
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from devtools import send_event
from devtools import stripe_events as se
from devtools.alarm_evaluator import MetricStore, statistic
from devtools.emulator import LocalEmulator
from devtools.local_schedules import ManualClock
from devtools.template import parameter_values

DAY_MINUTES = 24 * 60
OUTAGE_START = 13 * 60  # the minute of the day when DynamoDB starts throttling every write
OUTAGE_MINUTES = 20
STRIPE_RETRY_MINUTES = 60  # Stripe's first retries of a failed delivery come within the hour
QUOTA_ACCOUNT = "acct_demo_quota"
# The payment attempts that fail in the day, as Stripe reports them: (error code, decline code).
DECLINES = (
    ("card_declined", "insufficient_funds"),
    ("card_declined", "insufficient_funds"),
    ("card_declined", "generic_decline"),
    ("expired_card", None),
    ("authentication_required", "authentication_required"),
    ("card_declined", "do_not_honor"),
)
# How long a paid invoice took from its finalisation, by payment method: (type, seconds range).
PAYMENT_METHODS = (("card", (2, 40)), ("card", (2, 40)), ("us_bank_account", (86_400, 4 * 86_400)))
REFUNDS = ((7, 2000, 0), (8, 500, 0), (8, 2000, 500))
VELOCITY_SESSIONS = 12  # one buyer's checkout sessions in one minute: over the velocity limit


@dataclass(order=True)
class Delivery:
    minute: int
    order: int
    kind: str = field(compare=False)  # "webhook", "usage" or "grant"
    payload: dict[str, Any] = field(compare=False)
    attempt: int = field(default=1, compare=False)


class StripeTraffic:
    """The day's deliveries, minute by minute from the replay's start, from a seeded random generator.

    The day's story told in ``minutes``: every time of the day, and every delay between two
    deliveries, in proportion; the outage keeps its length, at the time of the day in proportion.
    """

    def __init__(self, seed: int, minutes: int = DAY_MINUTES) -> None:
        self._random = random.Random(seed)  # noqa: S311 # nosec B311 # a repeatable day, not a secret
        self._scale = minutes / DAY_MINUTES
        self.deliveries: list[Delivery] = []
        self._order = 0
        outage_start = self._at(OUTAGE_START)
        self.outage = (outage_start, outage_start + OUTAGE_MINUTES)

    def _at(self, minute_of_day: int) -> int:
        return int(minute_of_day * self._scale)

    def _after(self, minutes_of_day: int) -> int:
        return max(1, self._at(minutes_of_day))

    def _add(self, minute: int, kind: str, payload: dict[str, Any]) -> None:
        self._order += 1
        self.deliveries.append(Delivery(minute, self._order, kind, payload))

    def _webhook(
        self,
        minute: int,
        event_type: str,
        obj: dict[str, Any],
        *,
        twice: bool = False,
        previous: dict[str, Any] | None = None,
    ) -> None:
        event = {"type": event_type, "object": obj, "id": f"evt_demo_{self._order:05d}"}
        if previous is not None:
            event["previous_attributes"] = previous
        self._add(minute, "webhook", event)
        if twice:  # Stripe sends some events more than once
            self._add(minute + self._after(self._random.randint(1, 30)), "webhook", event)

    def _minute(self, first_hour: int, last_hour: int) -> int:
        return self._at(self._random.randint(first_hour * 60, last_hour * 60 - 1))

    def build(self) -> list[Delivery]:
        pick = self._random
        for n in range(15):  # customers from before today, renewing through the day
            account = f"acct_demo_renew_{n:02d}"
            sub = _subscription(account)
            self._webhook(0, "customer.subscription.created", sub)
            invoice = se.invoice(id=f"in_renew_{n:02d}", customer=sub["customer"], subscription=sub["id"])
            self._webhook(self._minute(6, 22), "invoice.paid", invoice)
        for n in range(30):  # signups
            account = f"acct_demo_new_{n:02d}"
            start = self._minute(8, 20)
            sub = _subscription(account)
            session = se.checkout_session(
                id=f"cs_demo_{n:02d}",
                customer=sub["customer"],
                client_reference_id=account,
                subscription=sub["id"],
            )
            self._webhook(start, "checkout.session.completed", session)
            self._webhook(start + 1, "customer.subscription.created", sub, twice=pick.random() < 0.2)
            self._first_invoice(start + 2, sub, n)
        for n in range(6):  # abandoned checkouts
            session = se.checkout_session(
                id=f"cs_demo_gone_{n}",
                customer=None,
                subscription=None,
                client_reference_id=f"acct_demo_gone_{n}",
            )
            self._webhook(self._minute(8, 22), "checkout.session.expired", {**session, "status": "expired"})
        for n in range(6):  # free to PRO
            account = f"acct_demo_up_{n}"
            start = self._minute(7, 12)
            self._webhook(start, "customer.subscription.created", _subscription(account, lookup_key=None))
            self._webhook(
                start + self._after(pick.randint(60, 300)),
                "customer.subscription.updated",
                _subscription(account),
            )
        for n in range(4):  # failed payments: two recover, one churns, one is still being retried
            account = f"acct_demo_renew_{n:02d}"
            sub = _subscription(account)
            failed_at = self._minute(10, 16)
            failed = se.invoice(
                id=f"in_fail_{n}", customer=sub["customer"], subscription=sub["id"], status="open"
            )
            self._webhook(failed_at, "invoice.payment_failed", failed)
            if n < 2:
                paid = se.invoice(id=f"in_fail_{n}", customer=sub["customer"], subscription=sub["id"])
                self._webhook(failed_at + self._after(180), "invoice.paid", paid)
            elif n == 2:
                self._webhook(
                    failed_at + self._after(60),
                    "customer.subscription.updated",
                    _subscription(account, status="past_due"),
                )
                self._webhook(
                    failed_at + self._after(240),
                    "customer.subscription.deleted",
                    _subscription(account, status="canceled"),
                )
        for n in range(4, 7):  # cancellations
            account = f"acct_demo_renew_{n:02d}"
            self._webhook(
                self._minute(9, 21),
                "customer.subscription.deleted",
                _subscription(account, status="canceled"),
            )
        for n in range(40):  # the busy quarter hour that the outage hits
            account = f"acct_demo_renew_{n % 15:02d}"
            sub = _subscription(account)
            invoice = se.invoice(id=f"in_busy_{n:02d}", customer=sub["customer"], subscription=sub["id"])
            self._webhook(self.outage[0] + n // 2, "invoice.paid", invoice)
        self._webhook(
            self._at(8 * 60), "customer.subscription.created", _subscription(QUOTA_ACCOUNT, lookup_key=None)
        )
        self._business_day()
        for n in range(14):  # 100 calls every 20 minutes against a quota of 1,000
            self._add(
                self._at(9 * 60 + 20 * n),
                "usage",
                {"account": QUOTA_ACCOUNT, "feature": "api_calls", "quantity": 100},
            )
        return sorted(self.deliveries)

    def _first_invoice(self, minute: int, sub: dict[str, Any], n: int) -> None:
        """A signup's first invoice, paid by card in seconds or by bank debit in days."""
        method, (fastest, slowest) = PAYMENT_METHODS[n % len(PAYMENT_METHODS)]
        finalized = int(time.time()) - slowest
        invoice = se.invoice(
            id=f"in_first_{n:02d}",
            customer=sub["customer"],
            subscription=sub["id"],
            billing_reason="subscription_create",
            created=finalized,
            paid_at=finalized + self._random.randint(fastest, slowest),
            payment_method_types=[method],
        )
        self._webhook(minute, "invoice.paid", invoice)

    def _business_day(self) -> None:
        """What the business dashboard draws beyond the day's subscriptions and renewals."""
        for n in range(5):  # trials, and subscriptions whose first payment never went through
            status = "trialing" if n < 3 else "incomplete"
            account = f"acct_demo_{status}_{n}"
            self._webhook(
                self._minute(9, 18), "customer.subscription.created", _subscription(account, status=status)
            )
        for n, (error_code, decline_code) in enumerate(DECLINES):  # declined attempts of the renewals
            customer = f"cus_demo_renew_{n:02d}"
            attempt = se.payment_intent(
                id=f"pi_demo_declined_{n}",
                customer=customer,
                error_code=error_code,
                decline_code=decline_code,
            )
            self._webhook(self._minute(10, 16), "payment_intent.payment_failed", attempt)
        # A charge refunded in full; another refunded in part, then the rest: (renewal, refunded, before).
        for n, (renewal, refunded, before) in enumerate(REFUNDS):
            charge = se.charge(
                id=f"ch_demo_refund_{renewal:02d}",
                customer=f"cus_demo_renew_{renewal:02d}",
                amount_refunded=refunded,
            )
            self._webhook(
                self._minute(11 + 3 * n, 12 + 3 * n),
                "charge.refunded",
                charge,
                previous={"amount_refunded": before},
            )
        disputed = se.dispute(id="dp_demo_0", charge="ch_demo_disputed", reason="fraudulent")
        self._webhook(self._minute(15, 16), "charge.dispute.created", disputed)
        warning = se.early_fraud_warning(id="issfr_demo_0", charge="ch_demo_disputed")
        self._webhook(self._minute(14, 15), "radar.early_fraud_warning.created", warning)
        burst = self._minute(17, 18)
        for n in range(VELOCITY_SESSIONS):  # one buyer, a dozen sessions in a minute: card testing
            session = se.checkout_session(
                id=f"cs_demo_burst_{n:02d}",
                customer=None,
                subscription=None,
                status="expired",
                email="card.tester@example.com",
                created=int(time.time()) - 3600,
            )
            self._webhook(burst, "checkout.session.expired", session)
        for n, hour in enumerate((9, 11, 16)):  # an admin grants extra quota, outside the outage
            grant = {
                "account": f"acct_demo_renew_{9 + n:02d}",
                "feature": "exports",
                "quantity": 50 * (n + 1),
            }
            self._add(self._at(hour * 60), "grant", grant)


def _subscription(
    account: str, *, status: str = "active", lookup_key: str | None = "pro_monthly"
) -> dict[str, Any]:
    customer = account.replace("acct_", "cus_")
    return se.subscription(
        id=account.replace("acct_", "sub_"),
        customer=customer,
        status=status,
        lookup_key=lookup_key,
        price_id="price_pro_monthly" if lookup_key else "price_free",
        amount=2000 if lookup_key else 0,
        metadata={"account_id": account},
    )


@contextlib.contextmanager
def dynamodb_outage(active: list[bool]) -> Iterator[None]:
    """While ``active[0]``, every DynamoDB write is throttled (as botocore reports it once its retries
    give up)."""
    original = BaseClient._make_api_call

    def throttled(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if active[0] and client.meta.service_model.service_name == "dynamodb" and operation in _WRITES:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}
            raise ClientError({"Error": error}, operation)
        return original(client, operation, params)

    BaseClient._make_api_call = throttled
    try:
        yield
    finally:
        BaseClient._make_api_call = original


_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


class Demo:
    def __init__(self, stack: LocalEmulator, clock: ManualClock, start: float) -> None:
        self.stack = stack
        self.clock = clock
        self.start = start  # when, on the clock, the replay's minute 0 is
        self.webhooks: Counter[str] = Counter()
        self.usage: Counter[str] = Counter()
        self.grants: Counter[str] = Counter()
        self.outage = [False]

    def deliver(self, delivery: Delivery, pending: list[Delivery]) -> None:
        if delivery.kind == "usage":
            account, request = (
                delivery.payload["account"],
                {k: v for k, v in delivery.payload.items() if k != "account"},
            )
            status, _ = _call_json(self.stack.url + f"/v1/accounts/{account}/usage", request)
            self.usage[
                "allowed" if status == 200 else "denied" if status in (403, 429) else f"HTTP {status}"
            ] += 1
            return
        if delivery.kind == "grant":
            account = delivery.payload["account"]
            request = {k: v for k, v in delivery.payload.items() if k != "account"}
            status, _ = _call_json(self.stack.url + f"/admin/accounts/{account}/grants", request)
            self.grants["granted" if status == 200 else f"HTTP {status}"] += 1
            return
        payload = dict(delivery.payload)
        event = se.event(
            payload["type"],
            payload["object"],
            id=payload["id"],
            created=int(time.time()),
            previous_attributes=payload.get("previous_attributes"),
        )
        status, body = send_event.send(
            json.dumps(event).encode(),
            self.stack.url + "/webhooks/stripe",
            list(self.stack.webhook_secrets),
            timeout=30,
        )
        if status >= 500:
            self.webhooks["failed (5xx), sent again later"] += 1
            pending.append(
                Delivery(
                    delivery.minute + STRIPE_RETRY_MINUTES,
                    delivery.order,
                    "webhook",
                    delivery.payload,
                    delivery.attempt + 1,
                )
            )
            return
        outcome = json.loads(body).get("outcome") if status == 200 else f"rejected ({status})"
        self.webhooks[str(outcome)] += 1

    def run(self, traffic: StripeTraffic, minutes: int, step: int) -> None:
        pending = traffic.build()
        with dynamodb_outage(self.outage):
            for minute in range(0, minutes + 1, step):
                self.clock.advance_to(self.start + minute * 60)
                self.outage[0] = traffic.outage[0] <= minute < traffic.outage[1]
                due = sorted(d for d in pending if d.minute <= minute)
                pending = [d for d in pending if d.minute > minute]
                for delivery in due:
                    self.deliver(delivery, pending)
                self.stack.step()
        self.outage[0] = False
        # What Stripe still had to retry when the day ended is sent now, and counted.
        for delivery in sorted(pending):
            if delivery.kind == "webhook":
                self.deliver(delivery, [])


def _call_json(url: str, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _hhmm(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%H:%M")


def summary(demo: Demo, report: str) -> str:
    stack = demo.stack
    start = dt.datetime.fromtimestamp(demo.start, dt.UTC)
    end = dt.datetime.fromtimestamp(demo.clock.now(), dt.UTC)
    lines = [f"billwatch demo: {start:%Y-%m-%d %H:%M} to {end:%H:%M} (UTC), replayed", ""]
    lines.append(f"Webhook deliveries: {sum(demo.webhooks.values())}")
    lines += [f"  {outcome}: {count}" for outcome, count in sorted(demo.webhooks.items())]
    lines.append(f"Usage checks: {sum(demo.usage.values())}")
    lines += [f"  {outcome}: {count}" for outcome, count in sorted(demo.usage.items())]
    lines.append(f"Quota grants: {sum(demo.grants.values())}")
    lines += [f"  {outcome}: {count}" for outcome, count in sorted(demo.grants.items())]
    lines.append("Alarms that fired:")
    fired_at: dict[str, float] = {}
    fired = []
    assert stack.alarms is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check
    # Building blocks of composite alarms notify nobody: their composite speaks for them.
    notifying = {
        key for key, alarm in stack.alarms.definitions.items() if alarm.properties.get("AlarmActions")
    }
    for event in stack.alarm_events:
        if event.alarm not in notifying:
            continue
        if event.new_state == "ALARM":
            fired_at[event.alarm] = event.at
        elif event.alarm in fired_at and event.new_state == "OK":
            fired.append(f"  {event.alarm}: {_hhmm(fired_at[event.alarm])} to {_hhmm(event.at)} (cleared)")
            del fired_at[event.alarm]
    fired += [f"  {alarm}: since {_hhmm(at)} (still firing)" for alarm, at in fired_at.items()]
    lines += fired or ["  none"]
    lines.append("Alerts sent:")
    sent = Counter((a["receiver"], a["kind"], (a["alert"] or {}).get("name")) for a in stack.alerts_sent)
    lines += [
        f"  to {receiver}: {name} ({kind}) x{count}" for (receiver, kind, name), count in sorted(sent.items())
    ] or ["  none"]
    lines += ["", "The business dashboard over the replay (its panels' figures):"]
    assert stack.metrics is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check
    with stack.metrics.lock:
        namespace = parameter_values(stack.template, stack.parameters)["MetricsNamespace"]
        lines += business_figures(stack.metrics.store, namespace, demo.start, end.timestamp())
    sections = report.split("\n\n")
    kpis = [section for section in sections if section.startswith(("SLOs", "Business", "Health score"))]
    lines += ["", "KPIs against their targets (the billing report of the day):", *kpis]
    return "\n".join(lines) + "\n"


def business_figures(store: MetricStore, namespace: str, start: float, end: float) -> list[str]:
    """What the business dashboard's panels add up to over ``[start, end)``, one line per panel."""

    def by(metric: str, *dimensions: str, stat: str = "Sum") -> dict[tuple[str, ...], float]:
        return _statistic_by(store, namespace, metric, dimensions, stat, start, end)

    def total(metric: str) -> float:
        return by(metric).get((), 0.0)

    def listed(found: dict[tuple[str, ...], float], text: Callable[[float], str] = _count) -> str:
        ranked = sorted(found.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{' '.join(values)} {text(value)}" for values, value in ranked) or "none"

    ended = total("CheckoutCompleted") + total("CheckoutExpired")
    paid, failed = total("PaymentSucceeded"), total("PaymentFailed")
    success = f"{100 * paid / (paid + failed):.1f} %" if paid + failed else "no payments"
    refunded, unpaid = by("RefundAmount", "Currency"), by("PaymentFailedAmount", "Currency")
    money = [
        f"    {currency.upper()}: paid {_money(amount)}, refunded {_money(refunded.get((currency,), 0))}, "
        f"failed invoices {_money(unpaid.get((currency,), 0))}"
        for (currency,), amount in sorted(by("PaymentAmount", "Currency").items())
    ]
    return [
        f"  Funnel: checkout sessions ended {_count(ended)}, completed {_count(total('CheckoutCompleted'))}, "
        f"first invoices paid {_count(total('FirstInvoicePaid'))}, "
        f"upgraded to PRO {_count(by('SubscriptionsUpgraded', 'Tier').get(('PRO',), 0))}",
        f"  Subscriptions created by plan and status: {listed(by('SubscriptionCreated', 'Tier', 'Status'))}",
        f"  Payment success: {success} (KPI 95 %)",
        f"  Payments by decline reason: {listed(by('PaymentDeclined', 'DeclineReason'))}",
        "  Paid, refunded and failed amounts:",
        *(money or ["    none"]),
        f"  Revenue by plan: {listed(by('PaymentAmount', 'Currency', 'Tier'), _money)}",
        f"  Payment duration p95 by payment method: "
        f"{listed(by('PaymentDuration', 'PaymentMethod', stat='p95'), _duration)}",
        f"  Credits: granted {_count(total('QuotaGranted'))}, consumed {_count(total('UsageCounted'))}",
        f"  Suspicious activity: early fraud warnings {_count(total('EarlyFraudWarning'))}, "
        f"disputes opened {_count(total('DisputeOpened'))}, "
        f"checkout sessions over the velocity limit {_count(total('CheckoutVelocityExceeded'))}, "
        f"revenue drifts {_count(total('RevenueDrift'))}",
        f"  Deployments: {_count(total('Deployed'))}",
    ]


def _statistic_by(
    store: MetricStore,
    namespace: str,
    metric: str,
    dimensions: tuple[str, ...],
    stat: str,
    start: float,
    end: float,
) -> dict[tuple[str, ...], float]:
    """The statistic over the range of each series of ``metric`` published with exactly
    ``service`` and ``dimensions``, by their values (as the dashboard's SEARCH finds them)."""
    compute = statistic(stat)
    found = {}
    wanted = {"service", *dimensions}
    for key in filter(lambda key: (key.namespace, key.name) == (namespace, metric), store.keys()):
        values = dict(key.dimensions)
        if set(values) == wanted and (points := store.values(key, start, end)):
            found[tuple(values[name] for name in dimensions)] = compute(points)
    return found


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _new_log_file() -> Path:
    handle, name = tempfile.mkstemp(prefix="billwatch-demo-", suffix=".log")
    os.close(handle)
    return Path(name)


@contextlib.contextmanager
def _logs_to(log: TextIO) -> Iterator[None]:
    """Everything printed or logged while the stack runs, the functions' JSON logs included, into ``log``.

    The functions bind their log stream when they are loaded: the stack must start in here.
    """
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        root.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--hours", type=int, default=24, help="how long the replay is (1-24, default 24)")
    parser.add_argument("--step-minutes", type=int, default=5, help="the clock's step (default 5)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--log-file", type=Path, default=None, help="where the logs go (default: a new temp file)"
    )
    args = parser.parse_args(argv)
    if not (1 <= args.hours <= 24 and 1 <= args.step_minutes <= 60):
        parser.error("--hours 1-24, --step-minutes 1-60")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    minutes = args.hours * 60
    traffic = StripeTraffic(args.seed, minutes)
    yesterday = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(
        days=1
    )
    # The outage at 13:00 on the clock, whatever the length: the replay starts that much before it.
    start = (yesterday + dt.timedelta(minutes=OUTAGE_START - traffic.outage[0])).timestamp()
    clock = ManualClock(start)
    # The probe every 5 minutes (the template allows 1 to 5): a day in about a minute and a half.
    parameters = {"HealthProbeIntervalMinutes": "5"}
    log_path = args.log_file or _new_log_file()
    print(
        f"Replaying {args.hours} h of Stripe traffic from {_hhmm(start)} UTC on a local stack;"
        f" the functions' logs go to {log_path}",
        flush=True,
    )
    with (
        log_path.open("w", encoding="utf-8") as log,
        _logs_to(log),
        LocalEmulator(autorun=False, clock=clock, parameters=parameters).start(port=0) as stack,
    ):
        demo = Demo(stack, clock, start)
        demo.run(traffic, minutes, args.step_minutes)
        text = summary(demo, stack.billing_report("daily"))
    print(text, end="")
    print(f"\nThe functions' logs: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
