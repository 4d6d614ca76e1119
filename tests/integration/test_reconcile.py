"""Reconciliation against a Stripe stand-in on 127.0.0.1: drift healed through the webhooks' apply
path, missed events replayed through the intake's idempotency, 429s backed off, runs resumed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from billwatch.core.models import BillingAccount
from billwatch.core.self_invoke import SelfInvoker
from devtools import stripe_events as se
from tests.scenarios import ADMIN_CALLER, ADMIN_ROLE, OUTSIDER, iam_api_event
from tests.support import WEBHOOK_SECRET, Clock, LambdaContext, WebhookClient, load_handler

T0 = 1_796_137_200  # 2026-12-01 15:00 UTC
RATE_LIMITED = (429, {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"})


def account(pk: str) -> BillingAccount:
    return BillingAccount.get(pk, consistent_read=True)


def sub(n: int, **fields: Any) -> dict[str, Any]:
    fields.setdefault("metadata", {"account_id": f"acct_{n}"})
    return se.subscription(id=f"sub_{n}", customer=f"cus_{n}", created=T0 - 86400 * 30 + n, **fields)


@pytest.fixture
def reconcile(aws, stripe_api, monkeypatch, metrics) -> Any:
    for name, value in {
        "STRIPE_API_KEY": "rk_test_reconcile",
        "STRIPE_API_BASE": stripe_api.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ADMIN_ROLE_ARNS": ADMIN_ROLE,
    }.items():
        monkeypatch.setenv(name, value)
    module = load_handler("reconcile")
    module.reconciler.clock = Clock(T0)
    module.sleeps = []
    module.reconciler._sleep = module.sleeps.append
    module.webhooks = WebhookClient(load_handler("webhook_intake"))
    return module


def run(module: Any, run_id: str = "run-1", **options: Any) -> Any:
    module.reconciler.register_lambda_context(LambdaContext())
    return module.reconciler.run(run_id, **options)


def test_the_first_run_heals_every_kind_of_drift_and_leaves_the_rest(reconcile, stripe_api, metrics) -> None:
    in_step = sub(1)
    reconcile.webhooks.post(se.event("customer.subscription.created", in_step, created=T0 - 3600))
    ended = sub(2, status="canceled")
    reconcile.webhooks.post(se.event("customer.subscription.created", sub(2), created=T0 - 3600))
    rescheduled = sub(3, current_period_end=1_705_000_000, cancel_at_period_end=True)
    reconcile.webhooks.post(se.event("customer.subscription.created", sub(3), created=T0 - 3600))
    never_heard_of = sub(4)
    for subscription in (in_step, ended, rescheduled, never_heard_of):
        stripe_api.subscriptions[subscription["id"]] = subscription

    result = run(reconcile)
    assert (result.finished, result.checked, result.drift, result.healed) == (True, 4, 5, 5)
    assert (account("acct_1").subscription_status, account("acct_1").tier) == ("active", "PRO")
    assert (account("acct_2").subscription_status, account("acct_2").tier) == ("canceled", "FREE")
    assert account("acct_3").current_period_end == 1_705_000_000 and account("acct_3").cancel_at_period_end
    assert account("acct_4").tier == "PRO" and account("acct_4").stripe_customer_id == "cus_4"
    for field, count in (("status", 1), ("tier", 1), ("period_end", 1), ("cancel_at_period_end", 1)):
        assert metrics.total("ReconcileDrift", Field=field) == count, field
    assert metrics.total("ReconcileDrift", Field="subscription") == 1
    assert metrics.total("ReconcileHealed") == 5 and metrics.total("ReconcileRun") == 1
    drift_logs = [log for log in metrics.logs() if log["message"] == "Billing state drifted from Stripe"]
    assert {log["subscription_id"] for log in drift_logs} == {"sub_2", "sub_3", "sub_4"}


def test_nothing_newer_is_overwritten(reconcile, stripe_api, metrics) -> None:
    # A webhook from after the moment Stripe was read wins over what was read.
    reconcile.webhooks.post(
        se.event("customer.subscription.updated", sub(1, status="canceled"), created=T0 + 60)
    )
    stripe_api.subscriptions["sub_1"] = sub(1)
    result = run(reconcile)
    assert (result.drift, result.healed) == (2, 0)
    assert account("acct_1").subscription_status == "canceled"
    assert metrics.total("ReconcileHealed") == 0


def test_later_runs_look_only_at_what_changed_since_the_last_one(reconcile, stripe_api) -> None:
    stripe_api.subscriptions["sub_1"] = sub(1)
    run(reconcile, "run-1")
    stripe_api.requests.clear()
    changed = sub(1, status="past_due")
    stripe_api.subscriptions["sub_1"] = changed
    stripe_api.add_event(se.event("customer.subscription.updated", changed, created=T0 + 600), delivered=True)
    reconcile.reconciler.clock.now = T0 + 86400
    result = run(reconcile, "run-2")
    assert result.checked >= 1 and account("acct_1").subscription_status == "past_due"
    paths = [path for path, _ in stripe_api.requests]
    assert not any(path.startswith("/v1/subscriptions?") for path in paths)  # no full listing
    assert any(f"created%5Bgte%5D={T0}" in path for path in paths if path.startswith("/v1/events"))


def test_missed_events_are_replayed_once(reconcile, stripe_api, metrics) -> None:
    reconcile.webhooks.post(se.event("customer.subscription.created", sub(1), created=T0 - 7200))
    failed_payment = se.event(
        "invoice.payment_failed",
        se.invoice(
            id="in_1", customer="cus_1", status="open", subscription_metadata={"account_id": "acct_1"}
        ),
        created=T0 - 3600,
    )
    already_applied = se.event("invoice.paid", se.invoice(id="in_0", customer="cus_1"), created=T0 - 5000)
    assert reconcile.webhooks.post(already_applied).status == 200  # its failure was Stripe's view only
    stripe_api.add_event(failed_payment, delivered=False)
    stripe_api.add_event(already_applied, delivered=False)
    stripe_api.add_event(se.event("invoice.paid", se.invoice(id="in_x", customer="cus_1")), delivered=True)
    result = run(reconcile)
    assert result.healed == 1 and account("acct_1").last_payment_status == "failed"
    assert metrics.total("ReconcileDrift", Field="missed_event") == 1
    assert metrics.total("PaymentFailed") == 1  # counted once, by the replay
    assert run(reconcile, "run-again").healed == 0  # a second replay is a duplicate


def test_a_rate_limit_is_backed_off_from_and_the_listing_resumes(reconcile, stripe_api) -> None:
    for n in range(3):
        stripe_api.subscriptions[f"sub_{n}"] = sub(n)
    stripe_api.fail_next = [RATE_LIMITED, RATE_LIMITED]
    result = run(reconcile)
    assert result.finished and result.checked == 3
    assert reconcile.sleeps == [1.0, 2.0]


def test_a_run_short_of_time_resumes_from_its_checkpoint(reconcile, stripe_api, monkeypatch) -> None:
    monkeypatch.setattr("billwatch.billing.reconcile.CHECKPOINT_EVERY", 5)
    for n in range(23):
        stripe_api.subscriptions[f"sub_{n}"] = sub(n)
    first = run(reconcile, time_left=lambda: 1.0, reserve=30.0)
    assert not first.finished and first.checked == 5
    rest = run(reconcile)
    assert rest.finished and rest.checked == 23 and rest.healed == 23
    listed = [path for path, _ in stripe_api.requests if path.startswith("/v1/subscriptions")]
    assert any("starting_after=sub_" in path for path in listed)


def test_a_failing_run_is_counted_and_raises(reconcile, stripe_api, metrics) -> None:
    stripe_api.failure = (500, {"type": "api_error", "message": "boom"})
    with pytest.raises(Exception, match="api_error"):
        run(reconcile)
    assert metrics.total("ReconcileFailed") == 1 and metrics.total("ReconcileRun") == 0
    assert metrics.total("StripeApiError", Code="api_error") == 1


def test_the_schedule_runs_it_and_admins_can_start_it(reconcile, stripe_api, monkeypatch) -> None:
    stripe_api.subscriptions["sub_1"] = sub(1)
    started = []
    monkeypatch.setattr(SelfInvoker, "start", lambda self, payload: started.append(payload))
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "time": "2026-12-01T05:00:00Z"}
    assert reconcile.lambda_handler(scheduled, LambdaContext())["finished"] is True
    answer = reconcile.lambda_handler(
        iam_api_event("POST", "/admin/reconcile", None, ADMIN_CALLER), LambdaContext()
    )
    assert answer["statusCode"] == 202 and started == [{"run_id": json.loads(answer["body"])["run_id"]}]
    refused = reconcile.lambda_handler(
        iam_api_event("POST", "/admin/reconcile", None, OUTSIDER), LambdaContext()
    )
    assert refused["statusCode"] == 403 and len(started) == 1
