from __future__ import annotations

import copy
import json

import pytest

from billwatch.licensing.plans import PlanCatalogError, load_catalog_text, parse_catalog, shipped_catalog_text

SHIPPED = json.loads(shipped_catalog_text())


def test_shipped_catalog() -> None:
    catalog = parse_catalog(SHIPPED)
    assert [t.name for t in catalog.tiers] == ["FREE", "PRO"]
    assert catalog.default_tier.name == "FREE"
    free, pro = catalog.tiers
    assert (free.features["api_calls"].quota, free.features["exports"].quota) == (1000, 10)
    assert (pro.features["api_calls"].quota, pro.features["exports"].quota) == (100_000, 1000)
    assert pro.features["sso"].quota is None and "sso" not in free.features
    assert catalog.tier_for_price("pro_monthly", None).name == "PRO"
    assert catalog.tier_for_price("pro_yearly", {}).name == "PRO"
    assert catalog.tier_for_price(None, {"tier": "pro"}).name == "PRO"
    assert catalog.tier_for_price("unknown", {"tier": "gold"}).name == "FREE"


def broken(mutate) -> dict:
    document = copy.deepcopy(SHIPPED)
    mutate(document)
    return document


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(tiers=[]), "non-empty 'tiers'"),
        (lambda d: d["tiers"][1].update(name="pro"), "upper-case"),
        (lambda d: d["tiers"][0].update(price_lookup_keys=["free"]), "default tier"),
        (lambda d: d["tiers"].append({"name": "PRO"}), "name PRO is already used"),
        (
            lambda d: d["tiers"].append({"name": "TEAM", "price_lookup_keys": ["pro_monthly"]}),
            r"lookup key pro_monthly is already used by tiers\[PRO\]",
        ),
        (
            lambda d: d["tiers"][1]["features"]["exports"].update(quota=-1),
            r"tiers\[PRO\].features.exports.quota",
        ),
        (lambda d: d["tiers"][1]["features"]["exports"].update(quota="lots"), "exports.quota"),
        (lambda d: d["tiers"][1]["features"]["exports"].update(period="fortnight"), "exports.period"),
        (lambda d: d["tiers"][1]["features"].update(sso={"period": "month"}), "sso.period"),
        (lambda d: d["tiers"][1].update(colour="gold"), "unknown keys"),
    ],
)
def test_a_bad_entry_names_itself(mutate, message: str) -> None:
    with pytest.raises(PlanCatalogError, match=message):
        parse_catalog(broken(mutate))


def test_invalid_json_names_the_source() -> None:
    with pytest.raises(PlanCatalogError, match=r"custom\.json is not valid JSON"):
        load_catalog_text("{", "custom.json")


def overage(**spec) -> dict:
    return broken(lambda d: d["tiers"][1]["features"]["exports"].update(spec))


def test_overage_is_opt_in_per_tier_and_feature() -> None:
    catalog = parse_catalog(overage(over_quota="overage", event_name="exports_overage", hard_cap=5000))
    free, pro = catalog.tiers
    exports = pro.features["exports"]
    assert (exports.overage, exports.hard_cap, exports.event_name, exports.ceiling) == (
        True,
        5000,
        "exports_overage",
        5000,
    )
    uncapped = parse_catalog(overage(over_quota="overage", event_name="e")).tiers[1].features["exports"]
    assert uncapped.overage and uncapped.ceiling is None
    assert not free.features["exports"].overage and free.features["exports"].ceiling == 10
    assert parse_catalog(overage(over_quota="deny")).tiers[1].features["exports"].ceiling == 1000


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"over_quota": "bill"}, r"tiers\[PRO\].features.exports.over_quota must be one of"),
        ({"over_quota": "overage"}, r"exports.event_name must be a Stripe meter event name"),
        ({"over_quota": "overage", "event_name": ""}, "exports.event_name"),
        ({"over_quota": "overage", "event_name": "x" * 101}, "exports.event_name"),
        ({"over_quota": "overage", "event_name": " padded"}, "exports.event_name"),
        ({"over_quota": "overage", "event_name": "tab\there"}, "exports.event_name"),
        ({"over_quota": "overage", "event_name": 7}, "exports.event_name"),
        ({"over_quota": "overage", "event_name": "e", "hard_cap": 1000}, "exports.hard_cap must be"),
        ({"over_quota": "overage", "event_name": "e", "hard_cap": True}, "exports.hard_cap"),
        ({"hard_cap": 2000}, r"exports.hard_cap is only allowed with over_quota \"overage\""),
        ({"event_name": "e"}, r"exports.event_name is only allowed with over_quota"),
    ],
)
def test_a_bad_overage_entry_names_itself(spec, message: str) -> None:
    with pytest.raises(PlanCatalogError, match=message):
        parse_catalog(overage(**spec))


def test_an_overage_setting_needs_a_quota() -> None:
    with pytest.raises(PlanCatalogError, match=r"sso.over_quota is only allowed with a quota"):
        parse_catalog(broken(lambda d: d["tiers"][1]["features"].update(sso={"over_quota": "overage"})))


def test_one_meter_bills_one_feature() -> None:
    def two_features_one_meter(document: dict) -> None:
        features = document["tiers"][1]["features"]
        features["exports"].update(over_quota="overage", event_name="units")
        features["api_calls"].update(over_quota="overage", event_name="units")

    with pytest.raises(PlanCatalogError, match=r"'units' already bills tiers\[PRO\].features.api_calls"):
        parse_catalog(broken(two_features_one_meter))
    # The same feature on two tiers may bill the same meter.
    same = broken(lambda d: d["tiers"][0]["features"]["exports"].update(over_quota="overage", event_name="u"))
    same["tiers"][1]["features"]["exports"].update(over_quota="overage", event_name="u")
    assert parse_catalog(same).tiers[1].features["exports"].event_name == "u"
