"""How urgent each business alert is, in one place: the seeds' severities, changed by configuration.

Licensing and billing stamp the severity on the business events they publish (SNS subscribers
filter on it), and alert dispatch gives the alert that same severity. Alarms carry theirs in
template.yaml (each description's ``[severity]`` and the topic it notifies).

The seeds grade with four words; billwatch routes three. Their "high" (ScholarLink's database
down, Thorbis' overage) pages, so it is ``critical`` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class BusinessAlert(StrEnum):
    USAGE_80 = "usage_80"
    USAGE_95 = "usage_95"
    USAGE_100 = "usage_100"  # the quota is used up: what comes next is overage
    PAYMENT_FAILED = "payment_failed"


# Thorbis: 80 % of a quota is a warning, 95 % critical, overage high, payment_failed critical.
DEFAULT_SEVERITIES: Mapping[BusinessAlert, Severity] = MappingProxyType(
    {
        BusinessAlert.USAGE_80: Severity.WARNING,
        BusinessAlert.USAGE_95: Severity.CRITICAL,
        BusinessAlert.USAGE_100: Severity.CRITICAL,
        BusinessAlert.PAYMENT_FAILED: Severity.CRITICAL,
    }
)
USAGE_THRESHOLDS = (80, 95, 100)


class SeveritiesError(ValueError):
    """A severity override that cannot be read; the message names the setting and the entry."""


def usage_alert(threshold: int) -> BusinessAlert:
    return BusinessAlert(f"usage_{threshold}")


def parse_severities(raw: str | None, source: str) -> Mapping[BusinessAlert, Severity]:
    """The defaults with the overrides of ``raw`` (``usage_80=info,payment_failed=warning``)."""
    severities = dict(DEFAULT_SEVERITIES)
    for entry in (raw or "").split(","):
        if not entry.strip():
            continue
        name, separator, value = (part.strip() for part in entry.partition("="))
        if not separator:
            raise SeveritiesError(f"{source}: {entry.strip()!r} is not name=severity")
        try:
            alert = BusinessAlert(name)
        except ValueError:
            raise SeveritiesError(
                f"{source}: {name!r} is not one of {[alert.value for alert in BusinessAlert]}"
            ) from None
        try:
            severities[alert] = Severity(value)
        except ValueError:
            allowed = [severity.value for severity in Severity]
            message = f"{source}: the severity of {name} must be one of {allowed}, got {value!r}"
            raise SeveritiesError(message) from None
    return MappingProxyType(severities)
