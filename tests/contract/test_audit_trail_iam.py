"""The audit trail is append-only in IAM as well as in code: no function can rewrite or remove a
record, only the functions that do admin actions can add one, only the licensing API reads them,
and the table's resource policy denies every principal the ways to change an item."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.template import (
    FUNCTION_TYPE,
    TABLE_TYPE,
    function_environment,
    load_template,
    resources_of_type,
)
from tests.support import ROOT

AUDIT_TABLE = "AuditTable"
# The functions that do admin actions: the licensing API, the alert dispatcher, reconciliation on demand.
WRITERS = {"LicensingApiFunction", "AlertDispatchFunction", "ReconcileFunction"}
READERS = {"LicensingApiFunction"}  # GET /admin/audit
# Every action that changes or removes an existing item, one at a time or in bulk.
REWRITES = {
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def _branches(node: Any) -> list[Any]:
    """A policy statement with each Fn::If expanded to both branches, AWS::NoValue dropped."""
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        _condition, when_true, when_false = node["Fn::If"]
        return _branches(when_true) + _branches(when_false)
    return [] if node == {"Ref": "AWS::NoValue"} else [node]


def _names_audit_table(node: Any) -> bool:
    """Whether a Resource (a string, an intrinsic, a list of them) can name the audit table."""
    if isinstance(node, str):
        return node == "*" or AUDIT_TABLE in node
    if isinstance(node, list):
        return any(_names_audit_table(item) for item in node)
    if isinstance(node, dict):
        return any(_names_audit_table(value) for value in node.values())
    return False


def audit_table_actions(template: dict[str, Any]) -> dict[str, set[str]]:
    """Function -> every action its policies allow on the audit table (or on any resource)."""
    granted: dict[str, set[str]] = {}
    for logical_id, function in resources_of_type(template, FUNCTION_TYPE).items():
        actions: set[str] = set()
        for policy in function["Properties"].get("Policies", []):
            assert isinstance(policy, dict) and "Statement" in policy, (logical_id, policy)
            for entry in policy["Statement"]:
                for statement in _branches(entry):
                    if statement.get("Effect") == "Allow" and _names_audit_table(statement["Resource"]):
                        action = statement["Action"]
                        actions |= set(action if isinstance(action, list) else [action])
        granted[logical_id] = actions
    return granted


def test_no_function_can_rewrite_or_remove_a_record(template: dict[str, Any]) -> None:
    for logical_id, actions in audit_table_actions(template).items():
        assert not actions & REWRITES, (logical_id, actions & REWRITES)
        assert not any(action.endswith("*") for action in actions), (logical_id, actions)


def test_only_the_functions_that_do_admin_actions_can_add_a_record(template: dict[str, Any]) -> None:
    granted = audit_table_actions(template)
    assert {name for name, actions in granted.items() if "dynamodb:PutItem" in actions} == WRITERS
    assert {name for name, actions in granted.items() if "dynamodb:Query" in actions} == READERS
    for writer in WRITERS:
        assert granted[writer] <= {"dynamodb:PutItem", "dynamodb:Query"}, (writer, granted[writer])


def test_the_table_denies_everyone_every_way_to_change_a_record(template: dict[str, Any]) -> None:
    table = resources_of_type(template, TABLE_TYPE)[AUDIT_TABLE]
    statements = table["Properties"]["ResourcePolicy"]["PolicyDocument"]["Statement"]
    denied = {
        action
        for statement in statements
        if statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Resource"] == "*"
        for action in statement["Action"]
    }
    assert denied >= REWRITES


def test_records_are_kept_long_and_survive_the_stack(template: dict[str, Any]) -> None:
    table = resources_of_type(template, TABLE_TYPE)[AUDIT_TABLE]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    retention = template["Parameters"]["AuditRetentionDays"]
    assert retention["Default"] >= 365 and retention["MinValue"] >= 90


@pytest.mark.parametrize("function", sorted(WRITERS))
def test_the_writers_are_told_the_table_and_its_retention(template: dict[str, Any], function: str) -> None:
    env = function_environment(template, function, resource_refs={AUDIT_TABLE: "the-audit-table"})
    assert env["AUDIT_TABLE_NAME"] == "the-audit-table"
    assert env["AUDIT_RETENTION_DAYS"] == str(template["Parameters"]["AuditRetentionDays"]["Default"])
