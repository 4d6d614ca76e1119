"""The billing report's content, health score and renderings, from seeded ReportData."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from billwatch.core.metrics import METRICS, SERVICE_DIMENSION
from billwatch.core.severities import Severity
from billwatch.reporting.cloudwatch_source import LABELLED_QUERIES, METRIC_QUERIES
from billwatch.reporting.model import (
    NO_DATA,
    NO_TRAFFIC,
    ActionItem,
    ApiTraffic,
    FeatureUsage,
    Incident,
    Known,
    Missing,
    ReportData,
    ReportPeriod,
    RequestCounts,
    Revenue,
    SloStatus,
    report_window,
)
from billwatch.reporting.renderers import (
    render_console,
    render_document,
    render_email,
    render_slack,
    report_id,
)
from billwatch.reporting.scoring import build_report

END = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
START, _ = report_window(ReportPeriod.DAILY, END)


def healthy_day(**changes: object) -> ReportData:
    data = ReportData(
        start=START,
        end=END,
        availability=RequestCounts("HTTP API 5xx / Count", Known(10_000.0), Known(2.0)),
        api=ApiTraffic(
            requests=Known(10_000.0),
            client_errors=Known(5.0),
            server_errors=Known(2.0),
            latency_p95_ms=Known(210.0),
            busiest_minute_requests=Known(300.0),
            peak_latency_p95_ms=Known(480.0),
        ),
        webhooks_received=Known(5_000.0),
        webhooks_failed=Known(1.0),
        webhook_p95_ms=Known(320.0),
        checkouts_completed=Known(30.0),
        checkouts_expired=Known(10.0),
        subscriptions_new=Known(12.0),
        subscriptions_reactivated=Known(1.0),
        upgrades=Known(4.0),
        subscriptions_churned=Known(2.0),
        paying_at_start=Known(400.0),
        payments_succeeded=Known(95.0),
        paid_by_currency=Known({"USD": 1900.0, "EUR": 250.5}),
        payments_failed=Known(5.0),
        usage_by_feature=Known({"api_calls": 900.0, "exports": 40.0}),
        accounts_at_limit=Known(3.0),
        drift_by_field=Missing(NO_DATA),
        healed_by_field=Missing(NO_DATA),
        reconcile_runs=Known(1.0),
        quota_resets_failed=Missing(NO_DATA),
        incidents=Known(()),
        revenue=Known({"usd": Revenue(now=Known(12_500.0), at_start=Known(12_000.0))}),
    )
    return dataclasses.replace(data, **changes)


def no_data_day() -> ReportData:
    counted = (
        "webhooks_received",
        "webhooks_failed",
        "webhook_p95_ms",
        "checkouts_completed",
        "checkouts_expired",
        "subscriptions_new",
        "subscriptions_reactivated",
        "upgrades",
        "subscriptions_churned",
        "paying_at_start",
        "payments_succeeded",
        "paid_by_currency",
        "payments_failed",
        "usage_by_feature",
        "accounts_at_limit",
        "reconcile_runs",
    )
    return healthy_day(
        **dict.fromkeys(counted, Missing(NO_DATA)),
        availability=RequestCounts("HTTP API 5xx / Count", Missing(NO_DATA), Missing(NO_DATA)),
        api=ApiTraffic(*[Missing(NO_DATA)] * 6),
        revenue=Missing(NO_DATA),
    )


def slo(report, name):
    return next(slo for slo in report.slos if slo.name == name)


def part(report, name):
    return next(part for part in report.health.parts if part.name == name)


def test_a_healthy_day_meets_every_slo_and_scores_100() -> None:
    report = build_report(healthy_day())

    assert [s.status for s in report.slos] == [SloStatus.MET] * 5
    assert slo(report, "Availability").actual == Known(pytest.approx(0.9998))
    assert slo(report, "Webhook error rate").actual == Known(pytest.approx(0.0002))
    assert report.business.checkout_conversion == Known(0.75)
    assert report.business.payment_failure_rate == Known(0.05)
    assert report.business.mrr.value[0].change == Known(500.0)
    assert report.business.mrr.value[0].change_share == Known(pytest.approx(500 / 12_000))
    assert report.business.churn_rate == Known(2 / 400)
    # A finished reconciliation run that counted no drift found none.
    assert report.reconciliation.drift_by_field == Known({})
    assert report.health.score == Known(100)
    assert report.health.not_judged == ()


def test_a_day_without_data_says_no_data_and_never_zero() -> None:
    report = build_report(no_data_day())

    assert all(s.actual == Missing(NO_DATA) for s in report.slos)
    assert all(s.status is SloStatus.NOT_JUDGED for s in report.slos)
    business = report.business
    for figure in (
        business.checkouts_completed,
        business.checkout_conversion,
        business.subscriptions_new,
        business.subscriptions_reactivated,
        business.upgrades,
        business.subscriptions_churned,
        business.churn_rate,
        business.mrr,
        business.payments_failed,
        business.payment_failure_rate,
        business.top_features,
        business.accounts_at_limit,
    ):
        assert figure == Missing(NO_DATA)
    assert report.reconciliation.drift_by_field == Missing(NO_DATA)
    assert report.health.score == Missing("no SLO could be judged")
    assert {p.name for p in report.health.not_judged} == {
        "Availability",
        "API p95 latency",
        "API error rate",
        "Webhook p95 latency",
        "Webhook error rate",
        "Reconciliation drift",
        "Payment failures",
    }
    text = render_console(report)
    assert "no data" in text
    assert " 0 %" not in text
    assert "0.0 %" not in text
    assert "health no SLO could be judged" in text


def test_churn_counts_only_against_subscriptions_paying_at_the_start() -> None:
    nobody_paying = build_report(
        healthy_day(paying_at_start=Known(0.0), subscriptions_churned=Missing(NO_DATA))
    )
    assert nobody_paying.business.churn_rate == Missing("no paying subscriptions at the start")
    # Churn is counted when it happens: none counted beside paying subscriptions is none.
    quiet = build_report(healthy_day(subscriptions_churned=Missing(NO_DATA)))
    assert quiet.business.churn_rate == Known(0.0)
    lines = render_console(build_report(healthy_day())).splitlines()
    assert "  Subscriptions: 12 new, 1 reactivated, 4 upgraded, 2 churned" in lines
    assert "  Churn rate: 0.50 % of 400 paying at the start" in lines
    unknown = render_console(build_report(healthy_day(paying_at_start=Missing(NO_DATA))))
    assert "  Churn rate: no data" in unknown.splitlines()


def test_mrr_without_a_reading_at_the_start_has_no_change() -> None:
    unknown_start = Revenue(now=Known(900.0), at_start=Missing("no gauge reading in the first hour"))
    new_currency = Revenue(now=Known(100.0), at_start=Known(0.0))
    report = build_report(healthy_day(revenue=Known({"eur": new_currency, "usd": unknown_start})))
    lines = render_console(report).splitlines()
    assert "  MRR: EUR 100.00 (+100.00, no MRR at the start)" in lines
    assert "  MRR: USD 900.00 (change: no gauge reading in the first hour)" in lines


def test_zero_traffic_rates_are_no_traffic_not_zero_percent() -> None:
    report = build_report(
        healthy_day(
            availability=RequestCounts("HTTP API 5xx / Count", Known(0.0), Missing(NO_DATA)),
            webhooks_received=Known(0.0),
            webhooks_failed=Missing(NO_DATA),
            checkouts_completed=Known(0.0),
            checkouts_expired=Known(0.0),
        )
    )

    assert slo(report, "Availability").actual == Missing(NO_TRAFFIC)
    assert slo(report, "Webhook error rate").actual == Missing(NO_TRAFFIC)
    assert report.business.checkout_conversion == Missing(NO_TRAFFIC)
    assert "conversion no traffic" in render_console(report)


def test_a_count_without_datapoints_beside_traffic_is_none_in_a_rate() -> None:
    report = build_report(healthy_day(webhooks_failed=Missing(NO_DATA), checkouts_expired=Missing(NO_DATA)))

    assert slo(report, "Webhook error rate").actual == Known(0.0)
    assert report.business.checkout_conversion == Known(1.0)


@pytest.mark.parametrize(
    ("changes", "name", "status"),
    [
        ({"availability": RequestCounts("b", Known(1000.0), Known(1.0))}, "Availability", SloStatus.MET),
        ({"availability": RequestCounts("b", Known(1000.0), Known(1.001))}, "Availability", SloStatus.MISSED),
        ({"webhook_p95_ms": Known(500.0)}, "Webhook p95 latency", SloStatus.MET),
        ({"webhook_p95_ms": Known(500.1)}, "Webhook p95 latency", SloStatus.MISSED),
        (
            {"webhooks_received": Known(1000.0), "webhooks_failed": Known(1.0)},
            "Webhook error rate",
            SloStatus.MET,
        ),
        (
            {"webhooks_received": Known(1000.0), "webhooks_failed": Known(2.0)},
            "Webhook error rate",
            SloStatus.MISSED,
        ),
    ],
)
def test_slos_at_the_boundary(changes: dict, name: str, status: SloStatus) -> None:
    assert slo(build_report(healthy_day(**changes)), name).status is status


def test_each_slo_costs_its_weight_in_proportion_to_the_miss() -> None:
    report = build_report(
        healthy_day(
            availability=RequestCounts("b", Known(1000.0), Known(1.5)),  # 99.85 %: half the budget over
            webhook_p95_ms=Known(750.0),  # 50 % over 500 ms
            webhooks_received=Known(1000.0),
            webhooks_failed=Known(5.0),  # 0.5 %: more than the target over it, a full miss
        )
    )

    assert part(report, "Availability").penalty == Known(pytest.approx(10.0))
    assert part(report, "Webhook p95 latency").penalty == Known(pytest.approx(5.0))
    assert part(report, "Webhook error rate").penalty == Known(pytest.approx(15.0))
    assert report.health.score == Known(70)


def incident(
    alarm: str, severity: Severity | None, hours_ago: float, cleared_hours_ago: float | None
) -> Incident:
    cleared = END - dt.timedelta(hours=cleared_hours_ago) if cleared_hours_ago is not None else None
    return Incident(alarm, severity, END - dt.timedelta(hours=hours_ago), cleared)


def test_incidents_cost_by_severity_and_whether_they_still_fire() -> None:
    incidents = (
        incident("StripeWebhookDown", Severity.CRITICAL, 3, None),
        incident("StripeWebhookFailureRateHigh", Severity.CRITICAL, 10, 9.5),
        incident("HttpApi5xx", Severity.WARNING, 6, 5),
        incident("GoneAlarm", None, 2, 1),
        incident("Info", Severity.INFO, 2, None),
    )
    report = build_report(healthy_day(incidents=Known(incidents)))

    assert part(report, "Incidents").penalty == Known(15 + 8 + 2 + 2 + 1)
    assert report.health.score == Known(72)


def test_the_incident_penalty_is_capped_and_the_score_clamped_at_zero() -> None:
    many = tuple(incident(f"Alarm{n}", Severity.CRITICAL, 2, None) for n in range(10))
    report = build_report(
        healthy_day(
            incidents=Known(many),
            availability=RequestCounts("b", Known(100.0), Known(50.0)),
            webhook_p95_ms=Known(5000.0),
            webhooks_failed=Known(5000.0),
            payments_failed=Known(95.0),
            drift_by_field=Known({"status": 10.0}),
        )
    )

    assert part(report, "Incidents").penalty == Known(40.0)
    assert part(report, "Reconciliation drift").penalty == Known(15.0)
    assert part(report, "Payment failures").penalty == Known(15.0)
    assert report.health.score == Known(0)


def test_drift_costs_more_when_it_was_not_healed() -> None:
    report = build_report(
        healthy_day(
            drift_by_field=Known({"status": 2.0, "tier": 1.0}), healed_by_field=Known({"status": 2.0})
        )
    )

    assert part(report, "Reconciliation drift").penalty == Known(3.0 * 1 + 1.0 * 2)


def test_payment_failures_cost_only_above_the_norm() -> None:
    at_norm = build_report(healthy_day(payments_succeeded=Known(95.0), payments_failed=Known(5.0)))
    over = build_report(healthy_day(payments_succeeded=Known(925.0), payments_failed=Known(75.0)))

    assert part(at_norm, "Payment failures").penalty == Known(0.0)
    assert part(over, "Payment failures").penalty == Known(pytest.approx(7.5))  # 7.5 %: half over


def test_top_features_are_the_five_most_used_ties_by_name() -> None:
    usage = {"a": 5.0, "b": 50.0, "c": 7.0, "d": 50.0, "e": 1.0, "f": 9.0, "g": 3.0}
    report = build_report(healthy_day(usage_by_feature=Known(usage)))

    assert report.business.top_features == Known(
        (
            FeatureUsage("b", 50.0),
            FeatureUsage("d", 50.0),
            FeatureUsage("f", 9.0),
            FeatureUsage("c", 7.0),
            FeatureUsage("a", 5.0),
        )
    )


def test_incident_durations_for_a_cleared_and_a_still_open_alarm() -> None:
    cleared = incident("HttpApi5xx", Severity.WARNING, 6, 4.75)
    still_open = incident("StripeWebhookDown", Severity.CRITICAL, 1.5, None)
    before_window = incident("Old", Severity.WARNING, 30, 25)
    report = build_report(healthy_day(incidents=Known((still_open, before_window, cleared))))

    assert report.incidents == Known((cleared, still_open))
    assert cleared.duration(report.end) == dt.timedelta(hours=1, minutes=15)
    assert still_open.duration(report.end) == dt.timedelta(hours=1, minutes=30)
    text = render_console(report)
    assert "HttpApi5xx (warning): 1h 15m, 2026-12-01 02:00 UTC to 2026-12-01 03:15 UTC" in text
    assert "StripeWebhookDown (critical): still firing, 1h 30m so far" in text


def test_the_report_of_a_window_ending_at_midnight_is_the_day_before() -> None:
    report = build_report(healthy_day(end=dt.datetime(2026, 12, 2, tzinfo=dt.UTC)))

    assert report.day == dt.date(2026, 12, 1)


def test_the_weekly_report_names_its_days() -> None:
    start, end = report_window(ReportPeriod.WEEKLY, END)
    report = build_report(healthy_day(start=start, end=end), ReportPeriod.WEEKLY)

    assert render_email(report).subject == "Weekly billing report 2026-11-24 to 2026-12-01: health 100/100"


def test_dates_and_times_are_shown_in_the_readers_time_zone() -> None:
    new_york = ZoneInfo("America/New_York")
    # 13:00 UTC is 08:00 in New York in December; a window ending just past midnight UTC is
    # still the evening before there.
    morning = render_console(build_report(healthy_day(), zone=new_york))
    assert morning.splitlines()[1] == "2026-11-30 03:00 EST to 2026-12-01 03:00 EST"
    late = dt.datetime(2026, 12, 2, 0, 30, tzinfo=dt.UTC)
    evening = build_report(healthy_day(start=late - dt.timedelta(days=1), end=late), zone=new_york)
    assert render_console(evening).startswith("Billing report 2026-12-01: health")


def test_the_webhook_document_carries_the_sections_and_the_score() -> None:
    report = build_report(healthy_day())
    document = render_document(report)
    assert document["type"] == "billing_report" and document["health_score"] == 100
    assert (document["start"], document["end"]) == ("2026-11-30T08:00:00Z", "2026-12-01T08:00:00Z")
    assert [section["heading"] for section in document["sections"]] == [
        "SLOs",
        "Business",
        "Money",
        "Incidents",
        "Performance",
        "Reconciliation",
        "Health score",
        "Action items",
    ]
    assert report_id(report) == "billing-report-daily-20261201T0800Z"


def test_slack_message_stays_within_block_kit_limits() -> None:
    many = tuple(incident(f"Alarm<{n}>&" + "x" * 200, Severity.WARNING, 2, 1) for n in range(40))
    message = render_slack(build_report(healthy_day(incidents=Known(many))))

    assert message["text"].startswith("Billing report 2026-12-01: health")
    assert len(message["blocks"]) <= 50
    assert len(message["blocks"][0]["text"]["text"]) <= 150
    for block in message["blocks"][1:-1]:
        assert len(block["text"]["text"]) <= 3000
    incidents_text = next(
        b["text"]["text"] for b in message["blocks"] if b["text"]["text"].startswith("*Incid")
    )
    assert "Alarm&lt;0&gt;&amp;" in incidents_text
    assert "<0>" not in incidents_text


def test_slack_message_marks_each_slo() -> None:
    message = render_slack(build_report(healthy_day(webhook_p95_ms=Known(900.0))))
    slo_text = message["blocks"][1]["text"]["text"]

    assert ":x: Webhook p95 latency: 900 ms (target ≤ 500 ms): missed" in slo_text
    assert ":white_check_mark: Availability: 99.980 %" in slo_text


def test_email_subject_and_escaped_html() -> None:
    report = build_report(
        healthy_day(
            incidents=Known((incident("<script>alert(1)</script>", Severity.WARNING, 2, 1),)),
            usage_by_feature=Known({"a&b": 3.0}),
        )
    )
    email = render_email(report)
    subject, text, body = email.subject, email.text, email.html

    assert subject == "Billing report 2026-12-01: health 98/100"
    assert text.startswith(subject)
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "a&amp;b 3" in body


def test_every_query_reads_a_dimension_set_billwatch_emits() -> None:
    for query in METRIC_QUERIES:
        dimensions = (SERVICE_DIMENSION, *(name for name, _ in query.labels))
        assert dimensions in METRICS[query.metric].dimension_sets(), query
    for labelled in LABELLED_QUERIES:
        assert (SERVICE_DIMENSION, labelled.label) in METRICS[labelled.metric].dimension_sets(), labelled


def api(**changes: object) -> ApiTraffic:
    return dataclasses.replace(healthy_day().api, **changes)


@pytest.mark.parametrize(
    ("traffic", "name", "status"),
    [
        (api(latency_p95_ms=Known(500.0)), "API p95 latency", SloStatus.MET),
        (api(latency_p95_ms=Known(500.1)), "API p95 latency", SloStatus.MISSED),
        # ScholarLink counts every 4xx and 5xx against the 0.1 %.
        (api(client_errors=Known(8.0), server_errors=Known(2.0)), "API error rate", SloStatus.MET),
        (api(client_errors=Known(9.0), server_errors=Known(2.0)), "API error rate", SloStatus.MISSED),
        (api(client_errors=Known(11.0), server_errors=Missing(NO_DATA)), "API error rate", SloStatus.MISSED),
    ],
)
def test_the_api_slos_at_the_boundary(traffic: ApiTraffic, name: str, status: SloStatus) -> None:
    assert slo(build_report(healthy_day(api=traffic)), name).status is status


def test_a_missed_api_slo_costs_its_weight_and_says_so() -> None:
    report = build_report(healthy_day(api=api(latency_p95_ms=Known(750.0))))  # 50 % over 500 ms

    assert part(report, "API p95 latency").penalty == Known(pytest.approx(5.0))
    assert report.health.score == Known(95)
    lines = render_console(report).splitlines()
    assert "  API p95 latency: 750 ms (target ≤ 500 ms): missed" in lines
    assert "  API error rate: 0.070 % (target ≤ 0.1 %): met" in lines


def test_without_the_api_id_the_api_slos_and_peaks_are_not_judged() -> None:
    unknown = Missing("the HTTP API's id is not configured (HTTP_API_ID)")
    report = build_report(healthy_day(api=ApiTraffic(*[unknown] * 6)))

    assert slo(report, "API p95 latency").status is SloStatus.NOT_JUDGED
    assert slo(report, "API error rate").status is SloStatus.NOT_JUDGED
    assert report.health.score == Known(100)
    text = render_console(report)
    assert "API error rate: the HTTP API's id is not configured (HTTP_API_ID)" in text
    assert "Peak requests per second: the HTTP API's id is not configured (HTTP_API_ID)" in text


def test_the_performance_section_shows_the_peaks() -> None:
    report = build_report(healthy_day(api=api(busiest_minute_requests=Known(190.0))))
    lines = render_console(report).splitlines()

    assert report.performance.peak_requests_per_second == Known(pytest.approx(190 / 60))
    assert "  Peak requests per second: 3.17 (the busiest minute's HTTP API requests / 60)" in lines
    assert "  Peak latency: 480 ms (the slowest 5 minutes' p95)" in lines


def test_purchases_are_counted_and_totalled_in_money_per_currency() -> None:
    lines = render_console(build_report(healthy_day())).splitlines()

    assert "  Purchases: 95 payments succeeded, EUR 250.50, USD 1,900.00" in lines
    assert "  Payments failed: 5 (5.0 %)" in lines


def test_incidents_are_counted_by_severity() -> None:
    incidents = (
        incident("StripeWebhookDown", Severity.CRITICAL, 3, None),
        incident("PaymentFailureRateCritical", Severity.CRITICAL, 10, 9.5),
        incident("HttpApi5xx", Severity.WARNING, 6, 5),
        incident("GoneAlarm", None, 2, 1),
        incident("LargeQuotaGrant", Severity.INFO, 2, None),
    )
    lines = render_console(build_report(healthy_day(incidents=Known(incidents)))).splitlines()

    assert "  5 in the window: 2 critical, 1 warning, 1 info, 1 of unknown severity; 2 still firing" in lines


def test_action_items_come_from_what_failed() -> None:
    runbook = "https://runbooks.example/webhook-failures.md"
    firing = dataclasses.replace(incident("StripeWebhookDown", Severity.CRITICAL, 3, None), runbook=runbook)
    report = build_report(
        healthy_day(
            incidents=Known(
                (
                    firing,
                    incident("PaymentFailureRateCritical", Severity.CRITICAL, 10, 9.5),
                    incident("HttpApi5xx", Severity.WARNING, 6, 5),  # cleared, not critical: nothing to do
                )
            ),
            webhook_p95_ms=Known(900.0),
            webhooks_failed=Known(3.0),
            payments_succeeded=Known(90.0),
            payments_failed=Known(10.0),
            drift_by_field=Known({"status": 2.0, "tier": 1.0}),
            healed_by_field=Known({"status": 2.0}),
            quota_resets_failed=Known(1.0),
        )
    )

    assert report.action_items == (
        ActionItem("StripeWebhookDown (critical) is still firing", runbook),
        ActionItem("PaymentFailureRateCritical (critical) fired: review what happened", "runbooks/README.md"),
        ActionItem("Webhook p95 latency missed its SLO", "runbooks/webhook-failures.md"),
        ActionItem("Webhooks failed: 3", "runbooks/webhook-failures.md"),
        ActionItem("Payments failed: 10.0 %, above the norm of 5 %", "runbooks/payment-failures.md"),
        ActionItem("Reconciliation drift not healed: 1", "runbooks/reconciliation.md"),
        ActionItem("Quota reset runs failed: 1", "runbooks/quota-reset-failure.md"),
    )
    assert f"  StripeWebhookDown (critical) is still firing: see {runbook}" in render_console(report)


def test_a_day_without_failures_has_no_action_items() -> None:
    report = build_report(healthy_day(webhooks_failed=Missing(NO_DATA)))

    assert report.action_items == ()
    assert render_console(report).endswith("Action items\n  none\n")
