"""The template's dead-man's switches and the health probe's quota reset check agree with the schedules.

A switch alarms on a job that ran and stopped, never on one that has not run yet (a fresh stack),
and holds ALARM while the job stays silent. The probe judges the quota reset by the schedule's
interval, which must be the interval the template gives it.
"""

from __future__ import annotations

from typing import Any

import pytest

from billwatch.core.config import load_settings
from billwatch.licensing.quota_reset import SCHEDULE_SECONDS
from devtools.schedule_expressions import rate_seconds
from devtools.template import ALARM_TYPE, parameter_values, resolved_properties, schedules

SWITCHES = {
    "HealthProbeMissing": ("HealthProbeRun", "HealthProbeMissingSeconds"),
    "QuotaResetMissed": ("QuotaResetSucceeded", "QuotaResetMaxSilenceSeconds"),
}


@pytest.mark.parametrize("alarm", sorted(SWITCHES))
def test_each_switch_fires_on_a_job_that_stopped_not_on_one_that_never_ran(
    template: dict[str, Any], alarm: str
) -> None:
    metric, period = SWITCHES[alarm]
    props = resolved_properties(template, ALARM_TYPE)[alarm]
    queries = {query["Id"]: query for query in props["Metrics"]}
    (returned,) = [query for query in queries.values() if query.get("ReturnData", True)]
    # 1 in the first silent period after one with data, 0 in a period with data, nothing otherwise.
    filled = next(
        query_id for query_id, query in queries.items() if query.get("Expression", "").startswith("FILL")
    )
    assert returned["Expression"] == f"IF({filled} > 0 OR DIFF({filled}) < 0, {filled} == 0)"
    assert queries[filled]["Expression"] == "FILL(counted, 0)"
    stat = queries["counted"]["MetricStat"]
    expected = (metric, parameter_values(template)[period], "Sum")
    assert (stat["Metric"]["MetricName"], stat["Period"], stat["Stat"]) == expected
    # No datapoint keeps the state: INSUFFICIENT_DATA on a fresh stack, ALARM once stopped.
    assert props["TreatMissingData"] == "ignore"
    assert (props["ComparisonOperator"], props["Threshold"], props["EvaluationPeriods"]) == (
        "GreaterThanOrEqualToThreshold",
        1,
        1,
    )


def test_the_probe_judges_the_quota_reset_by_its_schedules_interval(template: dict[str, Any]) -> None:
    (schedule,) = [s for s in schedules(template) if s.function == "QuotaResetFunction"]
    assert rate_seconds(schedule.expression) == SCHEDULE_SECONDS
    probe_environment = template["Resources"]["HealthProbeFunction"]["Properties"]["Environment"]["Variables"]
    settings = load_settings(
        {
            "BILLING_TABLE_NAME": "billing",
            "IDEMPOTENCY_TABLE_NAME": "idempotency",
            "QUOTA_RESET_GRACE_SECONDS": probe_environment["QUOTA_RESET_GRACE_SECONDS"],
        },
        webhook_secret=False,
    )
    # A run may take its grace period, but must be done before the next one starts.
    assert 0 < settings.quota_reset_grace_seconds < SCHEDULE_SECONDS
