"""Contract tests for template.yaml: what the deployment promises, checked without AWS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devtools.template import (
    FUNCTION_TYPE,
    LAYER_TYPE,
    REPO_ROOT,
    TABLE_TYPE,
    create_tables,
    deployed_resources,
    dynamodb_tables,
    function_environment,
    function_properties,
    http_routes,
    load_template,
    parameter_values,
    resolve,
    resources_of_type,
    ttl_attribute,
)

TEMPLATE_PATH = REPO_ROOT / "template.yaml"
STRIPE_RETRY_WINDOW_SECONDS = 3 * 24 * 3600

# The only resources named by a pattern: the sweep reads the states of this stage's alarms, whose
# names are made in the template (billwatch-<stage>-<Alarm>).
NARROW_WILDCARDS = {
    ("cloudwatch:DescribeAlarms",): {
        "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:billwatch-${Stage}-*"
    },
    # GetMetricData and ListMetrics support no resource-level permissions; DescribeAlarmHistory
    # and DescribeAlarms return composite alarms only to a grant on "*" (the billing report's
    # incidents include the composites).
    (
        "cloudwatch:GetMetricData",
        "cloudwatch:ListMetrics",
        "cloudwatch:DescribeAlarmHistory",
        "cloudwatch:DescribeAlarms",
    ): {"*"},
}

# A literal Stripe credential: webhook signing secret, secret key or restricted key.
SECRET_VALUE = re.compile(r"(?:whsec_|[sr]k_(?:live|test)_)[A-Za-z0-9]{8,}")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = resources_of_type(template, FUNCTION_TYPE)
    assert "WebhookIntakeFunction" in found
    return found


def _without_novalue(node: Any) -> list[Any]:
    """Expand Fn::If branches of a policy statement list entry; drop AWS::NoValue."""
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        _condition, when_true, when_false = node["Fn::If"]
        return _without_novalue(when_true) + _without_novalue(when_false)
    if node == {"Ref": "AWS::NoValue"}:
        return []
    return [node]


def _statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in function["Properties"].get("Policies", []):
        assert isinstance(policy, dict) and "Statement" in policy, (
            f"only inline policy documents are allowed, got {policy!r}"
        )
        for entry in policy["Statement"]:
            statements.extend(_without_novalue(entry))
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _strings(node: Any) -> list[str]:
    """Every string inside a (possibly intrinsic) value, e.g. the text of a Fn::Sub."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


# --------------------------------------------------------------------------- lint


def test_no_blanket_cfn_lint_ignores(template: dict[str, Any]) -> None:
    assert "cfn-lint" not in (template.get("Metadata") or {})
    assert not (REPO_ROOT / ".cfnlintrc").exists()
    assert not (REPO_ROOT / ".cfnlintrc.yaml").exists()


# ---------------------------------------------------------------------------- IAM


def test_function_policies_have_no_wildcards(functions: dict[str, dict[str, Any]]) -> None:
    for logical_id, function in functions.items():
        statements = _statements(function)
        assert statements, f"{logical_id} has no inline policy statements"
        for statement in statements:
            assert statement.get("Effect") == "Allow", statement
            assert "NotAction" not in statement and "NotResource" not in statement, statement
            for action in _as_list(statement["Action"]):
                assert isinstance(action, str) and "*" not in action, (logical_id, action)
            for text in _strings(statement["Resource"]):
                if text in NARROW_WILDCARDS.get(tuple(_as_list(statement["Action"])), ()):
                    continue
                assert "*" not in text, (logical_id, statement["Resource"])


def test_webhook_intake_gets_exactly_the_permissions_it_needs(functions: dict[str, dict[str, Any]]) -> None:
    granted: dict[str, set[str]] = {}
    for statement in _statements(functions["WebhookIntakeFunction"]):
        key = repr(statement["Resource"])
        granted.setdefault(key, set()).update(_as_list(statement["Action"]))

    secret_ref = repr(
        {"Fn::If": ["CreateWebhookSecret", {"Ref": "WebhookSecret"}, {"Ref": "ExistingWebhookSecretArn"}]}
    )
    assert granted == {
        repr({"Fn::GetAtt": ["IdempotencyTable", "Arn"]}): {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        },
        repr({"Fn::GetAtt": ["BillingStateTable", "Arn"]}): {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:ConditionCheckItem",
        },
        # The side-effects sweep: its work list, and the usage announcements it redelivers.
        repr({"Fn::Sub": "${BillingStateTable.Arn}/index/PendingSideEffects"}): {"dynamodb:Query"},
        repr({"Ref": "UsageEventsTopic"}): {"sns:Publish"},
        secret_ref: {"secretsmanager:GetSecretValue"},
        repr({"Ref": "StripeApiKeySecretArn"}): {"secretsmanager:GetSecretValue"},
        repr(
            {
                "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
                ":parameter${PlanCatalogParameterName}"
            }
        ): {"ssm:GetParameter"},
        repr({"Fn::GetAtt": ["WebhookDLQ", "Arn"]}): {"sqs:SendMessage"},
        repr({"Ref": "BillingEventsTopic"}): {"sns:Publish"},
    }


def test_optional_grants_only_exist_when_their_parameter_is_set(
    functions: dict[str, dict[str, Any]],
) -> None:
    conditional = {}
    for policy in functions["WebhookIntakeFunction"]["Properties"]["Policies"]:
        for entry in policy["Statement"]:
            if isinstance(entry, dict) and set(entry) == {"Fn::If"}:
                condition, when_true, when_false = entry["Fn::If"]
                assert when_false == {"Ref": "AWS::NoValue"}
                conditional[condition] = when_true["Action"]
    assert conditional == {
        "HasStripeApiKeySecret": "secretsmanager:GetSecretValue",
        "HasPlanCatalogParameter": "ssm:GetParameter",
    }


# ------------------------------------------------------------------------ secrets


def test_secret_detector_is_not_vacuous() -> None:
    assert SECRET_VALUE.search("value: whsec_" + "a1B2c3D4e5F6g7H8")
    assert SECRET_VALUE.search("sk_" + "live_" + "51Habcdefghijkl")
    assert not SECRET_VALUE.search("one or more whsec_ secrets, comma-separated (whsec_...)")


@pytest.mark.parametrize("name", ["template.yaml", "samconfig.toml"])
def test_no_literal_aws_parameters_in_deployment_config(name: str) -> None:
    text = (REPO_ROOT / name).read_text(encoding="utf-8")
    assert SECRET_VALUE.findall(text) == []


def test_webhook_secret_is_created_without_a_value(template: dict[str, Any]) -> None:
    secret = template["Resources"]["WebhookSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Condition"] == "CreateWebhookSecret"
    assert "SecretString" not in secret.get("Properties", {})
    assert "GenerateSecretString" not in secret.get("Properties", {})


def conditions_held(template: dict[str, Any], parameters: dict[str, str] | None = None) -> dict[str, bool]:
    """Each condition of the template as CloudFormation decides it for these parameters."""
    values = parameter_values(template, parameters)
    held: dict[str, bool] = {}
    for name, rule in template["Conditions"].items():
        held[name] = bool(resolve(rule, values, conditions=held))
    return held


OPTIONAL_PARAMETERS = {
    "ExistingWebhookSecretArn": (
        "CreateWebhookSecret",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:stripe-webhook-AbCdEf",
    ),
    "StripeApiKeySecretArn": (
        "HasStripeApiKeySecret",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:stripe-api-key-AbCdEf",
    ),
    "PlanCatalogParameterName": ("HasPlanCatalogParameter", "/billwatch/plan-catalog"),
}


def test_a_stack_deployed_without_parameters_makes_its_secret_and_grants_nothing_optional(
    template: dict[str, Any],
) -> None:
    by_default = conditions_held(template)
    assert "WebhookSecret" in deployed_resources(template)
    assert by_default["CreateWebhookSecret"]
    assert not by_default["HasStripeApiKeySecret"] and not by_default["HasPlanCatalogParameter"]
    for parameter, (condition, value) in OPTIONAL_PARAMETERS.items():
        given = conditions_held(template, {parameter: value})
        assert given[condition] is not by_default[condition], parameter
    existing = {"ExistingWebhookSecretArn": OPTIONAL_PARAMETERS["ExistingWebhookSecretArn"][1]}
    assert "WebhookSecret" not in deployed_resources(template, existing)


# ------------------------------------------------------------------------ storage


def test_tables_are_on_demand_with_pitr_and_encryption(template: dict[str, Any]) -> None:
    tables = resources_of_type(template, TABLE_TYPE)
    assert set(tables) >= {"BillingStateTable", "IdempotencyTable"}
    for logical_id, table in tables.items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, logical_id
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id


def test_billing_state_survives_stack_deletion_and_replacement(template: dict[str, Any]) -> None:
    table = template["Resources"]["BillingStateTable"]
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    assert table["Properties"]["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]


def test_idempotency_records_expire_after_stripes_retry_window(template: dict[str, Any]) -> None:
    assert ttl_attribute(template, "IdempotencyTable") == "expiration"
    assert ttl_attribute(template, "BillingStateTable") is None
    ttl = template["Parameters"]["IdempotencyTtlSeconds"]
    assert ttl["MinValue"] >= STRIPE_RETRY_WINDOW_SECONDS
    assert ttl["Default"] >= ttl["MinValue"]
    env = function_environment(template, "WebhookIntakeFunction")
    assert int(env["IDEMPOTENCY_TTL_SECONDS"]) == ttl["Default"]


# ---------------------------------------------------------------- build & runtime


def _makefile_targets(directory: Path) -> set[str]:
    makefile = directory / "Makefile"
    assert makefile.is_file(), f"{makefile} is missing"
    return set(re.findall(r"^([A-Za-z0-9_-]+):", makefile.read_text(encoding="utf-8"), flags=re.MULTILINE))


def test_functions_run_python313_on_arm64_and_build_with_their_makefile(
    template: dict[str, Any], functions: dict[str, dict[str, Any]]
) -> None:
    for logical_id, function in functions.items():
        props = function_properties(template, logical_id)
        assert props["Runtime"] == "python3.13", logical_id
        assert props["Architectures"] == ["arm64"], logical_id
        assert {"Ref": "SharedLayer"} in props["Layers"], logical_id
        assert function["Metadata"]["BuildMethod"] == "makefile", logical_id
        code_dir = REPO_ROOT / props["CodeUri"]
        assert f"build-{logical_id}" in _makefile_targets(code_dir), logical_id


def test_shared_layer_builds_with_its_makefile_for_python313_arm64(template: dict[str, Any]) -> None:
    layers = resources_of_type(template, LAYER_TYPE)
    assert set(layers) == {"SharedLayer"}
    layer = layers["SharedLayer"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    props = layer["Properties"]
    assert props["CompatibleRuntimes"] == ["python3.13"]
    assert props["CompatibleArchitectures"] == ["arm64"]
    layer_dir = REPO_ROOT / props["ContentUri"]
    assert "build-SharedLayer" in _makefile_targets(layer_dir)
    assert (layer_dir / "requirements.txt").is_file()


def test_webhook_intake_environment_covers_its_settings(template: dict[str, Any]) -> None:
    env = function_environment(template, "WebhookIntakeFunction")
    assert set(env) >= {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "BILLING_TABLE_NAME",
        "IDEMPOTENCY_TABLE_NAME",
        "WEBHOOK_SECRET_ID",
        "STRIPE_API_KEY_SECRET_ID",
        "PLAN_CATALOG_PARAMETER",
        "IDEMPOTENCY_TTL_SECONDS",
    }
    assert env["POWERTOOLS_SERVICE_NAME"] == "billwatch"
    resolved = function_environment(
        template,
        "WebhookIntakeFunction",
        parameters={"StripeApiKeySecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k"},
        resource_refs={"BillingStateTable": "billing", "IdempotencyTable": "idem"},
    )
    assert resolved["BILLING_TABLE_NAME"] == "billing"
    assert resolved["IDEMPOTENCY_TABLE_NAME"] == "idem"
    assert resolved["STRIPE_API_KEY_SECRET_ID"].endswith(":secret:k")


# ------------------------------------------------------------------------ routing


def test_stripe_webhook_route_maps_to_webhook_intake(template: dict[str, Any]) -> None:
    routes = http_routes(template)
    assert ("POST", "/webhooks/stripe", "WebhookIntakeFunction") in routes
    assert len({(method, path) for method, path, _ in routes}) == len(routes), "duplicate routes"


def test_webhook_route_is_unauthenticated_payload_v2_and_throttled(template: dict[str, Any]) -> None:
    event = template["Resources"]["WebhookIntakeFunction"]["Properties"]["Events"]["StripeWebhook"]
    assert event["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    assert event["Properties"]["PayloadFormatVersion"] == "2.0"
    assert "Auth" not in event["Properties"]
    api = template["Resources"]["HttpApi"]["Properties"]
    assert "DefaultAuthorizer" not in api.get("Auth", {})
    throttling = api["DefaultRouteSettings"]
    assert throttling["ThrottlingBurstLimit"] > 0
    assert throttling["ThrottlingRateLimit"] > 0


def test_async_invocations_retry_twice_then_land_in_the_dlq(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    invoke_configs = resources_of_type(template, "AWS::Lambda::EventInvokeConfig")
    by_function = {
        cfg["Properties"]["FunctionName"]["Ref"]: cfg["Properties"] for cfg in invoke_configs.values()
    }
    config = by_function["WebhookIntakeFunction"]
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["WebhookDLQ", "Arn"]}
    dlq = resources["WebhookDLQ"]["Properties"]
    assert dlq["SqsManagedSseEnabled"] is True
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_stripe_partner_events_path_is_optional(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    rule = resources["StripeEventsRule"]
    assert rule["Condition"] == "HasStripeEventSource"
    props = rule["Properties"]
    assert props["EventBusName"] == {"Ref": "StripePartnerEventSource"}
    assert props["EventPattern"] == {"source": [{"prefix": "aws.partner/stripe.com"}]}
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["WebhookIntakeFunction", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["WebhookDLQ", "Arn"]}
    assert "RetryPolicy" in target
    permission = resources["StripeEventsInvokePermission"]
    assert permission["Condition"] == "HasStripeEventSource"
    assert permission["Properties"]["Principal"] == "events.amazonaws.com"
    assert permission["Properties"]["SourceArn"] == {"Fn::GetAtt": ["StripeEventsRule", "Arn"]}
    assert resources["WebhookDLQPolicy"]["Condition"] == "HasStripeEventSource"


def test_outputs(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) >= {
        "WebhookUrl",
        "HttpApiUrl",
        "BillingStateTableName",
        "IdempotencyTableName",
        "WebhookDLQUrl",
        "SharedLayerArn",
        "WebhookSecretArn",
    }
    assert template["Outputs"]["WebhookUrl"]["Value"] == {
        "Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/webhooks/stripe"
    }


# ------------------------------------------------------------------ local tables


def test_create_tables_matches_the_template_under_moto(
    template: dict[str, Any], aws_credentials: None
) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        names = create_tables(client, template)
        assert set(names) == set(resources_of_type(template, TABLE_TYPE))
        assert create_tables(client, template) == names  # idempotent

        for logical_id, kwargs in dynamodb_tables(template).items():
            described = client.describe_table(TableName=names[logical_id])["Table"]
            props = template["Resources"][logical_id]["Properties"]
            assert described["KeySchema"] == props["KeySchema"]
            assert described["AttributeDefinitions"] == props["AttributeDefinitions"]
            assert described["BillingModeSummary"]["BillingMode"] == kwargs["BillingMode"]
            ttl = client.describe_time_to_live(TableName=names[logical_id])["TimeToLiveDescription"]
            expected = ttl_attribute(template, logical_id)
            if expected:
                assert ttl["TimeToLiveStatus"] == "ENABLED"
                assert ttl["AttributeName"] == expected
            else:
                assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_create_tables_prefix_isolates_table_names(template: dict[str, Any], aws_credentials: None) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        names = create_tables(client, template, prefix="t1-")
        assert names == {logical_id: f"t1-{logical_id}" for logical_id in names}
        assert sorted(client.list_tables()["TableNames"]) == sorted(names.values())


def test_licensing_routes_require_iam(template: dict[str, Any]) -> None:
    assert template["Resources"]["HttpApi"]["Properties"]["Auth"]["EnableIamAuthorizer"] is True
    events = template["Resources"]["LicensingApiFunction"]["Properties"]["Events"]
    assert {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values()} == {
        ("GET", "/v1/accounts/{account_id}/entitlements"),
        ("POST", "/v1/accounts/{account_id}/usage"),
        ("GET", "/v1/accounts/{account_id}/usage-report"),
        ("PUT", "/admin/accounts/{account_id}/tier-override"),
        ("POST", "/admin/accounts/{account_id}/grants"),
        ("POST", "/admin/accounts/{account_id}/usage-reset"),
        ("GET", "/admin/audit"),
    }
    assert all(e["Properties"]["Auth"]["Authorizer"] == "AWS_IAM" for e in events.values())
