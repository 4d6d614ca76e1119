"""Who may call the admin operations: callers acting in one of the configured IAM roles."""

from __future__ import annotations

import re
from collections.abc import Iterable

from billwatch.core.metrics import Metric, MetricsRecorder
from billwatch.core.observability import logger

# A role's session calls as arn:aws:sts::<account>:assumed-role/<role name>/<session>.
_ASSUMED_ROLE = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[^/]+$")


def role_arn_of(caller_arn: str | None) -> str | None:
    """The IAM role ARN a caller acts in, or the caller's own ARN when it is not a role session."""
    if not caller_arn:
        return None
    match = _ASSUMED_ROLE.match(caller_arn)
    if match:
        partition, account, role = match.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return caller_arn


def is_admin(caller_arn: str | None, admin_role_arns: Iterable[str]) -> bool:
    """Roles with a path (role/team/Name) are matched by name, as their session ARNs drop the path."""
    role = role_arn_of(caller_arn)
    if role is None:
        return False
    for admin in admin_role_arns:
        prefix, _, name = admin.partition(":role/")
        if role in (admin, f"{prefix}:role/{name.rsplit('/', 1)[-1]}"):
            return True
    return False


def record_refusal(metrics: MetricsRecorder, caller_arn: str | None, operation: str) -> None:
    """A refused admin call: logged with who and what, and counted for UnauthorizedAdminAccess."""
    logger.warning(
        "Unauthorized admin access attempt",
        extra={"caller_arn": caller_arn or "none", "operation": operation},
    )
    metrics.add(Metric.UNAUTHORIZED_ADMIN_ACCESS)
