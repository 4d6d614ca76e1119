"""Alert channels, after Alertmanager's notifiers: Slack, email (SES), PagerDuty, signed webhooks and
the log, each in its own module behind the seam of base.py, with one retry stage (retry.py) for all.

Secrets (the Slack URL, the PagerDuty routing key, a webhook signing secret) are read when a
message is sent, so a rotation takes effect without a cold start. They never appear in a log line
or in a DeliveryFailed: both name the channel, the secret's key and the HTTP status only.
"""
