"""The quota rule says the same thing twice, in Python and as a DynamoDB condition: they must agree.

``QuotaPolicy.decide`` answers a use from the item as read; ``count_condition`` is what DynamoDB
checks when a plain use is counted without a read. A plain use is right only if the condition
accepts an item exactly when ``decide`` answers COUNT for it (otherwise a refused write would be
answered wrongly, or a write accepted that the rule refuses). The two are written independently,
so this compares them over random catalogs, items, uses and moments.

No DynamoDB here: ``holds`` below evaluates the pynamodb condition objects the policy builds with
DynamoDB's semantics, for the operators the policy uses and no others (any other raises, so a new
operator has to be added here knowingly). tests/integration/test_quota_policy_moto.py checks, on a
sample, that moto's DynamoDB evaluates the same conditions the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynamodb.expressions.condition import And, Comparison, Condition, Exists, In, Not, NotExists, Or
from pynamodb.expressions.operand import Path, Value, _IfNotExists
from pynamodb.expressions.update import Action, AddAction, RemoveAction, SetAction

from billwatch.core.models import usage_announcements, usage_counter, usage_grant
from billwatch.licensing.plans import PlanCatalog, parse_catalog
from billwatch.licensing.quota_policy import (
    MAX_QUANTITY,
    AccountUsage,
    Outcome,
    QuotaPolicy,
    UsageRequestError,
    month_period,
)
from tests.support import ROOT

# ----------------------------------------------------------------------- DynamoDB's semantics
# Conditions and updates on an item in DynamoDB's JSON ({"N": "5"}), top-level attributes only.


def _operand(operand: Any, item: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(operand, Path):
        (name,) = operand.path
        return item.get(name)
    if isinstance(operand, Value):
        return operand.value
    raise NotImplementedError(f"operand {operand!r}")


def _scalar(value: dict[str, Any]) -> tuple[str, Any]:
    ((kind, raw),) = value.items()
    if kind == "N":
        return kind, Decimal(raw)
    if kind == "L":
        return kind, tuple(_scalar(element) for element in raw)
    if kind in {"S", "BOOL"}:
        return kind, raw
    raise NotImplementedError(f"type {kind}")


def holds(condition: Condition, item: dict[str, Any]) -> bool:
    """Whether DynamoDB would accept ``item`` under ``condition``. A comparison with a missing
    attribute, or between two types, is false; there is no third truth value. (What ``<>`` makes
    of a missing attribute is not relied on: the policy asks ``attribute_exists`` first.)"""
    if isinstance(condition, And):
        return all(holds(part, item) for part in condition.values)
    if isinstance(condition, Or):
        return any(holds(part, item) for part in condition.values)
    if isinstance(condition, Not):
        return not holds(condition.values[0], item)
    if isinstance(condition, Exists):
        return _operand(condition.values[0], item) is not None
    if isinstance(condition, NotExists):
        return _operand(condition.values[0], item) is None
    if isinstance(condition, In):
        left = _operand(condition.values[0], item)
        return left is not None and any(
            _scalar(left) == _scalar(_operand(v, item)) for v in condition.values[1:]
        )
    if isinstance(condition, Comparison):
        left, right = (_operand(v, item) for v in condition.values)
        if left is None or right is None:
            return False
        (left_kind, a), (right_kind, b) = _scalar(left), _scalar(right)
        if condition.operator == "<>":
            return (left_kind, a) != (right_kind, b)
        if left_kind != right_kind or (condition.operator != "=" and left_kind not in {"N", "S"}):
            return False
        return {"=": a == b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[condition.operator]
    raise NotImplementedError(f"{type(condition).__name__}: the policy uses no such condition yet")


def applied(actions: list[Action], item: dict[str, Any]) -> dict[str, Any]:
    """The item after an UpdateItem of ``actions`` (every operand read from the item before it)."""
    after = dict(item)
    for action in actions:
        (name,) = action.values[0].path
        if isinstance(action, RemoveAction):
            after.pop(name, None)
        elif isinstance(action, AddAction):
            current = Decimal(item[name]["N"]) if name in item else Decimal(0)
            after[name] = {"N": str(current + Decimal(action.values[1].value["N"]))}
        elif isinstance(action, SetAction) and isinstance(action.values[1], _IfNotExists):
            path, default = action.values[1].values
            after[name] = _operand(path, item) or _operand(default, item)
        elif isinstance(action, SetAction):
            after[name] = _operand(action.values[1], item)
        else:
            raise NotImplementedError(f"{type(action).__name__}: the policy writes no such action yet")
    return after


# ----------------------------------------------------------------------- random worlds

NAMES = ("FREE", "PRO", "TEAM")
FEATURES = ("exports", "api_calls", "sso")
DAY = 86_400
MONTHS = [int(dt.datetime(2026, m, 1, tzinfo=dt.UTC).timestamp()) for m in (10, 11)]


@st.composite
def catalogs(draw: st.DrawFn) -> PlanCatalog:
    """1 to 3 tiers, each with each feature absent, on/off or with a small quota (0 included), which
    a use past it is refused or billed as overage, up to a hard cap or without one."""
    tiers = []
    for rank, name in enumerate(NAMES[: draw(st.sampled_from([1, 2, 2, 3, 3]))]):
        features: dict[str, dict[str, Any]] = {}
        for feature in FEATURES:
            kind = draw(
                st.sampled_from(["quota"] * 4 + ["overage"] * 2 + ["capped"] * 2 + ["on/off", "absent"])
            )
            if kind in {"on/off", "absent"}:
                if kind == "on/off":
                    features[feature] = {}
                continue
            quota = draw(st.integers(0, 20))
            features[feature] = {"quota": quota}
            if kind != "quota":
                features[feature].update(over_quota="overage", event_name=f"{feature}_overage")
            if kind == "capped":
                features[feature]["hard_cap"] = quota + draw(st.integers(1, 20))
        tier: dict[str, Any] = {"name": name, "features": features}
        if rank:
            tier["price_lookup_keys"] = [f"{name.lower()}_monthly"]
        tiers.append(tier)
    return parse_catalog({"tiers": tiers})


@st.composite
def moments(draw: st.DrawFn) -> int:
    """Now: often right at a month's edge, where the calendar-month period turns."""
    start = draw(st.sampled_from(MONTHS))
    return start + draw(st.one_of(st.sampled_from([0, 1, 3600, 29 * DAY]), st.integers(0, 30 * DAY)))


def _attribute(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [{"S": element} for element in value]}
    return {"N": str(value)}


@st.composite
def worlds(draw: st.DrawFn) -> tuple[QuotaPolicy, dict[str, Any], str, int, int]:
    """A catalog, an account's item as DynamoDB holds it (absurd values included: hand edits,
    restores), a use of a feature and the moment of it.

    Usage is drawn mostly at the edges the rule has for this account (its period's start, its
    quota less the use), found with the policy: that only aims the draws, the comparison is
    between the policy's two formulations.
    """
    now = draw(moments())
    policy = QuotaPolicy(draw(catalogs()))
    quantity = draw(st.one_of(st.sampled_from([1, 1, 2, 5]), st.integers(1, 25), st.just(MAX_QUANTITY)))
    feature = draw(st.sampled_from(["exports"] * 6 + [*FEATURES[1:], "teleport"]))
    month = month_period(now).start
    fields: dict[str, Any] = {
        "merged_into": draw(st.sampled_from([None] * 9 + ["acct_other"])),
        "tier": draw(st.sampled_from([*NAMES[1:], None, "FREE", "GONE", ""])),
        "tier_override": draw(st.sampled_from([None] * 7 + [*NAMES[1:], "FREE", "GONE", ""])),
        "current_period_start": draw(
            st.sampled_from([None, 0, month - 3 * DAY, month + 5 * DAY, now - DAY, now])
        ),
        "current_period_end": draw(st.sampled_from([None, 0, -DAY, now + DAY, now + 30 * DAY])),
        "entitlement_lookup_keys": draw(
            st.none() | st.lists(st.sampled_from([*FEATURES, "teleport"]), min_size=1, unique=True)
        ),
    }
    item: dict[str, Any] = {"pk": {"S": "acct_1"}}
    item.update((name, _attribute(value)) for name, value in fields.items() if value is not None)
    account = AccountUsage.from_raw("acct_1", item).account
    tier = policy.effective_tier(account)
    # First the edges: hypothesis draws the first elements of a list more often than the last.
    starts = dict.fromkeys(
        [policy.period(tier, account, now).start, month, fields["current_period_start"] or month]
    )
    since = [*(start + delta for start in starts for delta in (0, -1, 1)), None, now, now - 40 * DAY]
    if (usage_since := draw(st.sampled_from(since) | st.integers(month - 60 * DAY, now))) is not None:
        item["usage_since"] = _attribute(usage_since)
    bounds = {
        bound
        for t in policy.catalog.tiers
        if (s := t.features.get(feature))
        for bound in (s.quota, s.ceiling)
        if bound is not None
    }
    edges = [bound - quantity + delta for bound in bounds for delta in (-1, 0, 1)] or [0]
    for name in FEATURES:
        counter = draw(st.none() | st.sampled_from(edges) | st.integers(-30, 30))
        if counter is not None:
            item[usage_counter(name).attr_name] = _attribute(counter)
        if (grant := draw(st.none() | st.integers(0, 30))) is not None:
            item[usage_grant(name).attr_name] = _attribute(grant)
        if announced := draw(st.sets(st.sampled_from([80, 95, 100]))):
            item[usage_announcements(name).attr_name] = {"NS": [str(t) for t in sorted(announced)]}
    return policy, item, feature, quantity, now


def everything(decision: Any) -> dict[str, Any]:
    """All of a decision's fields, the ones equality leaves out included."""
    return dataclasses.asdict(decision)


# ----------------------------------------------------------------------- the properties


@settings(max_examples=800, deadline=None)
@given(worlds())
def test_the_condition_accepts_exactly_what_the_rule_counts(world) -> None:
    policy, item, feature, quantity, now = world
    usage = AccountUsage.from_raw("acct_1", item)
    decision = policy.decide(usage, feature, quantity, now)
    if not policy.metered(feature):
        assert decision.outcome in {Outcome.NOT_IN_PLAN, Outcome.UNMETERED}
        return
    accepted = holds(policy.count_condition(feature, quantity, now), item)
    assert accepted == (decision.outcome is Outcome.COUNT), (decision, item)


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_the_answer_from_the_written_item_is_the_answer_decided_before_the_write(world) -> None:
    """A plain use answers from the item its write returns; a keyed one from the item it read."""
    policy, item, feature, quantity, now = world
    usage = AccountUsage.from_raw("acct_1", item)
    decision = policy.decide(usage, feature, quantity, now)
    if decision.outcome is Outcome.COUNT:
        actions = policy.count_actions(feature, quantity, now)
    elif decision.outcome is Outcome.START_PERIOD:
        assert holds(policy.period_as_read(usage.account), item)
        actions = policy.start_period_actions(usage, feature, quantity, now)
    else:
        assert not decision.counted
        return
    assert decision.counted and decision.allowed
    written = AccountUsage.from_raw("acct_1", applied(actions, item))
    answer = policy.after_write(written, feature, quantity, now, decision.outcome)
    assert everything(answer) == everything(decision)
    # The counters written count for the period answered for, so the next check adds to them. One
    # exception, bounded: a never-used account's first use is counted since now (the plain path's
    # one write cannot know the period), and when Stripe's clock began a paid period ahead of ours
    # (by up to billing.stripe_events.CREATED_MAX_AHEAD_SECONDS), the next use starts that period,
    # once: from its start, which then stays current.
    ahead = decision.counted_since == now and policy.period_of(usage.account, now).start > now
    assert policy.new_period(written.account, now) is None or ahead


@settings(max_examples=150, deadline=None)
@given(
    worlds(),
    st.sampled_from(
        [
            "merged_into",
            "tier",
            "tier_override",
            "current_period_start",
            "current_period_end",
            "usage_since",
            "counter",
            "grant",
        ]
    ),
)
def test_a_decision_made_from_a_read_is_written_only_on_the_item_as_read(world, changed) -> None:
    policy, item, feature, _, _ = world
    usage = AccountUsage.from_raw("acct_1", item)
    unchanged = policy.as_read(usage, feature)
    assert holds(unchanged, item)
    name = {"counter": usage_counter(feature).attr_name, "grant": usage_grant(feature).attr_name}.get(
        changed, changed
    )
    other = dict(item)
    if name in {"merged_into", "tier", "tier_override"}:
        other[name] = {"S": "CHANGED"}
    else:
        other[name] = {"N": str(int(item.get(name, {"N": "7"})["N"]) + 1)}
    assert not holds(unchanged, other)


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_the_scheduled_reset_starts_a_past_period_once(world) -> None:
    """The sweep's write (billwatch.licensing.quota_reset) under the policy's own conditions."""
    policy, item, _, _, now = world
    usage = AccountUsage.from_raw("acct_1", item)
    period = policy.new_period(usage.account, now)
    if period is None:
        return
    guard = policy.period_as_read(usage.account)
    assert holds(guard, item)
    reset = applied(policy.restart_actions(usage, now), item)
    assert int(reset["usage_since"]["N"]) == period.start
    assert policy.new_period(AccountUsage.from_raw("acct_1", reset).account, now) is None
    assert not holds(guard, reset)  # a second run of the same reset writes nothing


@settings(max_examples=100, deadline=None)
@given(worlds(), st.integers(1, 25))
def test_a_replay_is_the_first_answer_and_only_for_the_same_use(world, other_quantity) -> None:
    policy, item, feature, quantity, now = world
    first = policy.decide(AccountUsage.from_raw("acct_1", item), feature, quantity, now)
    stored = json.dumps(first.as_dict())
    replayed = policy.replay(feature, quantity, stored, feature, quantity)
    assert replayed == first and replayed.outcome is Outcome.REPLAY and replayed.counted == first.counted
    if other_quantity != quantity:
        with pytest.raises(UsageRequestError, match="idempotency_key"):
            policy.replay(feature, quantity, stored, feature, other_quantity)


# ----------------------------------------------------------------------- the decisions, by example

SHIPPED = parse_catalog(
    {
        "tiers": [
            {"name": "FREE", "features": {"exports": {"quota": 10}}},
            {
                "name": "PRO",
                "price_lookup_keys": ["pro_monthly"],
                "features": {"exports": {"quota": 1000}, "sso": {}},
            },
        ]
    }
)
NOV_15 = int(dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC).timestamp())
NOV_1 = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp())


def number(value: int) -> dict[str, str]:
    return {"N": str(value)}


PAID = {"tier": {"S": "PRO"}, "current_period_start": number(NOV_15 - DAY), "used_exports": number(999)}
# What a use (feature, quantity) of an account (its item) gets on NOV_15: the outcome, the reason,
# used and limit. tests/integration/test_quota_policy_moto.py sends each one to moto too.
CASES: dict[str, tuple[dict[str, Any], str, int, tuple]] = {
    "a new account uses its whole quota": ({}, "exports", 10, (Outcome.COUNT, None, 10, 10)),
    "more than the quota at once": ({}, "exports", 11, (Outcome.OVER_QUOTA, "quota_exceeded", 0, 10)),
    "over the quota": (
        {"usage_since": number(NOV_1), "used_exports": number(9)},
        "exports",
        2,
        (Outcome.OVER_QUOTA, "quota_exceeded", 9, 10),
    ),
    "within a grant (the counter is net of it; used and limit include it)": (
        {"usage_since": number(NOV_1), "used_exports": number(4), "granted_exports": number(5)},
        "exports",
        6,
        (Outcome.COUNT, None, 15, 15),
    ),
    "the first use of a new month": (
        {"usage_since": number(NOV_1 - 1), "used_exports": number(10)},
        "exports",
        3,
        (Outcome.START_PERIOD, None, 3, 10),
    ),
    "more than the quota in a new month": (
        {"usage_since": number(NOV_1 - 1), "used_exports": number(10)},
        "exports",
        11,
        (Outcome.OVER_QUOTA, "quota_exceeded", 0, 10),
    ),
    "not in the plan": ({}, "sso", 1, (Outcome.NOT_IN_PLAN, "feature_not_in_plan", None, None)),
    "on/off, in the plan": ({"tier": {"S": "PRO"}}, "sso", 1, (Outcome.UNMETERED, None, None, None)),
    "on/off, by a Stripe entitlement": (
        {"entitlement_lookup_keys": {"L": [{"S": "sso"}]}},
        "sso",
        1,
        (Outcome.UNMETERED, None, None, None),
    ),
    "a tier the catalog lost is the default": (
        {"tier": {"S": "GONE"}},
        "exports",
        10,
        (Outcome.COUNT, None, 10, 10),
    ),
    "an override wins": (
        {"tier": {"S": "FREE"}, "tier_override": {"S": "PRO"}},
        "exports",
        11,
        (Outcome.COUNT, None, 11, 1000),
    ),
    "an override the catalog lacks is the default, whatever the stored tier": (
        {"tier": {"S": "PRO"}, "tier_override": {"S": "GONE"}},
        "exports",
        11,
        (Outcome.OVER_QUOTA, "quota_exceeded", 0, 10),
    ),
    "a redirect has no plan": (
        {"merged_into": {"S": "acct_2"}},
        "exports",
        1,
        (Outcome.NOT_IN_PLAN, "feature_not_in_plan", None, None),
    ),
    "a paid period's start turns the period": (
        {**PAID, "current_period_end": number(NOV_15 + 29 * DAY), "usage_since": number(NOV_15 - 2 * DAY)},
        "exports",
        1,
        (Outcome.START_PERIOD, None, 1, 1000),
    ),
    "a paid period ending at 0 is none: the month's start turns it": (
        {**PAID, "current_period_end": number(0), "usage_since": number(NOV_15 - 2 * DAY)},
        "exports",
        1,
        (Outcome.COUNT, None, 1000, 1000),
    ),
    "a paid period without an end is none either": (
        {**PAID, "usage_since": number(NOV_1 - 1)},
        "exports",
        1,
        (Outcome.START_PERIOD, None, 1, 1000),
    ),
}


@pytest.mark.parametrize(("item", "feature", "quantity", "expected"), CASES.values(), ids=CASES.keys())
def test_decisions(item, feature, quantity, expected) -> None:
    item = {"pk": {"S": "acct_1"}, **item}
    policy = QuotaPolicy(SHIPPED)
    decision = policy.decide(AccountUsage.from_raw("acct_1", item), feature, quantity, NOV_15)
    assert (decision.outcome, decision.reason, decision.used, decision.limit) == expected
    if policy.metered(feature):
        assert holds(policy.count_condition(feature, quantity, NOV_15), item) == (
            expected[0] is Outcome.COUNT
        )


OVERAGE = parse_catalog(
    {
        "tiers": [
            {
                "name": "FREE",
                "features": {
                    "exports": {"quota": 10, "over_quota": "overage", "event_name": "x", "hard_cap": 15},
                    "api_calls": {"quota": 0, "over_quota": "overage", "event_name": "y"},
                },
            }
        ]
    }
)
# What a use gets on NOV_15 where the overage is billed: the outcome, used, limit and overage.
OVERAGE_CASES: dict[str, tuple[dict[str, Any], str, int, tuple]] = {
    "past the quota": (
        {"usage_since": number(NOV_1), "used_exports": number(9)},
        "exports",
        3,
        (Outcome.COUNT, 12, 10, 2),
    ),
    "up to the hard cap": ({"usage_since": number(NOV_1)}, "exports", 15, (Outcome.COUNT, 15, 10, 5)),
    "past the hard cap": ({}, "exports", 16, (Outcome.OVER_QUOTA, 0, 10, None)),
    "a grant lifts the cap": (
        {"usage_since": number(NOV_1), "used_exports": number(10), "granted_exports": number(5)},
        "exports",
        5,
        (Outcome.COUNT, 20, 15, 5),
    ),
    "a new month started past the quota": (
        {"usage_since": number(NOV_1 - 1), "used_exports": number(15)},
        "exports",
        12,
        (Outcome.START_PERIOD, 12, 10, 2),
    ),
    "a new month started past the hard cap": (
        {"usage_since": number(NOV_1 - 1), "used_exports": number(15)},
        "exports",
        16,
        (Outcome.OVER_QUOTA, 0, 10, None),
    ),
    "no cap, a quota of 0: all of it is overage": (
        {},
        "api_calls",
        MAX_QUANTITY,
        (Outcome.COUNT, MAX_QUANTITY, 0, MAX_QUANTITY),
    ),
}


@pytest.mark.parametrize(
    ("item", "feature", "quantity", "expected"), OVERAGE_CASES.values(), ids=OVERAGE_CASES.keys()
)
def test_overage_decisions(item, feature, quantity, expected) -> None:
    item = {"pk": {"S": "acct_1"}, **item}
    policy = QuotaPolicy(OVERAGE)
    decision = policy.decide(AccountUsage.from_raw("acct_1", item), feature, quantity, NOV_15)
    assert (decision.outcome, decision.used, decision.limit, decision.overage) == expected
    assert holds(policy.count_condition(feature, quantity, NOV_15), item) == (expected[0] is Outcome.COUNT)


def test_the_policy_imports_no_aws_client_and_no_moto() -> None:
    """Pure: importing it loads neither boto3 nor moto (pynamodb's condition objects need neither)."""
    probe = (
        "import sys; import billwatch.licensing.quota_policy; "
        "print(sorted(m for m in ('boto3', 'moto') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "layers" / "shared")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
