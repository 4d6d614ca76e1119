"""The quota policy's conditions, sent for real: moto's DynamoDB agrees with the rule.

tests/unit/test_quota_policy.py compares the rule with its condition through ``holds``, an
evaluator of DynamoDB's semantics written for the test. Here a sample of the same random worlds
goes to moto instead, as the service sends it (billwatch.core.dynamo.conditional_update, one
UpdateItem on the billing table the template declares): the condition accepts exactly when the
rule counts, the item written is the one ``applied`` predicts, and a refused write returns the item
the rule then answers from. That ties ``holds`` and ``applied`` to a real implementation too.
"""

from __future__ import annotations

import itertools
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from pynamodb.constants import ALL_NEW
from pynamodb.transactions import TransactWrite

from billwatch.core import dynamo
from billwatch.core.dynamo import conditional_update
from billwatch.core.models import BillingAccount, bind_billing_table
from billwatch.licensing.quota_policy import AccountUsage, Outcome, QuotaPolicy
from tests.unit.test_quota_policy import CASES, NOV_15, SHIPPED, applied, holds, worlds

_accounts = itertools.count()


@pytest.fixture
def table(aws) -> str:
    bind_billing_table(aws["BillingStateTable"])
    return aws["BillingStateTable"]


def stored(table: str, item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The item, put under a key of its own: the account it stands for and the item as stored."""
    account_id = f"acct_policy_{next(_accounts)}"
    item = {**item, "pk": {"S": account_id}}
    boto3.client("dynamodb").put_item(TableName=table, Item=item)
    return account_id, item


def same_item(left: dict[str, Any] | None, right: dict[str, Any]) -> bool:
    """Equal as DynamoDB items (a number set's order and a number's spelling aside)."""

    def canonical(item: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in item.items():
            ((kind, raw),) = value.items()
            out[name] = (
                (kind, sorted(float(n) for n in raw))
                if kind == "NS"
                else (kind, float(raw) if kind == "N" else raw)
            )
        return out

    return left is not None and canonical(left) == canonical(right)


def check_count(
    table: str, policy: QuotaPolicy, item: dict[str, Any], feature: str, quantity: int, now: int
) -> None:
    account_id, item = stored(table, item)
    usage = AccountUsage.from_raw(account_id, item)
    decision = policy.decide(usage, feature, quantity, now)
    if not policy.metered(feature):
        return
    condition = policy.count_condition(feature, quantity, now)
    actions = policy.count_actions(feature, quantity, now)
    accepted, returned = conditional_update(BillingAccount, account_id, actions, condition, ALL_NEW)
    assert accepted == holds(condition, item) == (decision.outcome is Outcome.COUNT), (decision, item)
    if accepted:
        assert same_item(returned, applied(actions, item)), returned
        written = AccountUsage.from_raw(account_id, returned)
        assert policy.after_write(written, feature, quantity, now) == decision
        return
    assert same_item(returned, item), returned  # the refused write's item: what the rule answers from
    assert policy.decide(AccountUsage.from_raw(account_id, returned), feature, quantity, now) == decision
    if decision.outcome is Outcome.START_PERIOD:
        actions = policy.start_period_actions(usage, feature, quantity, now)
        accepted, returned = conditional_update(
            BillingAccount, account_id, actions, policy.period_as_read(usage.account), ALL_NEW
        )
        assert accepted and same_item(returned, applied(actions, item)), returned
        written = AccountUsage.from_raw(account_id, returned)
        assert policy.after_write(written, feature, quantity, now, Outcome.START_PERIOD) == decision


def check_as_read(policy: QuotaPolicy, item: dict[str, Any], feature: str) -> None:
    """A keyed use's transaction checks the item is as read: it is, so the check passes."""
    usage = AccountUsage.from_raw(item["pk"]["S"], item)
    with TransactWrite(connection=dynamo.low_level(BillingAccount)) as transaction:
        transaction.condition_check(
            BillingAccount, usage.account.pk, condition=policy.as_read(usage, feature)
        )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(worlds())
def test_moto_agrees_with_the_rule_on_random_worlds(table, world) -> None:
    policy, item, feature, quantity, now = world
    check_count(table, policy, item, feature, quantity, now)
    _, item = stored(table, item)
    check_as_read(policy, item, feature)


@pytest.mark.parametrize(("item", "feature", "quantity", "expected"), CASES.values(), ids=CASES.keys())
def test_moto_agrees_with_the_rule_on_each_decision(table, item, feature, quantity, expected) -> None:
    policy = QuotaPolicy(SHIPPED)
    assert (
        policy.decide(AccountUsage.from_raw("acct_1", item), feature, quantity, NOV_15).outcome is expected[0]
    )
    check_count(table, policy, item, feature, quantity, NOV_15)
