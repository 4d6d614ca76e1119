"""Alert ids in the admin API: every fingerprint has exactly one, and it leads back to it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billwatch.alerting.store import MalformedAlertId, alert_id, fingerprint_of

PATH_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


@given(st.text(min_size=1))
def test_every_fingerprint_has_a_path_safe_id_that_leads_back_to_it(fingerprint: str) -> None:
    id_ = alert_id(fingerprint)
    assert PATH_SAFE.match(id_) and fingerprint_of(id_) == fingerprint


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1))
def test_a_text_is_an_id_only_when_it_is_the_id_of_what_it_decodes_to(text: str) -> None:
    try:
        fingerprint = fingerprint_of(text)
    except MalformedAlertId:
        return
    assert alert_id(fingerprint) == text


@pytest.mark.parametrize("text", ["A", "QR", "_w", "QQ==", "a/b", ""])
def test_what_is_no_alert_id(text: str) -> None:
    with pytest.raises(MalformedAlertId, match="not an alert id"):
        fingerprint_of(text)
