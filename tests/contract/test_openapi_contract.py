"""The OpenAPI document (devtools/openapi.py) says what the template routes and the handlers serve."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.openapi import document, operations
from devtools.template import http_routes
from tests.alert_events import dispatcher_environment
from tests.alert_receivers import alert_receivers
from tests.support import fake_aws_credentials, load_handler, moto_with_tables

# The functions behind the licensing and admin API that the document describes.
DESCRIBED = {"LicensingApiFunction", "AlertDispatchFunction", "ReconcileFunction"}


@pytest.fixture(scope="module")
def handlers(template, tmp_path_factory) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch, alert_receivers() as receivers:
        fake_aws_credentials(patch)
        patch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
        with moto_with_tables(template, patch) as tables:
            dispatcher_environment(patch, tables, receivers, tmp_path_factory.mktemp("openapi"))
            yield {"licensing": load_handler("licensing_api"), "alerts": load_handler("alert_dispatch")}


def served_path(app: Any, pattern: re.Pattern[str]) -> str:
    """A hand router's pattern as the template writes its path."""
    return pattern.pattern.replace(app._SEGMENT, "{account_id}").strip("^$")


@pytest.fixture(scope="module")
def openapi(handlers: dict[str, Any]) -> dict[str, Any]:
    return document(handlers["alerts"].app)


def test_the_document_has_exactly_the_templates_routes_of_the_api(template, openapi) -> None:
    routed = {(method, path) for method, path, function in http_routes(template) if function in DESCRIBED}
    assert operations(openapi) == routed


def test_the_hand_router_serves_exactly_the_documented_licensing_routes(template, handlers, openapi) -> None:
    app = handlers["licensing"]
    # The one admin route that names no account is matched before the table (Router.resolve).
    served = {("GET", "/admin/audit")} | {
        (method, served_path(app, pattern)) for method, pattern, _answer, _fields in app.ROUTES
    }
    licensing = {
        (method, path)
        for method, path, function in http_routes(template)
        if function == "LicensingApiFunction"
    }
    assert served == licensing
    assert served <= operations(openapi)


def test_a_documented_request_body_has_the_fields_the_handler_reads(handlers, openapi) -> None:
    app = handlers["licensing"]
    schemas = openapi["components"]["schemas"]
    for method, pattern, _answer, fields in app.ROUTES:
        path = served_path(app, pattern)
        body = openapi["paths"][path][method.lower()].get("requestBody")
        if fields is None:
            assert body is None, f"{method} {path} documents a body it does not read"
            continue
        reference = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert set(schemas[reference]["properties"]) == set(fields), f"{method} {path}"
