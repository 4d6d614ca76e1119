"""Issue 9 beyond the functions' own policies (tests/contract/test_template.py covers those): the
resource-based policies in template.yaml - queue, topic and key policies, any IAM role or policy
written in the template, and Lambda invoke permissions - grant no "*" action or resource except
the listed ones, and let no one but a named principal of this account in. The roles SAM generates
for the functions carry only the functions' policies, which test_template.py checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from devtools.template import FUNCTION_TYPE, REPO_ROOT, load_template, resources_of_type
from tests.contract.test_template import _as_list, _strings  # the same walk over policy values

# (logical id, Sid) -> the wildcard texts that statement may hold, with why nothing narrower works.
LISTED_WILDCARDS: dict[tuple[str, str], set[str]] = {
    # AWS's default key policy statement: the account administers its key through IAM. A narrower
    # list of actions risks a key that no one can manage any more; "*" in a key policy is the key.
    ("AlarmTopicKey", "AccountAdministers"): {"kms:*", "*"},
    # What CloudWatch needs to publish to an encrypted topic, as AWS documents it; the
    # GenerateDataKey* family has no narrower name, and "*" in a key policy is this key.
    ("AlarmTopicKey", "CloudWatchPublishesAlarms"): {"kms:GenerateDataKey*", "*"},
}
# Lambda permissions whose SourceArn names a pattern: this stage's alarms, named billwatch-<stage>-<Alarm>.
LISTED_SOURCE_PATTERNS = {
    "AlertDispatchAlarmInvokePermission": "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}"
    ":alarm:billwatch-${Stage}-*",
}
# Where policies hide in a resource's properties.
POLICY_DOCUMENT_KEYS = ("PolicyDocument", "KeyPolicy", "AssumeRolePolicyDocument")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO_ROOT / "template.yaml")


def _resource_policy_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(logical id, statement) for every policy document outside the functions' Policies."""
    found = []
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == FUNCTION_TYPE:
            continue
        properties = resource.get("Properties") or {}
        documents = [properties[key] for key in POLICY_DOCUMENT_KEYS if key in properties]
        documents += [policy["PolicyDocument"] for policy in properties.get("Policies") or []]
        for document in documents:
            found += [(logical_id, statement) for statement in _as_list(document["Statement"])]
    return found


def test_the_template_has_resource_policies_to_check(template: dict[str, Any]) -> None:
    holders = {logical_id for logical_id, _ in _resource_policy_statements(template)}
    assert {"WebhookDLQPolicy", "AlarmTopicKey", "AlarmTopicsPolicy"} <= holders


def test_resource_policies_grant_no_unlisted_wildcards(template: dict[str, Any]) -> None:
    for logical_id, statement in _resource_policy_statements(template):
        where = (logical_id, statement.get("Sid", ""))
        assert statement["Effect"] == "Allow", where
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), where
        allowed = LISTED_WILDCARDS.get(where, set())
        for text in _strings(statement.get("Action")) + _strings(statement.get("Resource", [])):
            assert "*" not in text or text in allowed, (where, text)


def test_every_listed_wildcard_is_still_used(template: dict[str, Any]) -> None:
    used = {
        (logical_id, statement.get("Sid", "")): set(_strings(statement.get("Action")))
        | set(_strings(statement.get("Resource", [])))
        for logical_id, statement in _resource_policy_statements(template)
    }
    for where, wildcards in LISTED_WILDCARDS.items():
        assert wildcards <= used.get(where, set()), f"{where} no longer needs {wildcards}: drop the entry"


def test_resource_policies_admit_only_named_principals_of_this_account(template: dict[str, Any]) -> None:
    for logical_id, statement in _resource_policy_statements(template):
        principal = statement.get("Principal")
        assert principal not in ("*", {"AWS": "*"}), (logical_id, principal)
        if isinstance(principal, dict) and "Service" in principal:
            # A service principal acts for every account: the condition keeps it to ours (confused deputy).
            condition_keys = {key for test in statement.get("Condition", {}).values() for key in test}
            assert condition_keys & {"aws:SourceArn", "aws:SourceAccount"}, (logical_id, statement)


def test_lambda_permissions_name_their_caller(template: dict[str, Any]) -> None:
    permissions = resources_of_type(template, "AWS::Lambda::Permission")
    assert permissions
    for logical_id, permission in permissions.items():
        properties = permission["Properties"]
        assert properties["Action"] == "lambda:InvokeFunction", logical_id
        assert "*" not in properties["Principal"], logical_id
        assert "SourceArn" in properties, logical_id
        for text in _strings(properties["SourceArn"]):
            assert "*" not in text or text == LISTED_SOURCE_PATTERNS.get(logical_id), (logical_id, text)
