"""Secrets, fetched through Powertools parameters with a cache so warm calls cost nothing."""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters

from billwatch.config import Settings, parse_webhook_secrets


def webhook_secrets(settings: Settings) -> tuple[str, ...]:
    if settings.local_webhook_secrets:
        return settings.local_webhook_secrets
    max_age = settings.secrets_max_age_seconds
    if settings.webhook_secret_id:
        raw = parameters.get_secret(settings.webhook_secret_id, max_age=max_age)
        source = "the webhook secret in Secrets Manager"
    else:
        raw = parameters.get_parameter(settings.webhook_secret_parameter, decrypt=True, max_age=max_age)
        source = "the webhook secret SSM parameter"
    return parse_webhook_secrets(raw if isinstance(raw, str) else raw.decode("utf-8"), source)


def stripe_api_key(settings: Settings) -> str | None:
    if settings.local_stripe_api_key:
        return settings.local_stripe_api_key
    if not settings.stripe_api_key_secret_id:
        return None
    raw = parameters.get_secret(settings.stripe_api_key_secret_id, max_age=settings.secrets_max_age_seconds)
    return raw if isinstance(raw, str) else raw.decode("utf-8")
