"""One botocore session per process, shared by every AWS client billwatch makes.

A botocore session caches what it reads from botocore's data files (service models, endpoint
rules, partitions), so clients made from one session read each file once; libraries that are left
to themselves (pynamodb per model, Powertools per utility) each open a session of their own.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import botocore.session

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config


@cache
def botocore_session() -> botocore.session.Session:
    return botocore.session.get_session()


@cache
def boto3_session() -> boto3.Session:
    """The boto3 session over ``botocore_session()``, for the libraries that take one."""
    import boto3

    return boto3.Session(botocore_session=botocore_session())


def client(service_name: str, config: Config | None = None) -> Any:
    """A boto3 client on the process's session (boto3 has no types here, hence Any)."""
    return boto3_session().client(service_name, config=config)
