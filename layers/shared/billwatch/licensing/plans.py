"""The plan catalog: which Stripe price maps to which tier, and what each tier includes.

The first tier is the default one, for accounts without an entitling subscription. Tiers are
listed from lowest to highest, which is what makes a change of tier an upgrade or a downgrade.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billwatch.core.config import Settings

# Quotas count per billing period: the subscription's period for a paid tier, else the calendar
# month (UTC). "month" is the only period today; the key keeps the catalog format open.
PERIODS = ("month",)
FEATURE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# What a use past the quota gets: refused (today's behaviour), or allowed and billed as overage.
DENY, OVERAGE = "deny", "overage"
OVER_QUOTA_CHOICES = (DENY, OVERAGE)
# Stripe's limit on a meter event's event_name (POST /v1/billing/meter_events).
EVENT_NAME_MAX_LENGTH = 100


class PlanCatalogError(ValueError):
    """The catalog is invalid; the message names the offending entry."""


@dataclass(frozen=True)
class Feature:
    name: str
    quota: int | None  # None: a boolean feature, on or off
    period: str | None
    over_quota: str = DENY
    # Overage only: the used units (net of grants, as the quota) past which a use is refused; None: no cap.
    hard_cap: int | None = None
    event_name: str | None = None  # overage only: the Stripe meter's event name the overage is billed to

    @property
    def overage(self) -> bool:
        return self.over_quota == OVERAGE

    @property
    def ceiling(self) -> int | None:
        """The used units (net of grants) a use may reach: the quota, the hard cap, or None for none."""
        if self.quota is None or not self.overage:
            return self.quota
        return self.hard_cap


@dataclass(frozen=True)
class Tier:
    name: str
    rank: int
    price_lookup_keys: tuple[str, ...]
    price_metadata_tier: str | None
    features: Mapping[str, Feature]


@dataclass(frozen=True)
class PlanCatalog:
    tiers: tuple[Tier, ...]

    @property
    def default_tier(self) -> Tier:
        return self.tiers[0]

    def tier(self, name: str) -> Tier:
        tier = self.find_tier(name)
        if tier is None:
            raise KeyError(name)
        return tier

    def find_tier(self, name: str | None) -> Tier | None:
        """None for a name the catalog no longer has (stored data can outlive a tier)."""
        return next((tier for tier in self.tiers if tier.name == name), None)

    def tier_for_price(self, lookup_key: str | None, metadata: Mapping[str, Any] | None) -> Tier:
        """A price's lookup_key decides; else its metadata.tier; else the default tier."""
        for tier in self.tiers:
            if lookup_key and lookup_key in tier.price_lookup_keys:
                return tier
        metadata_tier = str(metadata.get("tier", "") if isinstance(metadata, Mapping) else "").strip().lower()
        for tier in self.tiers:
            if metadata_tier and metadata_tier == tier.price_metadata_tier:
                return tier
        return self.default_tier


def _feature(tier_name: str, name: str, spec: Any) -> Feature:
    where = f"tiers[{tier_name}].features.{name}"
    if not FEATURE_NAME.match(name):
        raise PlanCatalogError(f"{where}: a feature name must be lower-case letters, digits and _")
    if not isinstance(spec, dict):
        raise PlanCatalogError(f"{where} must be an object")
    unknown = set(spec) - {"quota", "period", "over_quota", "hard_cap", "event_name"}
    if unknown:
        raise PlanCatalogError(f"{where} has unknown keys {sorted(unknown)}")
    quota = spec.get("quota")
    if quota is None:
        for key in ("period", "over_quota", "hard_cap", "event_name"):
            if key in spec:
                raise PlanCatalogError(f"{where}.{key} is only allowed with a quota")
        return Feature(name, None, None)
    if not _count(quota):
        raise PlanCatalogError(f"{where}.quota must be a non-negative integer, got {quota!r}")
    period = spec.get("period", "month")
    if period not in PERIODS:
        raise PlanCatalogError(f"{where}.period must be one of {list(PERIODS)}, got {period!r}")
    over_quota = spec.get("over_quota", DENY)
    if over_quota not in OVER_QUOTA_CHOICES:
        raise PlanCatalogError(
            f"{where}.over_quota must be one of {list(OVER_QUOTA_CHOICES)}, got {over_quota!r}"
        )
    if over_quota == DENY:
        for key in ("hard_cap", "event_name"):
            if key in spec:
                raise PlanCatalogError(f'{where}.{key} is only allowed with over_quota "overage"')
        return Feature(name, quota, period)
    hard_cap = spec.get("hard_cap")
    if hard_cap is not None and (not _count(hard_cap) or hard_cap <= quota):
        raise PlanCatalogError(
            f"{where}.hard_cap must be an integer above the quota ({quota}), got {hard_cap!r}"
        )
    event_name = spec.get("event_name")
    if not _event_name(event_name):
        raise PlanCatalogError(
            f"{where}.event_name must be a Stripe meter event name: 1 to {EVENT_NAME_MAX_LENGTH} printable "
            f"characters without spaces at either end, got {event_name!r}"
        )
    return Feature(name, quota, period, over_quota, hard_cap, event_name)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _event_name(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= EVENT_NAME_MAX_LENGTH
        and value.isprintable()
        and value == value.strip()
    )


def parse_catalog(document: Any) -> PlanCatalog:
    if not isinstance(document, dict) or not isinstance(document.get("tiers"), list) or not document["tiers"]:
        raise PlanCatalogError("the catalog must be an object with a non-empty 'tiers' list")
    tiers: list[Tier] = []
    owners: dict[str, str] = {}
    for rank, spec in enumerate(document["tiers"]):
        if not isinstance(spec, dict):
            raise PlanCatalogError(f"tiers[{rank}] must be an object")
        name = spec.get("name")
        if not isinstance(name, str) or not name.isupper() or not name.replace("_", "").isalnum():
            raise PlanCatalogError(f"tiers[{rank}].name must be an upper-case identifier, got {name!r}")
        unknown = set(spec) - {"name", "price_lookup_keys", "price_metadata_tier", "features"}
        if unknown:
            raise PlanCatalogError(f"tiers[{name}] has unknown keys {sorted(unknown)}")
        lookup_keys = spec.get("price_lookup_keys", [])
        if not isinstance(lookup_keys, list) or not all(isinstance(k, str) and k for k in lookup_keys):
            raise PlanCatalogError(f"tiers[{name}].price_lookup_keys must be a list of strings")
        metadata_tier = spec.get("price_metadata_tier")
        if metadata_tier is not None and (not isinstance(metadata_tier, str) or not metadata_tier):
            raise PlanCatalogError(f"tiers[{name}].price_metadata_tier must be a non-empty string")
        if rank == 0 and (lookup_keys or metadata_tier):
            raise PlanCatalogError(f"tiers[{name}] is the default tier and cannot be matched by a price")
        for claim in [f"name {name}", *(f"lookup key {k}" for k in lookup_keys)] + (
            [f"metadata tier {metadata_tier.lower()}"] if metadata_tier else []
        ):
            if claim in owners:
                raise PlanCatalogError(f"tiers[{name}]: {claim} is already used by tiers[{owners[claim]}]")
            owners[claim] = name
        features = spec.get("features", {})
        if not isinstance(features, dict):
            raise PlanCatalogError(f"tiers[{name}].features must be an object")
        tiers.append(
            Tier(
                name=name,
                rank=rank,
                price_lookup_keys=tuple(lookup_keys),
                price_metadata_tier=metadata_tier.lower() if metadata_tier else None,
                features={key: _feature(name, key, value) for key, value in features.items()},
            )
        )
    _check_meters(tiers)
    return PlanCatalog(tuple(tiers))


def _check_meters(tiers: list[Tier]) -> None:
    """One meter bills one feature: two features on one event name would add up in one Stripe meter."""
    billed: dict[str, tuple[str, str]] = {}
    for tier in tiers:
        for feature in tier.features.values():
            if feature.event_name is None:
                continue
            first = billed.setdefault(feature.event_name, (tier.name, feature.name))
            if first[1] != feature.name:
                raise PlanCatalogError(
                    f"tiers[{tier.name}].features.{feature.name}.event_name {feature.event_name!r} "
                    f"already bills tiers[{first[0]}].features.{first[1]}"
                )


def load_catalog_text(text: str, source: str) -> PlanCatalog:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanCatalogError(f"{source} is not valid JSON: {exc}") from None
    try:
        return parse_catalog(document)
    except PlanCatalogError as exc:
        raise PlanCatalogError(f"{source}: {exc}") from None


def shipped_catalog_text() -> str:
    return Path(__file__).with_name("plans.json").read_text(encoding="utf-8")


def load_plan_catalog(settings: Settings) -> PlanCatalog:
    if settings.plan_catalog_path:
        with open(settings.plan_catalog_path, encoding="utf-8") as catalog_file:
            return load_catalog_text(catalog_file.read(), settings.plan_catalog_path)
    if settings.plan_catalog_parameter:
        from billwatch.core import (
            parameters as aws_parameters,  # only deployments that override the catalog need it
        )

        text = aws_parameters.plan_catalog_text(settings)
        return load_catalog_text(text, f"SSM parameter {settings.plan_catalog_parameter}")
    return load_catalog_text(shipped_catalog_text(), "the shipped plans.json")
