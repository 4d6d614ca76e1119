"""How urgent each alert is, changed by configuration in one place: ``ALERT_SEVERITIES``.

Business alerts take the seeds' severities below: licensing and billing stamp them on the events
they publish (SNS subscribers filter on them), and alert dispatch gives the alert the same one.
An alarm's default is in template.yaml (its description's ``[severity]``, and the topic it
notifies); naming the alarm here changes the severity its alert is routed and told with.

The seeds grade with four words; billwatch routes three. Their "high" (ScholarLink's database
down, Thorbis' overage) pages, so it is ``critical`` here.
"""

from __future__ import annotations

import re
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
DEFAULT_SEVERITIES: Mapping[str, Severity] = MappingProxyType(
    {
        BusinessAlert.USAGE_80: Severity.WARNING,
        BusinessAlert.USAGE_95: Severity.CRITICAL,
        BusinessAlert.USAGE_100: Severity.CRITICAL,
        BusinessAlert.PAYMENT_FAILED: Severity.CRITICAL,
    }
)
USAGE_THRESHOLDS = (80, 95, 100)
# An alarm's logical id in template.yaml, which is its name without billwatch-<stage>-.
_ALARM_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{2,63}$")


class SeveritiesError(ValueError):
    """A severity override that cannot be read; the message names the setting and the entry."""


def usage_alert(threshold: int) -> BusinessAlert:
    return BusinessAlert(f"usage_{threshold}")


def parse_severities(raw: str | None, source: str) -> Mapping[str, Severity]:
    """The defaults with the overrides of ``raw``: business alerts and alarms by name
    (``usage_80=info,payment_failed=warning,LargeQuotaGrant=warning``)."""
    severities = dict(DEFAULT_SEVERITIES)
    overridden: set[str] = set()
    for entry in (raw or "").split(","):
        if not entry.strip():
            continue
        name, separator, value = (part.strip() for part in entry.partition("="))
        if not separator:
            raise SeveritiesError(f"{source}: {entry.strip()!r} is not name=severity")
        if name not in set(BusinessAlert) and not _ALARM_NAME.match(name):
            business = [alert.value for alert in BusinessAlert]
            raise SeveritiesError(f"{source}: {name!r} is neither one of {business} nor an alarm's name")
        if name in overridden:
            raise SeveritiesError(f"{source}: {name} is named twice")
        overridden.add(name)
        try:
            severities[name] = Severity(value)
        except ValueError:
            allowed = [severity.value for severity in Severity]
            message = f"{source}: the severity of {name} must be one of {allowed}, got {value!r}"
            raise SeveritiesError(message) from None
    return MappingProxyType(severities)
