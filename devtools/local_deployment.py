"""The local stack's deployment: what CloudFormation would tell EventBridge once the stack is created.

`make run` and `make demo` start a stack as a deployment creates one, so they play the event
that the template's rules on "CloudFormation Stack Status Change" receive then (a CREATE_COMPLETE
of this stack) to each rule's function targets, once, at the start. The dashboards then show the
deployment marker (``Deployed``) as they would after a real deployment.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from devtools.template import PSEUDO_PARAMETERS, resolved_properties

RULE_TYPE = "AWS::Events::Rule"
DETAIL_TYPE = "CloudFormation Stack Status Change"
CREATED = "CREATE_COMPLETE"


def deployment_deliveries(template: Mapping[str, Any], now: float) -> list[tuple[str, dict[str, Any]]]:
    """(function logical id, event) for each function a rule sends this stack's CREATE_COMPLETE to."""
    deliveries = []
    for rule in resolved_properties(template, RULE_TYPE).values():
        pattern = rule.get("EventPattern") or {}
        if DETAIL_TYPE not in pattern.get("detail-type", []):
            continue
        event = stack_status_change(CREATED, now)
        if not event_matches(pattern, event):
            continue  # a rule on other statuses or another stack: a real deployment would not reach it
        for target in rule.get("Targets") or []:
            deliveries.append((str(target["Arn"]).removesuffix(".Arn"), event))
    return deliveries


def stack_status_change(
    status: str, now: float, stack_id: str = PSEUDO_PARAMETERS["AWS::StackId"]
) -> dict[str, Any]:
    """The event CloudFormation sends EventBridge when the stack ``stack_id`` reaches ``status``."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": "aws.cloudformation",
        "account": PSEUDO_PARAMETERS["AWS::AccountId"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": PSEUDO_PARAMETERS["AWS::Region"],
        "resources": [stack_id],
        "detail": {"stack-id": stack_id, "status-details": {"status": status, "status-reason": ""}},
    }


def event_matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge's matching of exact values: each pattern field lists the values it accepts, and
    nested objects match field by field."""
    for name, wanted in pattern.items():
        value = event.get(name)
        if isinstance(wanted, Mapping):
            if not isinstance(value, Mapping) or not event_matches(wanted, value):
                return False
        elif value not in wanted:
            return False
    return True
