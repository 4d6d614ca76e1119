"""The process's botocore session: a client is made from its own service's directory alone, and
botocore's answers about services stay the same."""

from __future__ import annotations

import os
from pathlib import Path

import botocore.session
import pytest
from botocore.exceptions import UnknownServiceError

from billwatch.core import aws


def _unshared(session: botocore.session.Session) -> botocore.session.Session:
    # tests.support has every loader share what it parsed; these tests look at what one does alone.
    session.get_component("data_loader")._cache = {}
    return session


@pytest.fixture
def session() -> botocore.session.Session:
    return _unshared(aws.botocore_session.__wrapped__())  # a new one: the process's is cached


def _listed_directories(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    listed: list[str] = []
    real_listdir = os.listdir

    def counting_listdir(path: str) -> list[str]:
        listed.append(str(path))
        return real_listdir(path)

    monkeypatch.setattr("botocore.loaders.os.listdir", counting_listdir)
    return listed


def test_making_a_client_reads_only_its_own_service_directory(
    session: botocore.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = _listed_directories(monkeypatch)
    client = session.create_client("dynamodb", region_name="us-east-1")
    assert client.meta.service_model.service_name == "dynamodb"
    assert listed, "the model was found without looking at all"
    assert {Path(path).name for path in listed} == {"dynamodb"}, listed


def test_botocore_alone_lists_every_service_to_make_the_same_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the loader saves: if botocore stops listing, the loader is no longer needed.
    listed = _listed_directories(monkeypatch)
    _unshared(botocore.session.get_session()).create_client("dynamodb", region_name="us-east-1")
    assert len(listed) > 100


def test_an_unknown_service_is_still_refused_with_the_known_names(session: botocore.session.Session) -> None:
    with pytest.raises(UnknownServiceError) as refused:
        session.create_client("dynamodbb", region_name="us-east-1")
    assert "dynamodb" in str(refused.value)


def test_every_service_is_still_listed_for_those_who_ask(session: botocore.session.Session) -> None:
    available = list(session.get_available_services())
    assert {"dynamodb", "sns", "cloudwatch", "secretsmanager"} <= set(available)
    assert available == _unshared(botocore.session.get_session()).get_available_services()


def test_a_data_path_of_the_environment_is_still_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    loader = aws.botocore_session.__wrapped__().get_component("data_loader")
    assert str(tmp_path) in loader.search_paths
    assert loader.search_paths == botocore.session.get_session().get_component("data_loader").search_paths
