"""Asynchronous invocations of the running function itself: how long jobs hand over their rest."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any


class SelfInvoker:
    def __init__(self, function_name: str) -> None:
        self._function_name = function_name

    @cached_property
    def _lambda(self) -> Any:
        from billwatch.core import aws

        return aws.client("lambda")

    def start(self, payload: dict[str, Any]) -> None:
        self._lambda.invoke(
            FunctionName=self._function_name, InvocationType="Event", Payload=json.dumps(payload).encode()
        )
