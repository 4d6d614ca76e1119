"""The alert routing config: receivers and their channels, the route tree, inhibitions, intervals.

Validated at load with pydantic; an error names the entry (``route.routes.1.matchers.0: ...``).
Channel secrets are never in the config: a channel names a key of the alert secrets (one JSON
object in Secrets Manager), resolved when it sends.

Matchers read like Alertmanager's: ``label=value``, ``label!=value``, ``label=~regex`` and
``label!~regex``; a regex must match the whole value.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from billwatch.core.config import ConfigError
from billwatch.core.severities import Severity

SHIPPED_ROUTES = Path(__file__).with_name("alert_routes.json")
_MATCHER = re.compile(r"^(?P<label>[A-Za-z_][A-Za-z0-9_]*)(?P<op>=~|!~|!=|=)(?P<value>.*)$")
_SECRET_KEY = r"^[A-Za-z0-9_.-]{1,64}$"  # nosec B105 # a pattern that secret key names must match
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        # Routes and silences are matched against every alert: parse each text once.
        return _parse_matcher(text)

    @classmethod
    def _parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not label=value, label!=value, label=~regex or label!~regex")
        matcher = cls(match["label"], match["op"], match["value"].strip('"'))
        if matcher.op in ("=~", "!~"):
            try:
                re.compile(matcher.value)
            except re.error as error:
                raise ValueError(f"{text!r} has an invalid regex: {error}") from None
        return matcher

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = re.fullmatch(self.value, value) is not None
        return found if self.op == "=~" else not found


@functools.cache
def _parse_matcher(text: str) -> Matcher:
    return Matcher._parse(text)


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackChannelConfig(_Strict):
    type: Literal["slack"]
    webhook_url_secret: str = Field(pattern=_SECRET_KEY)


class EmailChannelConfig(_Strict):
    type: Literal["email"]
    to: tuple[Annotated[str, Field(pattern=_EMAIL)], ...] = Field(min_length=1)


class PagerDutyChannelConfig(_Strict):
    type: Literal["pagerduty"]
    routing_key_secret: str = Field(pattern=_SECRET_KEY)
    events_url: str = Field(default="https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://[^\s]+$")


class WebhookChannelConfig(_Strict):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://[^\s]+$")
    signing_secret: str = Field(pattern=_SECRET_KEY)


class LogChannelConfig(_Strict):
    type: Literal["log"]


ChannelConfig = Annotated[
    SlackChannelConfig
    | EmailChannelConfig
    | PagerDutyChannelConfig
    | WebhookChannelConfig
    | LogChannelConfig,
    Field(discriminator="type"),
]


class ReceiverConfig(_Strict):
    channels: tuple[ChannelConfig, ...] = Field(min_length=1)
    # Where a critical alert goes when one of the channels above could not take it.
    fallback: ChannelConfig | None = None


def _matchers(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        Matcher.parse(value)
    return values


class RouteConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receiver: str | None = None
    matchers: tuple[str, ...] = ()
    continue_matching: bool = Field(default=False, alias="continue")
    repeat_interval_seconds: int | None = Field(default=None, ge=60)
    send_resolved: bool | None = None
    routes: tuple[RouteConfig, ...] = ()

    _check_matchers = field_validator("matchers")(_matchers)


class InhibitRuleConfig(_Strict):
    source_matchers: tuple[str, ...] = Field(min_length=1)
    target_matchers: tuple[str, ...] = Field(min_length=1)
    equal: tuple[str, ...] = ()

    _check_source = field_validator("source_matchers")(_matchers)
    _check_target = field_validator("target_matchers")(_matchers)


class ReportsConfig(_Strict):
    # The billing report goes to this receiver's Slack, email, webhook and log channels.
    receiver: str


class RoutingConfig(_Strict):
    route: RouteConfig
    receivers: dict[str, ReceiverConfig] = Field(min_length=1)
    inhibit_rules: tuple[InhibitRuleConfig, ...] = ()
    # Without it the report goes to the root route's receiver, the one that takes everything else.
    reports: ReportsConfig | None = None
    repeat_interval_seconds: dict[Severity, int]
    # Alerts nobody can be asked about (business events) resolve themselves after this long.
    stale_after_seconds: int = Field(ge=300)

    @model_validator(mode="after")
    def _complete(self) -> RoutingConfig:
        if self.route.receiver is None:
            raise ValueError("route.receiver: the root route needs a receiver, the one nothing else matched")
        missing = set(Severity) - set(self.repeat_interval_seconds)
        if missing:
            raise ValueError(
                f"repeat_interval_seconds needs every severity, missing {sorted(s.value for s in missing)}"
            )
        if any(seconds < 60 for seconds in self.repeat_interval_seconds.values()):
            raise ValueError("repeat_interval_seconds must be at least 60 for every severity")
        for where, route in _walk(self.route, "route"):
            if route.receiver is not None and route.receiver not in self.receivers:
                raise ValueError(f"{where}.receiver: no receiver named {route.receiver!r}")
        if self.reports is not None and self.reports.receiver not in self.receivers:
            raise ValueError(f"reports.receiver: no receiver named {self.reports.receiver!r}")
        return self

    @property
    def report_receiver(self) -> str:
        return self.reports.receiver if self.reports else str(self.route.receiver)


def _walk(route: RouteConfig, where: str) -> list[tuple[str, RouteConfig]]:
    found = [(where, route)]
    for index, child in enumerate(route.routes):
        found += _walk(child, f"{where}.routes.{index}")
    return found


def parse_routing_config(text: str, source: str) -> RoutingConfig:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{source} is not valid JSON: {error}") from None
    try:
        return RoutingConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            where = ".".join(str(part) for part in detail["loc"])
            problems.append(f"{where}: {detail['msg']}" if where else detail["msg"])
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_shipped_routing() -> RoutingConfig:
    return parse_routing_config(SHIPPED_ROUTES.read_text(encoding="utf-8"), SHIPPED_ROUTES.name)


def channel_name(channel: Any) -> str:
    """The Channel dimension of the delivery metrics."""
    return channel.type
