"""What the local emulator's status page shows, as JSON: its recent past, the alarms and the accounts.

``GET /_local/api/status``   the clock, the recent requests (webhooks with their outcome), the
                             schedules (next and last run), the alarms with their states, the alarm
                             changes and the alerts sent (to which receiver)
``GET /_local/api/accounts`` every account: tier, subscription, MRR (``mrr`` in minor units, and
                             ``mrr_text`` as the billing report writes it) and usage against each quota
``GET /_local/api/dashboards`` the template's dashboards, each widget's series over the last hours

Times are ISO 8601 UTC on the local clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.emulator import LocalEmulator

USAGE_PREFIX = "used_"


def money(minor_units: int, currency: str) -> str:
    """An amount as the billing report writes MRR: the currency's code, then major units ("USD 20.00")."""
    from billwatch.billing.revenue import major_units
    from billwatch.reporting.renderers import format_money

    return f"{currency.upper()} {format_money(float(major_units(minor_units, currency)))}"


def _severity(description: str) -> str | None:
    from billwatch.alerting.alarm_text import parse_alarm_description

    try:
        return parse_alarm_description(description).severity.value
    except ValueError:
        return None


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(emulator: LocalEmulator) -> dict[str, Any]:
    assert emulator.alarms is not None and emulator.scheduler is not None  # nosec B101 # narrows the Optionals for type checkers; not a runtime check
    last_runs = {}
    for fired in emulator.fired:
        last_runs[(fired.schedule.function, fired.schedule.name)] = fired
    schedules = []
    for schedule in emulator.schedules:
        last = last_runs.get((schedule.function, schedule.name))
        due = emulator.scheduler.due_at(schedule)
        schedules.append(
            {
                "function": schedule.function,
                "name": schedule.name,
                "expression": schedule.expression,
                "zone": schedule.zone,
                "next": iso(due) if due is not None else None,
                "last": None
                if last is None
                else {"at": iso(last.at), "succeeded": last.succeeded, "error": last.error},
            }
        )
    states = emulator.alarms.states
    alarms = [
        {
            "id": logical_id,
            "name": definition.name,
            "severity": _severity(definition.description),
            "state": states[logical_id],
            "composite": definition.composite,
        }
        for logical_id, definition in sorted(emulator.alarms.definitions.items())
    ]
    return {
        "clock": {"now": iso(emulator.clock.now()), "speed": emulator.clock.speed},
        "requests": [{**request, "at": iso(request["at"])} for request in reversed(emulator.requests)],
        "schedules": schedules,
        "alarms": alarms,
        "alarm_changes": [
            {
                "alarm": event.alarm,
                "from": event.old_state,
                "to": event.new_state,
                "at": iso(event.at),
                "reason": event.reason,
                "topics": list(event.topics),
            }
            for event in reversed(emulator.alarm_events)
        ],
        "alerts": [
            {
                "at": iso(sent["at"]),
                "receiver": sent["receiver"],
                "kind": sent["kind"],
                "name": (sent["alert"] or {}).get("name"),
                "severity": (sent["alert"] or {}).get("severity"),
                "summary": (sent["alert"] or {}).get("summary"),
            }
            for sent in reversed(emulator.alerts_sent)
        ],
    }


def _plain(value: Mapping[str, Any]) -> Any:
    """One attribute of DynamoDB's wire format as a Python value."""
    (kind, raw), *_ = value.items()
    if kind == "N":
        number = float(raw)
        return int(number) if number.is_integer() else number
    if kind == "BOOL":
        return bool(raw)
    if kind == "L":
        return [_plain(item) for item in raw]
    return raw


def accounts(emulator: LocalEmulator) -> list[dict[str, Any]]:
    from billwatch.licensing.plans import load_catalog_text, shipped_catalog_text

    catalog = load_catalog_text(shipped_catalog_text(), "plans.json")
    dynamodb = emulator.client("dynamodb")
    found = []
    pages = dynamodb.get_paginator("scan").paginate(TableName=emulator.table_names["BillingStateTable"])
    for page in pages:
        for raw in page["Items"]:
            item = {name: _plain(value) for name, value in raw.items()}
            if item.get("merged_into") or "#" in str(item.get("pk", "")):
                continue  # a customer's redirect to its account, or a bookkeeping item
            tier_name = item.get("tier_override") or item.get("tier") or catalog.default_tier.name
            try:
                tier = catalog.tier(tier_name)
            except KeyError:
                tier = catalog.default_tier
            usage = [
                {
                    "feature": feature.name,
                    "used": item.get(f"{USAGE_PREFIX}{feature.name}", 0),
                    "quota": feature.quota,
                    "period": feature.period,
                }
                for feature in tier.features.values()
                if feature.quota is not None
            ]
            found.append(
                {
                    "account": item["pk"],
                    "tier": tier.name,
                    "override": item.get("tier_override"),
                    "subscription_status": item.get("subscription_status"),
                    "customer": item.get("stripe_customer_id"),
                    "mrr": item.get("mrr"),
                    "currency": item.get("mrr_currency"),
                    "mrr_text": money(item["mrr"], item["mrr_currency"])
                    if isinstance(item.get("mrr"), int) and item.get("mrr_currency")
                    else None,
                    "usage": usage,
                }
            )
    return sorted(found, key=lambda account: account["account"])
