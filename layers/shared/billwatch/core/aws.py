"""One botocore session per process, shared by every AWS client billwatch makes.

A botocore session caches what it reads from botocore's data files (service models, endpoint
rules, partitions), so clients made from one session read each file once; libraries that are left
to themselves (pynamodb per model, Powertools per utility) each open a session of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, overload

import botocore.session
from botocore.exceptions import DataNotFoundError
from botocore.loaders import Loader, create_loader

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config


class _ServicesWithModel(Sequence[str]):
    """The services that have a model of one type, as ``Loader.list_available_services`` answers,
    but asked about one service at a time; listed in full only when read as a sequence."""

    def __init__(self, loader: _OneServiceLoader, type_name: str) -> None:
        self._loader = loader
        self._type_name = type_name

    def __contains__(self, service_name: object) -> bool:
        try:
            # Cached by the loader: the version lookup that follows reads the same answer.
            self._loader.list_api_versions(service_name, self._type_name)
        except DataNotFoundError:
            return False
        return True

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._loader.every_service_with(self._type_name)[index]

    def __len__(self) -> int:
        return len(self._loader.every_service_with(self._type_name))


class _OneServiceLoader(Loader):
    """botocore's loader, except that making a client looks only in its own service's directory.

    To check that a service exists, botocore lists every service's directory (about 440 of them,
    with their API versions) once per model type, which costs a cold start 20 ms or more: more
    than loading the DynamoDB model itself. Listing every service stays available to callers
    that iterate (``get_available_services``, the unknown-service error message).
    """

    def list_available_services(self, type_name: str) -> _ServicesWithModel:  # type: ignore[override]
        return _ServicesWithModel(self, type_name)

    def every_service_with(self, type_name: str) -> list[str]:
        listed: list[str] = super().list_available_services(type_name)
        return listed


@cache
def botocore_session() -> botocore.session.Session:
    session = botocore.session.get_session()
    standard = create_loader(session.get_config_variable("data_path"))  # AWS_DATA_PATH, as botocore reads it
    loader = _OneServiceLoader(extra_search_paths=standard.search_paths, include_default_search_paths=False)
    session.register_component("data_loader", loader)
    return session


@cache
def boto3_session() -> boto3.Session:
    """The boto3 session over ``botocore_session()``, for the libraries that take one."""
    import boto3

    return boto3.Session(botocore_session=botocore_session())


def client(service_name: str, config: Config | None = None) -> Any:
    """A boto3 client on the process's session (boto3 has no types here, hence Any)."""
    return boto3_session().client(service_name, config=config)
