"""Secrets and parameters, fetched through Powertools parameters with a cache so warm calls cost nothing.

Powertools parameters is imported on first fetch: local runs, which take secrets from the
environment, never need it, and a cold start saves ~5 ms. Its providers are billwatch's own, on the
process's botocore session (``billwatch.core.aws``); Powertools' defaults would each open another.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from billwatch.core.aws import boto3_session
from billwatch.core.config import Settings, parse_webhook_secrets

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider


@cache
def _secrets() -> SecretsProvider:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return SecretsProvider(boto3_session=boto3_session())


@cache
def _ssm() -> SSMProvider:
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    return SSMProvider(boto3_session=boto3_session())


def webhook_secrets(settings: Settings) -> tuple[str, ...]:
    if settings.local_webhook_secrets:
        return settings.local_webhook_secrets
    max_age = settings.secrets_max_age_seconds
    if settings.webhook_secret_id:
        raw = _secrets().get(settings.webhook_secret_id, max_age=max_age)
        source = "the webhook secret in Secrets Manager"
    else:
        raw = _ssm().get(_named(settings.webhook_secret_parameter), decrypt=True, max_age=max_age)
        source = "the webhook secret SSM parameter"
    return parse_webhook_secrets(_text(raw), source)


def stripe_api_key(settings: Settings) -> str | None:
    if settings.local_stripe_api_key:
        return settings.local_stripe_api_key
    if not settings.stripe_api_key_secret_id:
        return None
    return _text(_secrets().get(settings.stripe_api_key_secret_id, max_age=settings.secrets_max_age_seconds))


def secret_json(secret_id: str, max_age: int) -> object:
    """A secret that holds JSON, decoded (what it holds is the caller's to check)."""
    return _secrets().get(secret_id, transform="json", max_age=max_age)


def parameter_text(name: str) -> str:
    return _text(_ssm().get(name))


def plan_catalog_text(settings: Settings) -> str:
    return parameter_text(_named(settings.plan_catalog_parameter))


def _named(name: str | None) -> str:
    # Asked only for a source the settings name: load_settings() requires a webhook secret source.
    assert name, "no parameter named"
    return name


def _text(value: str | bytes | dict | None) -> str:
    """Without a transform the providers answer str, or bytes for a binary secret."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    assert isinstance(value, str), type(value)
    return value
