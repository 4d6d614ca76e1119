from __future__ import annotations

import json

import pytest

from billwatch.core.metrics import METRICS, Metric, MetricPoint, MetricsRecorder


def test_every_metric_is_defined_once_with_low_cardinality_labels() -> None:
    assert set(METRICS) == set(Metric)
    for definition in METRICS.values():
        assert not {"AccountId", "CustomerId", "account_id", "customer_id"} & set(definition.labels)


def test_points_must_carry_exactly_the_defined_labels() -> None:
    with pytest.raises(ValueError, match="WebhookReceived takes labels"):
        MetricPoint(Metric.WEBHOOK_RECEIVED)
    with pytest.raises(ValueError, match="PaymentFailed takes labels"):
        MetricPoint(Metric.PAYMENT_FAILED, labels={"AccountId": "acct_1"})


def test_recorder_writes_emf_with_the_aggregate_and_labelled_dimension_sets(capsys) -> None:
    recorder = MetricsRecorder("Billwatch", "billwatch")
    recorder.add(Metric.WEBHOOK_RECEIVED, EventType="invoice.paid")
    recorder.add(Metric.PAYMENT_SUCCEEDED)
    recorder.add(Metric.WEBHOOK_PROCESSING_TIME, 12.5)
    recorder.flush(metadata={"account_id": "acct_1"})
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_metric = {d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]: d for d in documents if "_aws" in d}
    received = by_metric["WebhookReceived"]
    assert received["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"], ["service", "EventType"]]
    assert received["EventType"] == "invoice.paid" and received["account_id"] == "acct_1"
    assert received["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Billwatch"
    unlabelled = next(d for d in documents if "PaymentSucceeded" in d)
    assert unlabelled["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert unlabelled["WebhookProcessingTime"] == [12.5]
    recorder.flush()
    assert capsys.readouterr().out == ""
