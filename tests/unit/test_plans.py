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
