"""The pynamodb models' keys and secondary indexes are their tables' in template.yaml: a query on an
index the template lacks (or keys it differently, or projects less) fails only once deployed."""

from __future__ import annotations

from typing import Any

import pytest
from pynamodb.models import Model

from billwatch.core.models import AuditRecord, BillingAccount, UsagePeriodRecord

TABLES: dict[type[Model], str] = {
    BillingAccount: "BillingStateTable",
    UsagePeriodRecord: "UsageHistoryTable",
    AuditRecord: "AuditTable",
}


def _keys(schema: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(key["AttributeName"], key["KeyType"]) for key in schema}


def _projection(projection: dict[str, Any]) -> tuple[str, frozenset[str]]:
    return projection["ProjectionType"], frozenset(projection.get("NonKeyAttributes", ()))


@pytest.mark.parametrize("model", list(TABLES), ids=[model.__name__ for model in TABLES])
def test_a_models_keys_and_indexes_are_its_tables(template: dict[str, Any], model: type[Model]) -> None:
    table = template["Resources"][TABLES[model]]["Properties"]
    schema = model._get_schema()
    assert _keys(schema["key_schema"]) == _keys(table["KeySchema"])
    types = {column["AttributeName"]: column["AttributeType"] for column in table["AttributeDefinitions"]}
    for definition in schema["attribute_definitions"]:
        assert types.get(definition["AttributeName"]) == definition["AttributeType"], definition
    declared = {
        index["IndexName"]: (_keys(index["KeySchema"]), _projection(index["Projection"]))
        for index in table.get("GlobalSecondaryIndexes", [])
    }
    modelled = {
        index["index_name"]: (_keys(index["key_schema"]), _projection(index["projection"]))
        for index in schema["global_secondary_indexes"]
    }
    assert modelled == declared
