"""GET /admin/audit's query string from anyone, and the refused calls' actions from any path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billwatch.core.audit import (
    MAX_HISTORY_DAYS,
    MAX_HISTORY_PAGE_SIZE,
    QUERY_PARAMETERS,
    AuditedRoute,
    HistoryQuery,
    HistoryQueryError,
    Target,
    attempted,
)

NOW = 1_796_137_200  # 2026-12-01 15:00 UTC

moments = st.one_of(
    st.text(max_size=40),
    st.dates().map(str),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.datetimes().map(lambda moment: moment.isoformat() + "+14:00"),
)
parameters = st.dictionaries(
    st.sampled_from([*QUERY_PARAMETERS, "acount"]),
    st.one_of(st.text(max_size=60), moments, st.integers(-5, 10_000).map(str)),
)


@given(parameters)
def test_any_query_string_is_read_or_refused_naming_a_parameter_it_has(query: dict[str, str]) -> None:
    try:
        parsed = HistoryQuery.parse(query, NOW)
    except HistoryQueryError as refused:
        assert str(refused).split(":")[0] in query
        return
    assert parsed.start <= parsed.end and (parsed.end - parsed.start).days <= MAX_HISTORY_DAYS
    assert 1 <= parsed.limit <= MAX_HISTORY_PAGE_SIZE


ROUTES = (
    AuditedRoute("POST /admin/accounts/{account_id}/grants", "grant"),
    AuditedRoute("GET /admin/audit", "audit_read"),
)


def test_a_refused_call_is_named_by_its_route_and_anything_else_is_other() -> None:
    assert attempted("POST /admin/accounts/acct_1/grants", ROUTES) == ("grant", Target("account", "acct_1"))
    assert attempted("GET /admin/audit", ROUTES) == ("audit_read", Target("none"))
    assert attempted("POST /admin/accounts/acct_1/grants/x", ROUTES) == ("other", Target("none"))
    assert attempted("GET /admin/accounts/acct_1/grants", ROUTES) == ("other", Target("none"))


@given(st.text(max_size=200))
def test_only_an_account_id_gets_a_partition_of_its_own(account: str) -> None:
    scope = Target("account", account).scope
    assert scope == "stack" or (scope == f"account#{account}" and "#" not in account and "/" not in account)
