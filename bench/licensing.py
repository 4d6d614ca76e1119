"""Usage checks of the LicensingApi: DynamoDB requests per check and warm handler time, on moto.

Run as a child process by ``python -m bench`` (its stdout, where the handler logs and EMF
metrics go, is redirected to .bench/licensing-stdout.log); results are written as JSON:

    python -m bench.licensing --layer-python .bench/layer/python --out .bench/licensing.json

Same method as bench.dynamo (see bench.harness): the real functions/licensing_api/app.py runs
in-process against moto's server with the tables template.yaml declares, requests counted on the
wire. Usage checks are API Gateway HTTP API events for ``POST /v1/accounts/{account_id}/usage``
built with devtools.stripe_events.

The layer is built for python3.13/aarch64. Its one compiled distribution, pydantic_core, cannot
load on this interpreter, so the host's build of the same version is imported before the layer
goes on sys.path (the versions must match); everything else comes from the layer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.machinery
import json
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import (
    LICENSING_FUNCTION_DIR,
    USAGE_CHECK_KEYED_MAX_REQUESTS,
    USAGE_CHECK_REPLAY_MAX_REQUESTS,
    USAGE_CHECK_REQUESTS,
    median,
)
from bench.environment import BenchError
from bench.harness import FunctionBench, Window, child_main, deploy, moto_server, scenario_result

FEATURE = "api_calls"  # FREE: quota 1000 a month; quantity 1 crosses 80 % only at the 800th check
NO_THRESHOLD_BELOW = 80  # percent: the lowest threshold that costs an extra write
MAX_USES_PER_ACCOUNT = 500  # warm checks per account stay well below 80 % of the FREE quota
HEADERS = {"content-type": "application/json"}


# ------------------------------------------------------------------------ environment


def host_pydantic_core(layer_python: Path) -> dict[str, Any] | None:
    """Import the host's pydantic_core when the layer's build cannot load on this interpreter."""
    package = layer_python / "pydantic_core"
    if not package.is_dir():
        return None
    if any(
        (package / f"_pydantic_core{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES
    ):
        return None  # the layer's own build loads here
    dist = next(layer_python.glob("pydantic_core-*.dist-info"), None)
    layer_version = dist.name.removeprefix("pydantic_core-").removesuffix(".dist-info") if dist else None
    import pydantic_core  # from the venv: sys.path does not hold the layer yet

    if layer_version != pydantic_core.__version__:
        raise BenchError(
            f"the layer's pydantic_core {layer_version} cannot load here and the venv has"
            f" {pydantic_core.__version__}, not the same version"
        )
    binaries = sorted(p.name for p in package.iterdir() if ".so" in p.name or p.suffix == ".pyd")
    return {
        "version": layer_version,
        "from": str(Path(pydantic_core.__file__).parent),
        "layer_builds": binaries,
    }


def _origins(names: tuple[str, ...]) -> dict[str, str]:
    return {name: str(Path(getattr(sys.modules.get(name), "__file__", "") or "?").parent) for name in names}


# ------------------------------------------------------------------------ usage checks


@dataclass
class Check:
    account: str
    request: dict[str, Any]
    status: int
    answer: dict[str, Any]
    window: Window
    seconds: float


BENCH_CALLER = "arn:aws:sts::123456789012:assumed-role/BillingService/bench"


def usage_event(account: str, request: dict[str, Any]) -> dict[str, Any]:
    from devtools.stripe_events import api_gateway_event

    body = json.dumps(request).encode()
    event = api_gateway_event(body, headers=HEADERS, path=f"/v1/accounts/{account}/usage", method="POST")
    event["requestContext"]["authorizer"] = {"iam": {"userArn": BENCH_CALLER}}  # as AWS_IAM passes it on
    return event


class Bench(FunctionBench):
    def call(self, app: ModuleType, account: str, request: dict[str, Any]) -> Check:
        event = usage_event(account, request)  # built before the clock starts
        response, window, elapsed = self.counter.timed(app.lambda_handler, event, self.context())
        answer = json.loads(response.get("body") or "{}")
        return Check(account, request, int(response.get("statusCode", 0)), answer, window, elapsed)

    def describe(self, check: Check, problem: str | None) -> dict[str, Any]:
        return {
            "account": check.account,
            "request": check.request,
            "status": check.status,
            "answer": check.answer,
            **self.counts(check.window),
            "other_requests": [
                f"{c.service} {c.operation}" for c in check.window.api_calls if c.service != "dynamodb"
            ],
            "problem": problem,
        }

    def scenario(
        self,
        key: str,
        title: str,
        checks: list[tuple[Check, str | None]],
        limit: int | None,
        exact: bool = False,
    ) -> dict[str, Any]:
        runs = [self.describe(check, problem) for check, problem in checks]
        problems = [f"{run['account']} {run['request']}: {run['problem']}" for run in runs if run["problem"]]
        return scenario_result(key, title, runs, problems, limit, exact)

    def used(self, account: str) -> int:
        """The stored counter, read outside any counting window."""
        import boto3

        item = boto3.client("dynamodb").get_item(
            TableName=self.table_of("billing"), Key={"pk": {"S": account}}, ConsistentRead=True
        )
        return int(item.get("Item", {}).get(f"used_{FEATURE}", {}).get("N", 0))

    # -------------------------------------------------------------- scenarios

    def request_counts(self) -> tuple[list[dict[str, Any]], ModuleType]:
        tag = uuid.uuid4().hex[:6]
        scenarios: list[dict[str, Any]] = []
        app = self.load_module(fresh_container=True)

        cold = self.call(app, f"acct_lic_cold_{tag}", {"feature": FEATURE, "quantity": 1})
        scenarios.append(
            self.scenario(
                "cold_first_check",
                "first plain check in a fresh container - informational",
                [(cold, allowed(cold, used=1))],
                None,
            )
        )

        plain: list[tuple[Check, str | None]] = []
        for round_ in range(2):
            for index in range(3):
                check = self.call(app, f"acct_lic_plain_{index}_{tag}", {"feature": FEATURE, "quantity": 1})
                plain.append((check, allowed(check, used=round_ + 1)))
        scenarios.append(
            self.scenario(
                "plain",
                f"plain check: {FEATURE} x1 on a FREE account, no threshold crossed (3 accounts x 2)",
                plain,
                USAGE_CHECK_REQUESTS,
                exact=True,
            )
        )

        keyed_requests = [
            (
                f"acct_lic_key_{index}_{tag}",
                {"feature": FEATURE, "quantity": 1, "idempotency_key": f"job-{k}"},
            )
            for index, k in enumerate(uuid.uuid4().hex[:8] for _ in range(3))
        ]
        first = [self.call(app, account, request) for account, request in keyed_requests]
        scenarios.append(
            self.scenario(
                "keyed_first",
                "check with a new idempotency key (3 accounts)",
                [(check, allowed(check, used=1)) for check in first],
                USAGE_CHECK_KEYED_MAX_REQUESTS,
            )
        )
        replays = []
        for check, (account, request) in zip(first, keyed_requests, strict=True):
            replay = self.call(app, account, request)
            problem = None
            if (replay.status, replay.answer) != (check.status, check.answer):
                problem = f"answer {replay.status} {replay.answer} differs from the first {check.answer}"
            elif self.used(account) != 1:
                problem = f"the replay consumed quota: stored usage is {self.used(account)}"
            replays.append((replay, problem))
        scenarios.append(
            self.scenario(
                "keyed_replay",
                "replayed idempotency key (the first answer back, nothing consumed)",
                replays,
                USAGE_CHECK_REPLAY_MAX_REQUESTS,
            )
        )

        account = f"acct_lic_cross_{tag}"
        setup = self.call(app, account, {"feature": FEATURE, "quantity": 799})
        if setup.status != 200 or setup.answer.get("used") != 799:
            raise BenchError(f"setting up 799 uses failed: {setup.status} {setup.answer}")
        informational: list[tuple[str, str, dict[str, Any], Callable[[Check], str | None]]] = [
            (
                "crossing_80",
                "check crossing 80 % (799 -> 800 of 1000): +1 write recording the alert - informational",
                {"feature": FEATURE, "quantity": 1},
                lambda check: allowed(check, used=800),
            ),
            (
                "crossing_95_100",
                "check crossing 90, 95, 100 % (800 -> 1000): +1 write per alert (95, 100) - informational",
                {"feature": FEATURE, "quantity": 200},
                lambda check: allowed(check, used=1000),
            ),
            (
                "quota_exceeded",
                "check over the quota (denied, 429; the failed condition returns the item) - informational",
                {"feature": FEATURE, "quantity": 1},
                lambda check: expect_status(check, 429),
            ),
            (
                "not_in_plan",
                "feature without a quota, not in the plan (sso on FREE: a read, 403) - informational",
                {"feature": "sso"},
                lambda check: expect_status(check, 403),
            ),
            (
                "invalid",
                "invalid request (quantity 0: 400 before any request) - informational",
                {"feature": FEATURE, "quantity": 0},
                lambda check: expect_status(check, 400),
            ),
        ]
        for key, title, request, verdict in informational:  # in this order, on the same account
            check = self.call(app, account, request)
            scenarios.append(self.scenario(key, title, [(check, verdict(check))], None))
        return scenarios, app

    # -------------------------------------------------------------- warm timing

    def warm_timing(self, app: ModuleType, checks: int, batch: int, warmup: int) -> dict[str, Any]:
        import boto3

        stage_checks = max(20, checks // 2)
        per_side = warmup + checks + stage_checks
        pool = max(4, math.ceil(per_side / MAX_USES_PER_ACCOUNT))
        tag = uuid.uuid4().hex[:6]
        handler_accounts = [f"acct_lic_warm_h{index}_{tag}" for index in range(pool)]
        raw = RawUsageCheck(
            boto3.client("dynamodb"),
            self.table_of("billing"),
            [f"acct_lic_warm_r{index}_{tag}" for index in range(pool)],
        )
        raw_self_check = raw.verify_condition(tag)
        request = {"feature": FEATURE, "quantity": 1}
        sequence = {"handler": 0}
        timing = self.new_warm_timing()

        def handler_check() -> Check:
            account = handler_accounts[sequence["handler"] % pool]
            sequence["handler"] += 1
            check = self.call(app, account, request)
            problem = allowed(check) or (
                None if len(check.window.dynamodb) == 1 else f"{len(check.window.dynamodb)} requests"
            )
            if problem:
                timing.unexpected(problem)
            return check

        def handler_call(record: bool) -> tuple[float, Window]:
            check = handler_check()
            return check.seconds, check.window

        timing.run(handler_call, raw.check, checks, batch, warmup)
        stages, handler_request = self.stage_breakdown(app, handler_check, stage_checks)
        highest = max([self.used(account) for account in handler_accounts] + raw.highest_use())
        return {
            "checks": checks,
            "batch": batch,
            "warmup": warmup,
            "accounts_per_side": pool,
            "highest_use_of_an_account": highest,
            "raw_sequence": ["UpdateItem(billing)"],
            **timing.summary("check"),
            "stage_checks": stage_checks,
            "stages_median_ms": stages,
            "handler_request": handler_request,
            "raw_request": raw.example,
            "raw_condition_self_check": raw_self_check,
        }

    def stage_breakdown(
        self, app: ModuleType, handler_check: Callable[[], Check], count: int
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """A separate, untimed-for-the-ratio pass: where the handler's time goes, per stage."""
        from billwatch.core import dynamo
        from billwatch.core.models import BillingAccount

        connection = dynamo.low_level(BillingAccount)
        spent: dict[str, float] = {}
        captured: dict[str, Any] = {}

        @contextlib.contextmanager
        def patched(owner: Any, name: str, stage: str, capture: bool = False) -> Iterator[None]:
            original = getattr(owner, name)

            def timed(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    result = original(*args, **kwargs)
                    if capture:
                        captured["request"] = result
                    return result
                finally:
                    spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - started

            setattr(owner, name, timed)  # an instance attribute shadows the method
            try:
                yield
            finally:
                delattr(owner, name)

        per_check: dict[str, list[float]] = {}
        with (
            patched(app.app, "resolve", "resolve"),
            patched(app.licensing, "use", "use"),
            patched(app.licensing, "flush_metrics", "flush"),
            patched(connection, "get_operation_kwargs", "build", capture=True),
        ):
            for _ in range(count):
                spent.clear()
                check = handler_check()
                api = check.window.api_seconds
                parts = {
                    "total": check.seconds,
                    "handler_outside_resolve": check.seconds
                    - spent.get("resolve", 0.0)
                    - spent.get("flush", 0.0),
                    "emf_flush": spent.get("flush", 0.0),
                    "resolver_outside_use": spent.get("resolve", 0.0) - spent.get("use", 0.0),
                    "licensing_outside_request": spent.get("use", 0.0) - spent.get("build", 0.0) - api,
                    "pynamodb_request_building": spent.get("build", 0.0),
                    "dynamodb_api_call": api,
                    "on_the_wire": check.window.wire_seconds,
                }
                for key, value in parts.items():
                    per_check.setdefault(key, []).append(value)
        stages = {key: round(median(values) * 1000, 3) for key, values in per_check.items()}
        return stages, _jsonable(captured.get("request", {}))


def allowed(check: Check, used: int | None = None) -> str | None:
    """None when the check was allowed (at ``used``) without crossing a threshold of the quota."""
    answer = check.answer
    if check.status != 200 or answer.get("allowed") is not True:
        return f"answer {check.status} {answer}"
    if used is not None and answer.get("used") != used:
        return f"used {answer.get('used')}, expected {used}"
    if used is None and answer.get("used", 0) * 100 >= NO_THRESHOLD_BELOW * answer.get("limit", 1):
        return f"a threshold was crossed (used {answer.get('used')} of {answer.get('limit')})"
    return None


def expect_status(check: Check, status: int) -> str | None:
    return None if check.status == status else f"answer {check.status} {check.answer}, expected {status}"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ------------------------------------------------------------------------ the direct baseline


class RawUsageCheck:
    """The request a minimal implementation sends per check, made with a plain boto3 client.

    One UpdateItem on the account's item: ADD the quantity to the counter, start the period if
    none is recorded, and a hand-written condition equivalent to the handler's - not merged
    into another account, and for some tier that has the feature: the account is on that tier
    (an override wins over the stored tier; no tier means the default), its counters belong to
    the current period, and the quota has room. It returns the new item, as the handler needs
    it to answer with used/remaining.
    """

    def __init__(self, client: Any, table: str, accounts: list[str]) -> None:
        self.client = client
        self.table = table
        self.accounts = accounts
        self.calls = 0
        today = dt.datetime.now(dt.UTC)
        self.month_start = int(dt.datetime(today.year, today.month, 1, tzinfo=dt.UTC).timestamp())
        # The catalog the handler loaded: the plans module reads the plans.json beside it.
        catalog = Path(sys.modules["billwatch.licensing.plans"].__file__).parent / "plans.json"
        tiers = json.loads(catalog.read_text(encoding="utf-8"))["tiers"]
        used = f"used_{FEATURE}"  # no name in these expressions is a DynamoDB reserved word
        self.update = f"SET usage_since = if_not_exists(usage_since, :now) ADD {used} :quantity"
        self.values: dict[str, dict[str, str]] = {":month_start": {"N": str(self.month_start)}}
        clauses = []
        for index, tier in enumerate(tiers):
            quota = (tier["features"].get(FEATURE) or {}).get("quota")
            if quota is None:
                continue
            self.values[f":tier{index}"] = {"S": tier["name"]}
            self.values[f":room{index}"] = {"N": str(quota - 1)}
            if index == 0:  # the default tier: no stored tier, counted by calendar month
                on_tier = f"(attribute_not_exists(tier) OR tier = :tier{index})"
                current = "usage_since >= :month_start"
            else:
                on_tier = f"tier = :tier{index}"
                current = (
                    "(attribute_exists(current_period_start) AND usage_since >= current_period_start)"
                    " OR (attribute_not_exists(current_period_start) AND usage_since >= :month_start)"
                )
            clauses.append(
                f"(((attribute_not_exists(tier_override) AND {on_tier}) OR tier_override = :tier{index})"
                f" AND (attribute_not_exists(usage_since) OR {current})"
                f" AND (attribute_not_exists({used}) OR {used} <= :room{index}))"
            )
        self.condition = f"attribute_not_exists(merged_into) AND ({' OR '.join(clauses)})"
        self.example: dict[str, Any] = {}

    def request(self, account: str) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "Key": {"pk": {"S": account}},
            "UpdateExpression": self.update,
            "ConditionExpression": self.condition,
            "ExpressionAttributeValues": {
                **self.values,
                ":now": {"N": str(int(time.time()))},
                ":quantity": {"N": "1"},
            },
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def check(self) -> dict[str, Any]:
        account = self.accounts[self.calls % len(self.accounts)]
        self.calls += 1
        request = self.request(account)
        self.example = request
        return self.client.update_item(**request)["Attributes"]

    def highest_use(self) -> list[int]:
        return [
            int(
                self.client.get_item(TableName=self.table, Key={"pk": {"S": account}}, ConsistentRead=True)
                .get("Item", {})
                .get(f"used_{FEATURE}", {})
                .get("N", 0)
            )
            for account in self.accounts
        ]

    def verify_condition(self, tag: str) -> list[dict[str, Any]]:
        """The hand-written condition accepts and refuses where the handler's does."""
        pro_start = self.month_start - 10 * 86_400
        states = [
            ("new account", None, True),
            ("FREE, 999 used", {f"used_{FEATURE}": {"N": "999"}}, True),
            ("FREE, 1000 used", {f"used_{FEATURE}": {"N": "1000"}}, False),
            ("PRO, 5000 used", {"tier": {"S": "PRO"}, f"used_{FEATURE}": {"N": "5000"}}, True),
            (
                "PRO, counters from before its period",
                {
                    "tier": {"S": "PRO"},
                    "current_period_start": {"N": str(pro_start)},
                    "usage_since": {"N": str(pro_start - 1)},
                },
                False,
            ),
            (
                "FREE overridden to PRO, 5000 used",
                {"tier_override": {"S": "PRO"}, f"used_{FEATURE}": {"N": "5000"}},
                True,
            ),
            ("merged into another account", {"merged_into": {"S": "acct_other"}}, False),
        ]
        results = []
        for index, (state, item, expected) in enumerate(states):
            account = f"acct_lic_raw_check_{index}_{tag}"
            if item is not None:
                self.client.put_item(TableName=self.table, Item={"pk": {"S": account}, **item})
            try:
                self.client.update_item(**self.request(account))
                accepted = True
            except self.client.exceptions.ConditionalCheckFailedException:
                accepted = False
            results.append({"state": state, "expected_accept": expected, "accepted": accepted})
        return results


# ------------------------------------------------------------------------ entry point


def run(layer_python: Path, checks: int, batch: int, warmup: int) -> dict[str, Any]:
    pydantic_core = host_pydantic_core(layer_python)  # before the layer goes on sys.path
    with moto_server(layer_python, unset=("STRIPE_WEBHOOK_SECRET",)) as endpoint:
        deployment = deploy(LICENSING_FUNCTION_DIR, extra_env=_usage_events_topic)
        function = deployment.function
        bench = Bench(deployment)
        scenarios, app = bench.request_counts()
        warm = bench.warm_timing(app, checks=checks, batch=batch, warmup=warmup)
        return {
            "endpoint": endpoint,
            "tables": deployment.tables,
            "function": {
                "logical_id": function.logical_id,
                "code_dir": str(function.code_dir),
                "handler": f"{function.handler_module}.{function.handler_name}",
                "environment": function.environment,
            },
            "imported_from": _origins(
                ("billwatch", "aws_lambda_powertools", "pydantic", "pydantic_core", "pynamodb", "botocore")
            ),
            "host_pydantic_core": pydantic_core,
            "scenarios": scenarios,
            "warm": warm,
        }


def _usage_events_topic() -> dict[str, str]:
    """The template's topic is a resource of its own; give the threshold alerts one on moto."""
    import boto3

    topic = boto3.client("sns").create_topic(Name="bench-usage-events")["TopicArn"]
    return {"USAGE_EVENTS_TOPIC_ARN": topic}


def main(argv: list[str] | None = None) -> int:
    return child_main("bench.licensing", __doc__, run, "checks", argv)


if __name__ == "__main__":
    sys.exit(main())
