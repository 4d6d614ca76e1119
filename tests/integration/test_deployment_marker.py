"""The deployment marker: DeployedRule's events make the health probe's function count one Deployed
per finished deployment, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.local_deployment import stack_status_change
from tests.support import LambdaContext, MetricsCapture, load_handler

NOW = 1_796_637_600
NOT_FINISHED = ["UPDATE_ROLLBACK_COMPLETE", "UPDATE_IN_PROGRESS", None, ["UPDATE_COMPLETE"]]


@pytest.fixture
def handler(aws: Any) -> Any:
    return load_handler("health_probe")


@pytest.mark.parametrize("status", ["CREATE_COMPLETE", "UPDATE_COMPLETE"])
def test_a_finished_deployment_counts_one_deployed(
    handler: Any, metrics: MetricsCapture, status: str
) -> None:
    metrics.read()  # what loading the handler printed

    assert handler.lambda_handler(stack_status_change(status, NOW), LambdaContext()) == {
        "deployed": True,
        "status": status,
    }
    assert metrics.total("Deployed") == 1
    assert [m.name for m in metrics.read()] == ["Deployed"]  # the probe's checks did not run
    assert any(log["message"] == "Stack deployed" and log["stack_status"] == status for log in metrics.logs())


@pytest.mark.parametrize(
    "status", ["UPDATE_ROLLBACK_COMPLETE", "UPDATE_IN_PROGRESS", None, ["UPDATE_COMPLETE"]]
)
def test_anything_but_a_finished_deployment_is_not_counted(
    handler: Any, metrics: MetricsCapture, status: Any
) -> None:

    assert handler.lambda_handler(stack_status_change(status, NOW), LambdaContext()) == {"deployed": False}
    assert metrics.total("Deployed") == 0
    assert any("no finished deployment" in log["message"] for log in metrics.logs())


def test_a_status_change_without_details_is_not_counted(handler: Any, metrics: MetricsCapture) -> None:
    event = {**stack_status_change("UPDATE_COMPLETE", NOW), "detail": "UPDATE_COMPLETE"}

    assert handler.lambda_handler(event, LambdaContext()) == {"deployed": False}
    assert metrics.total("Deployed") == 0
