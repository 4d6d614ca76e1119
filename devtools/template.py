"""Read template.yaml so the local stack and the tests follow the real deployment.

The template is parsed with cfn-lint's CloudFormation-aware YAML loader, so short-form
intrinsics come out in their long form (``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` ->
``{"Fn::GetAtt": ["A", "B"]}``) and everything is returned as plain dicts, lists and scalars.

:func:`resolve` works out the intrinsics (Ref, Fn::Sub, Fn::If, the condition functions, ...) of a
template fragment; the readers below use it for schedules, alarms, conditions and function names.

Everything here is generic over the template (every ``AWS::DynamoDB::Table``, every
``AWS::Serverless::Function``), so new tables, functions and routes are picked up without
touching this module.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"

FUNCTION_TYPE = "AWS::Serverless::Function"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
TABLE_TYPE = "AWS::DynamoDB::Table"

# CloudFormation index properties that DynamoDB's CreateTable also accepts.
_GSI_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")
_LSI_KEYS = ("IndexName", "KeySchema", "Projection")


def _plain(node: Any) -> Any:
    """cfn-lint's str_node/dict_node/list_node subclasses -> built-in types."""
    if isinstance(node, Mapping):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, str):
        return str(node)
    return node


def load_template(path: str | Path = "template.yaml") -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template into plain Python objects.

    A relative path that does not exist from the current directory is resolved against the
    repository root, so ``load_template()`` works from any working directory.
    """
    candidate = Path(path)
    if not candidate.is_absolute() and not candidate.exists():
        candidate = REPO_ROOT / candidate
    template = cfn_yaml.load(str(candidate))
    if not isinstance(template, Mapping):
        raise ValueError(f"{candidate} is not a CloudFormation template (top level is not a mapping)")
    return _plain(template)


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource for every resource of ``resource_type``, in template order."""
    return {
        logical_id: resource
        for logical_id, resource in (template.get("Resources") or {}).items()
        if isinstance(resource, dict) and resource.get("Type") == resource_type
    }


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# ---------------------------------------------------------------------------- intrinsics

PSEUDO_PARAMETERS = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "billwatch",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/billwatch/8a2f0c4e-0b1d-4c6e",
    "AWS::URLSuffix": "amazonaws.com",
}

_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def resolve(
    node: Any,
    parameters: Mapping[str, str],
    refs: Mapping[str, str] | None = None,
    conditions: Mapping[str, bool] | None = None,
) -> Any:
    """CloudFormation intrinsics in a parsed template fragment (long form, as cfn-lint loads it).

    Ref, Fn::Sub, Fn::Join, Fn::GetAtt, Fn::If (only the chosen branch is resolved, so it may
    refer to a resource that the condition leaves out), ``Ref: AWS::NoValue`` (drops the key or
    list item; None at the top), and the condition functions Fn::Equals, Fn::Not, Fn::And,
    Fn::Or with ``{"Condition": name}`` operands, so a template's Conditions can be computed.

    A Ref that is neither a pseudo parameter nor in ``parameters`` is a resource: ``refs[name]``.
    Without ``refs`` every such Ref resolves to the name itself; with ``refs``, a name missing
    from it raises KeyError (refs then lists the resources, so a typo does not pass silently).
    Fn::GetAtt [A, B] gives ``refs.get("A.B", "A.B")`` and likewise raises KeyError when ``refs``
    is given and knows neither "A.B" nor A. An unknown condition raises KeyError; an
    unsupported intrinsic (Fn::Select, ...) raises ValueError.
    """
    resolved = _Resolver(parameters, refs, conditions).resolve(node)
    return None if resolved is _NO_VALUE else resolved


class _Resolver:
    def __init__(
        self,
        parameters: Mapping[str, str],
        refs: Mapping[str, str] | None,
        conditions: Mapping[str, bool] | None,
    ) -> None:
        self._parameters = parameters
        self._refs = refs
        self._conditions = conditions
        self._intrinsics: dict[str, Callable[[Any], Any]] = {
            "Ref": self._ref,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::GetAtt": self._get_att,
            "Fn::If": self._if,
            "Fn::Equals": self._equals,
            "Fn::Not": lambda operands: not self._truth(_single(operands, "Fn::Not")),
            "Fn::And": lambda operands: all([self._truth(operand) for operand in operands]),
            "Fn::Or": lambda operands: any([self._truth(operand) for operand in operands]),
        }

    def resolve(self, node: Any) -> Any:
        if isinstance(node, Mapping):
            if len(node) == 1:
                ((key, argument),) = node.items()
                if key in self._intrinsics:
                    return self._intrinsics[key](argument)
                if str(key).startswith("Fn::"):
                    raise ValueError(f"unsupported intrinsic function {key}")
            resolved = {key: self.resolve(value) for key, value in node.items()}
            return {key: value for key, value in resolved.items() if value is not _NO_VALUE}
        if isinstance(node, list):
            return [value for value in map(self.resolve, node) if value is not _NO_VALUE]
        return node

    def _ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self._parameters:
            return self._parameters[name]
        if str(name).startswith("AWS::"):
            raise KeyError(f"unknown pseudo parameter {name}")
        if self._refs is None:
            return name
        if name in self._refs:
            return self._refs[name]
        raise KeyError(f"Ref to {name}, which is neither a parameter nor a resource in refs")

    def _get_att(self, argument: Any) -> Any:
        resource, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
        key = f"{resource}.{attribute}"
        if self._refs is None:
            return key
        if key in self._refs:
            return self._refs[key]
        if resource in self._refs:
            return key
        raise KeyError(f"Fn::GetAtt {key}: {resource} is not a resource in refs")

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        else:
            text, raw_variables = argument
            variables = {name: self.resolve(value) for name, value in raw_variables.items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name:
                value = self._get_att(name)
            else:
                value = self._ref(name)
            if value is _NO_VALUE or isinstance(value, Mapping | list):
                raise ValueError(f"Fn::Sub variable {name} does not resolve to a string")
            return str(value)

        return _SUB_VARIABLE.sub(substitute, text)

    def _join(self, argument: Any) -> str:
        separator, items = argument
        values = self.resolve(items)
        if not isinstance(values, list):
            raise ValueError(f"Fn::Join needs a list of values, got {values!r}")
        return str(separator).join(str(value) for value in values)

    def _if(self, argument: Any) -> Any:
        condition, when_true, when_false = argument
        return self.resolve(when_true if self._condition(condition) else when_false)

    def _equals(self, argument: Any) -> bool:
        left, right = argument
        return self.resolve(left) == self.resolve(right)

    def _condition(self, name: str) -> bool:
        if self._conditions is None or name not in self._conditions:
            raise KeyError(f"unknown condition {name}")
        return bool(self._conditions[name])

    def _truth(self, operand: Any) -> bool:
        if isinstance(operand, Mapping) and set(operand) == {"Condition"}:
            return self._condition(operand["Condition"])
        value = self.resolve(operand)
        if not isinstance(value, bool):
            raise ValueError(f"condition function operand {operand!r} is not a condition")
        return value


def _single(operands: Any, function: str) -> Any:
    if not isinstance(operands, list) or len(operands) != 1:
        raise ValueError(f"{function} takes a list of exactly one condition")
    return operands[0]


# ------------------------------------------------------------------------- DynamoDB


def dynamodb_tables(template: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Logical id -> boto3 ``create_table`` kwargs for every AWS::DynamoDB::Table.

    The table name is ``prefix + logical id`` (CloudFormation generates the real names).
    """
    tables: dict[str, dict[str, Any]] = {}
    for logical_id, resource in resources_of_type(template, TABLE_TYPE).items():
        props = resource.get("Properties") or {}
        kwargs: dict[str, Any] = {
            "TableName": f"{prefix}{logical_id}",
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        if "ProvisionedThroughput" in props:
            kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = [
                {key: index[key] for key in _GSI_KEYS if key in index}
                for index in props["GlobalSecondaryIndexes"]
            ]
        if props.get("LocalSecondaryIndexes"):
            kwargs["LocalSecondaryIndexes"] = [
                {key: index[key] for key in _LSI_KEYS if key in index}
                for index in props["LocalSecondaryIndexes"]
            ]
        stream = props.get("StreamSpecification")
        if stream and stream.get("StreamViewType"):
            kwargs["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": stream["StreamViewType"],
            }
        tables[logical_id] = kwargs
    return tables


def ttl_attribute(template: Mapping[str, Any], logical_id: str) -> str | None:
    """The TTL attribute name of a table, or None when TTL is not enabled."""
    resource = (template.get("Resources") or {}).get(logical_id)
    if not resource or resource.get("Type") != TABLE_TYPE:
        raise KeyError(f"{logical_id} is not an {TABLE_TYPE} in the template")
    spec = (resource.get("Properties") or {}).get("TimeToLiveSpecification") or {}
    if _is_true(spec.get("Enabled")) and spec.get("AttributeName"):
        return str(spec["AttributeName"])
    return None


def create_tables(dynamodb_client: Any, template: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Create every table of the template (plus TTL) and return logical id -> table name.

    Idempotent: tables that already exist are left alone, so a local stack can be restarted
    against a long-running moto server.
    """
    names: dict[str, str] = {}
    for logical_id, kwargs in dynamodb_tables(template, prefix=prefix).items():
        name = kwargs["TableName"]
        # Only a table that was there already, or is still being created, is waited for and asked
        # for its TTL: moto's are ACTIVE without TTL at once, and the suite creates them for some
        # nine hundred tests (the waiter's and the TTL's calls were half of that set-up).
        created: dict[str, Any] | None = None
        with contextlib.suppress(dynamodb_client.exceptions.ResourceInUseException):
            created = dynamodb_client.create_table(**kwargs)["TableDescription"]
        if created is None or created.get("TableStatus") != "ACTIVE":
            dynamodb_client.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
            )
        attribute = ttl_attribute(template, logical_id)
        if attribute:
            current = (
                {}
                if created is not None
                else dynamodb_client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            )
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                dynamodb_client.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
                )
        names[logical_id] = name
    return names


# ------------------------------------------------------------------------ functions


def http_routes(template: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(METHOD, path, function logical id) for every HttpApi event of every function.

    An HttpApi event without Method/Path is API Gateway's catch-all ``("ANY", "$default")``.
    """
    routes: list[tuple[str, str, str]] = []
    for logical_id, resource in resources_of_type(template, FUNCTION_TYPE).items():
        events = (resource.get("Properties") or {}).get("Events") or {}
        for event in events.values():
            if not isinstance(event, dict) or event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            method = str(props.get("Method", "ANY")).upper()
            path = str(props.get("Path", "$default"))
            routes.append((method, path, logical_id))
    return routes


HTTP_API_TYPE = "AWS::Serverless::HttpApi"
_IAM_AUTHORIZER = "AWS_IAM"


def _default_authorizer(template: Mapping[str, Any], api_id: Any) -> Any:
    """The ``Auth.DefaultAuthorizer`` of the HttpApi an event belongs to (Globals.HttpApi merged)."""
    auth = dict(((template.get("Globals") or {}).get("HttpApi") or {}).get("Auth") or {})
    ref = api_id.get("Ref") if isinstance(api_id, dict) else None
    api = (resources_of_type(template, HTTP_API_TYPE).get(ref) or {}) if isinstance(ref, str) else {}
    auth.update((api.get("Properties") or {}).get("Auth") or {})
    return auth.get("DefaultAuthorizer")


def iam_routes(template: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """The :func:`http_routes` entries that API Gateway authorizes with IAM.

    That is the event's ``Auth.Authorizer``, else its API's ``DefaultAuthorizer``, is ``AWS_IAM``
    (``Authorizer: NONE`` opts a route out of a default).
    """
    found: set[tuple[str, str, str]] = set()
    for logical_id, resource in resources_of_type(template, FUNCTION_TYPE).items():
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if not isinstance(event, dict) or event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            auth = props.get("Auth") or {}
            if "Authorizer" in auth:
                authorizer = auth["Authorizer"]
            else:
                authorizer = _default_authorizer(template, props.get("ApiId"))
            if authorizer == _IAM_AUTHORIZER:
                method = str(props.get("Method", "ANY")).upper()
                found.add((method, str(props.get("Path", "$default")), logical_id))
    return found


def _ignored_globals(resource: Mapping[str, Any]) -> set[str] | None:
    """None = ignore all Globals, otherwise the set of ignored property names."""
    ignore = resource.get("IgnoreGlobals")
    if ignore == "*":
        return None
    if isinstance(ignore, list):
        return {str(item) for item in ignore}
    return set()


def function_properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's Properties with Globals.Function merged in the way SAM does it.

    Maps merge recursively (the function wins), lists are concatenated (Globals first), and
    any other value of the function replaces the global one.
    """
    resource = (template.get("Resources") or {}).get(logical_id)
    if not resource or resource.get("Type") != FUNCTION_TYPE:
        raise KeyError(f"{logical_id} is not an {FUNCTION_TYPE} in the template")
    local = resource.get("Properties") or {}
    ignored = _ignored_globals(resource)
    if ignored is None:
        return dict(local)
    global_props = {
        key: value
        for key, value in ((template.get("Globals") or {}).get("Function") or {}).items()
        if key not in ignored
    }
    return _merge(global_props, local)


def _merge(global_value: Any, local_value: Any) -> Any:
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if _is_intrinsic(global_value) or _is_intrinsic(local_value):
            return local_value
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return global_value + local_value
    return local_value


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Parameter name -> value (override, else Default) as CloudFormation passes it: a string."""
    values: dict[str, str] = {}
    for name, spec in (template.get("Parameters") or {}).items():
        if overrides and name in overrides:
            values[name] = str(overrides[name])
        elif isinstance(spec, dict) and "Default" in spec:
            values[name] = str(spec["Default"])
    return values


def function_environment(
    template: Mapping[str, Any],
    logical_id: str,
    parameters: Mapping[str, Any] | None = None,
    resource_refs: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Environment variables of a function after merging Globals.

    Plain strings are returned as they are. ``{"Ref": X}`` resolves to the parameter value
    (``parameters`` override, else the parameter Default) or to ``resource_refs[X]`` for a
    resource (e.g. the logical id -> table name mapping returned by :func:`create_tables`).
    Anything else (``Fn::If``, ``Fn::GetAtt``, unknown refs, ...) is returned as ``None`` so
    the caller can see the variable exists and supply a local value.
    """
    variables = (function_properties(template, logical_id).get("Environment") or {}).get("Variables") or {}
    params = parameter_values(template, parameters)
    refs = resource_refs or {}
    env: dict[str, str | None] = {}
    for name, value in variables.items():
        if isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            env[name] = str(value)
        elif isinstance(value, dict) and set(value) == {"Ref"} and isinstance(value["Ref"], str):
            ref = value["Ref"]
            env[name] = params.get(ref, refs.get(ref))
        else:
            env[name] = None
    return env


# -------------------------------------------------------------------------- alarms

ALARM_TYPE = "AWS::CloudWatch::Alarm"
COMPOSITE_ALARM_TYPE = "AWS::CloudWatch::CompositeAlarm"
DASHBOARD_TYPE = "AWS::CloudWatch::Dashboard"
QUERY_DEFINITION_TYPE = "AWS::Logs::QueryDefinition"


def resolved_properties(
    template: Mapping[str, Any], resource_type: str, parameters: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Logical id -> Properties of every resource of a type, with the intrinsics worked out.

    Parameters take their Default unless overridden. A Ref to a resource stands for its logical
    id, so an alarm's name in a composite AlarmRule is the alarm's logical id, and a dimension
    such as ``FunctionName: !Ref WebhookIntakeFunction`` reads ``WebhookIntakeFunction``;
    ``!GetAtt A.B`` reads ``A.B``.
    """
    values = parameter_values(template, parameters)
    refs = {logical_id: logical_id for logical_id in template.get("Resources") or {}}
    conditions = _conditions(template, values)
    return {
        logical_id: resolve(resource.get("Properties") or {}, values, refs, conditions)
        for logical_id, resource in resources_of_type(template, resource_type).items()
    }


def _conditions(template: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, bool]:
    """Each of the template's Conditions, for these parameter values (in order: one may use another)."""
    conditions: dict[str, bool] = {}
    for name, rule in (template.get("Conditions") or {}).items():
        conditions[name] = bool(resolve(rule, values, conditions=conditions))
    return conditions


# ------------------------------------------------------------------------ schedules


@dataclass(frozen=True)
class ScheduleEvent:
    """One ``Schedule`` (EventBridge rule) or ``ScheduleV2`` (EventBridge Scheduler) of a function."""

    function: str  # logical id
    name: str  # the event's key under Events
    kind: str  # "Schedule" or "ScheduleV2"
    expression: str
    zone: str  # the expression's time zone (Scheduler only; rules are UTC)
    input: str | None  # the target's Input, if the template gives one


SCHEDULE_KINDS = ("Schedule", "ScheduleV2")


def schedules(
    template: Mapping[str, Any], parameters: Mapping[str, Any] | None = None
) -> list[ScheduleEvent]:
    """Every enabled schedule of every function, with its expression's parameters filled in."""
    values = parameter_values(template, parameters)
    refs = {logical_id: logical_id for logical_id in template.get("Resources") or {}}
    found = []
    for logical_id, resource in resources_of_type(template, FUNCTION_TYPE).items():
        for name, event in ((resource.get("Properties") or {}).get("Events") or {}).items():
            if not isinstance(event, dict) or event.get("Type") not in SCHEDULE_KINDS:
                continue
            props = resolve(event.get("Properties") or {}, values, refs)
            if props.get("Enabled") is False or props.get("State") == "DISABLED":
                continue
            kind = event["Type"]
            expression = props["Schedule"] if kind == "Schedule" else props["ScheduleExpression"]
            zone = props.get("ScheduleExpressionTimezone") or "UTC"
            found.append(ScheduleEvent(logical_id, name, kind, expression, zone, props.get("Input")))
    return found


def deployed_resources(template: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> set[str]:
    """The logical ids of the resources CloudFormation would create: those without a Condition, or
    whose Condition holds for these parameters (their defaults unless overridden)."""
    conditions = _conditions(template, parameter_values(template, parameters))
    return {
        logical_id
        for logical_id, resource in (template.get("Resources") or {}).items()
        if "Condition" not in resource or conditions[resource["Condition"]]
    }


def function_names(
    template: Mapping[str, Any], parameters: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The names Lambda knows each function by (its FunctionName, else its logical id) -> logical id."""
    values = parameter_values(template, parameters)
    names = {}
    for logical_id, resource in resources_of_type(template, FUNCTION_TYPE).items():
        names[logical_id] = logical_id
        given = (resource.get("Properties") or {}).get("FunctionName")
        if given is not None:
            names[str(resolve(given, values))] = logical_id
    return names
