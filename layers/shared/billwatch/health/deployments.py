"""The dashboards' deployment marker: one ``Deployed`` per finished deployment of the stack.

CloudFormation tells EventBridge of every stack status change; the template's ``DeployedRule``
passes this stack's CREATE_COMPLETE and UPDATE_COMPLETE to the health probe's function, which
hands them here. The KPI widgets of the business dashboard draw the count, so a change in a
figure can be read against the deployment that came before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billwatch.core.config import Settings
from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.observability import logger

SOURCE = "aws.cloudformation"
DETAIL_TYPE = "CloudFormation Stack Status Change"
# What the rule lets through; anything else reaching the function is not a finished deployment.
FINISHED_STATUSES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE"})


def is_stack_status_change(event: Mapping[str, Any]) -> bool:
    return event.get("source") == SOURCE and event.get("detail-type") == DETAIL_TYPE


def finished_status(event: Mapping[str, Any]) -> str | None:
    """The event's stack status when it is a finished deployment, else None."""
    detail = event.get("detail")
    details = detail.get("status-details") if isinstance(detail, Mapping) else None
    status = details.get("status") if isinstance(details, Mapping) else None
    return status if isinstance(status, str) and status in FINISHED_STATUSES else None


@dataclass(frozen=True)
class DeploymentMarker:
    metrics: MetricsRecorder

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        status = finished_status(event)
        if status is None:
            # Not counted: a marker where no deployment finished would mislead the reader.
            logger.warning("A stack status change that is no finished deployment was ignored")
            return {"deployed": False}
        self.metrics.add(Metric.DEPLOYED)
        self.metrics.flush(metadata={"stack_status": status})
        logger.info("Stack deployed", extra={"stack_status": status})
        return {"deployed": True, "status": status}


def build_deployment_marker(settings: Settings) -> DeploymentMarker:
    return DeploymentMarker(MetricsRecorder(settings.metrics_namespace, settings.service_name))
