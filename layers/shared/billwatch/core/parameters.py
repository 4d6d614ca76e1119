"""Secrets and parameters, fetched through Powertools parameters with a cache so warm calls cost nothing.

Powertools parameters is imported on first fetch: local runs, which take secrets from the
environment, never need it, and a cold start saves ~5 ms.
"""

from __future__ import annotations

from billwatch.core.config import Settings, parse_webhook_secrets


def webhook_secrets(settings: Settings) -> tuple[str, ...]:
    if settings.local_webhook_secrets:
        return settings.local_webhook_secrets
    from aws_lambda_powertools.utilities import parameters

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
    from aws_lambda_powertools.utilities import parameters

    raw = parameters.get_secret(settings.stripe_api_key_secret_id, max_age=settings.secrets_max_age_seconds)
    return raw if isinstance(raw, str) else raw.decode("utf-8")


def plan_catalog_text(settings: Settings) -> str:
    from aws_lambda_powertools.utilities import parameters

    return parameters.get_parameter(settings.plan_catalog_parameter)
