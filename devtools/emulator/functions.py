"""The function host: each Lambda function of the template, loaded in this process, invoked as Lambda does.

A function's code is its CodeUri + Handler, with its layers on ``sys.path`` and the environment the
template gives it (resolved against the local tables, queues and topics) plus the local overrides.
Invocations of one function are serialised, like a function with a single warm instance; the
function timeout is reported to the handler but not enforced. :meth:`FunctionHost.close` takes
back everything loading put into the process (``sys.path``, ``sys.modules``, ``os.environ``).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from devtools.emulator.settings import ACCOUNT_ID, REGION, EmulatorError
from devtools.template import (
    FUNCTION_TYPE,
    LAYER_TYPE,
    function_names,
    function_properties,
    resources_of_type,
)

log = logging.getLogger(__name__)

# Powertools' resolvers keep the request they are routing on a class attribute that every resolver
# in the process shares (Lambda runs one invocation per process). Two functions that route with
# them must not run at once here, or one would answer with the other's path and body.
POWERTOOLS_ROUTING_LOCK = threading.Lock()


class FunctionExited(Exception):
    """A handler ended its invocation with SystemExit or KeyboardInterrupt (Lambda's Runtime.ExitError)."""


class LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers and Powertools use."""

    def __init__(self, function_name: str, memory_limit_in_mb: int, timeout_seconds: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = int(memory_limit_in_mb)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + float(timeout_seconds)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class HostedFunction:
    logical_id: str
    module: ModuleType
    handler: Any
    memory_mb: int
    timeout_s: float
    # Lambda gives one invocation at a time to an instance; the handler's globals assume that.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def routes_with_powertools(self) -> bool:
        return any(isinstance(value, ApiGatewayResolver) for value in vars(self.module).values())

    def invoke(self, event: Any) -> Any:
        with self.lock:
            context = LambdaContext(self.logical_id, self.memory_mb, self.timeout_s)
            started = time.monotonic()
            try:
                result = self.handler(event, context)
            except (SystemExit, KeyboardInterrupt) as exited:
                # Lambda reports the invocation failed; here it must not end the thread serving it.
                raise FunctionExited(
                    f"{self.logical_id} exited: {type(exited).__name__} {exited}"
                ) from exited
            elapsed = time.monotonic() - started
        if elapsed > self.timeout_s:
            log.warning(
                "%s ran %.1f s, longer than its %s s timeout (Lambda would have stopped it)",
                self.logical_id,
                elapsed,
                self.timeout_s,
            )
        return result


class EnvPatch:
    """Sets/removes os.environ entries and remembers the originals for restore()."""

    def __init__(self) -> None:
        self._original: dict[str, str | None] = {}

    def apply(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            if name not in self._original:
                self._original[name] = os.environ.get(name)
            self._set(name, value)

    def restore(self) -> None:
        for name, value in self._original.items():
            self._set(name, value)
        self._original.clear()

    @staticmethod
    def _set(name: str, value: str | None) -> None:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# Records one invocation in AWS/Lambda: (function, succeeded, milliseconds).
InvocationRecorder = Callable[[str, bool, float], None]


class FunctionHost:
    """Every function of the template, loaded with its environment, invoked one at a time each."""

    def __init__(self, template: Mapping[str, Any], template_path: Path) -> None:
        self.template = template
        self.template_path = template_path
        self.functions: dict[str, HostedFunction] = {}
        self._function_names = function_names(template)
        self._env = EnvPatch()
        self._added_paths: list[str] = []
        self._added_modules: list[str] = []
        self._async: concurrent.futures.ThreadPoolExecutor | None = None
        self._record: InvocationRecorder | None = None

    def load_all(
        self, environment: Callable[[str], dict[str, str | None]], record: InvocationRecorder | None
    ) -> None:
        """Load every function; ``environment`` gives a function's, ``record`` counts invocations."""
        self._record = record
        self._async = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="emulator-async"
        )
        for logical_id in resources_of_type(self.template, FUNCTION_TYPE):
            self.functions[logical_id] = self._load(logical_id, environment(logical_id))

    def function_named(self, name: str) -> str | None:
        """The logical id of the function Lambda knows by ``name``: a name, a partial or full ARN."""
        short = name.split(":function:", 1)[-1].split(":", 1)[0]
        return self._function_names.get(short)

    def invoke(self, function: str, event: Any) -> Any:
        """Invoke a function's handler as Lambda would (a fresh context, one at a time), counted as
        Lambda counts it."""
        started = time.monotonic()
        succeeded = False
        try:
            result = self.functions[function].invoke(event)
            succeeded = True
            return result
        finally:
            if self._record is not None:
                self._record(function, succeeded, (time.monotonic() - started) * 1000)

    def invoke_async(self, function: str, event: Any) -> None:
        """An asynchronous invocation (InvocationType Event): Lambda queues it and runs it later."""
        assert self._async is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check

        def run() -> None:
            try:
                self.invoke(function, event)
            except Exception:
                log.exception("the asynchronous invocation of %s failed", function)

        self._async.submit(run)

    def drain(self) -> None:
        """Finish the queued asynchronous invocations and take no more."""
        if self._async is not None:
            self._async.shutdown(wait=True, cancel_futures=True)
            self._async = None

    def close(self) -> None:
        """Unload every function: what loading added to sys.modules, sys.path and os.environ goes."""
        self.drain()
        self.functions.clear()
        for name in self._added_modules:
            sys.modules.pop(name, None)
        self._added_modules.clear()
        for entry in self._added_paths:
            if entry in sys.path:
                sys.path.remove(entry)
        self._added_paths.clear()
        self._env.restore()

    def _load(self, logical_id: str, environment: dict[str, str | None]) -> HostedFunction:
        props = function_properties(self.template, logical_id)
        code_uri, handler_name = props.get("CodeUri"), props.get("Handler")
        if not isinstance(code_uri, str) or not isinstance(handler_name, str) or "." not in handler_name:
            raise EmulatorError(
                f"{logical_id}: needs a local CodeUri directory and a module.function Handler"
            )
        base = self.template_path.parent
        code_dir = (base / code_uri).resolve()
        module_path, _, attribute = handler_name.rpartition(".")
        source = code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
        if not source.is_file():
            raise EmulatorError(f"{logical_id}: handler module {source} does not exist")

        # What Lambda puts on sys.path: the function's code, then its layers (ContentUri[/python]).
        paths = [code_dir]
        layers = resources_of_type(self.template, LAYER_TYPE)
        for layer in props.get("Layers") or []:
            ref = layer.get("Ref") if isinstance(layer, dict) else None
            content = ((layers.get(str(ref)) or {}).get("Properties") or {}).get("ContentUri")
            if isinstance(content, str):
                layer_dir = (base / content).resolve()
                paths += [layer_dir / "python", layer_dir] if (layer_dir / "python").is_dir() else [layer_dir]
        for entry in reversed([str(path) for path in paths]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
                self._added_paths.append(entry)

        # The handler reads its settings at import (cold start), so the env goes first.
        self._env.apply(environment)
        name = f"_emulated_{logical_id}_{module_path.replace('.', '_')}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(name, source)
        if spec is None or spec.loader is None:
            raise EmulatorError(f"{logical_id}: cannot import {source}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        self._added_modules.append(name)
        spec.loader.exec_module(module)
        handler = getattr(module, attribute, None)
        if not callable(handler):
            raise EmulatorError(f"{logical_id}: {source} has no function {attribute!r}")
        function = HostedFunction(
            logical_id=logical_id,
            module=module,
            handler=handler,
            memory_mb=int(props.get("MemorySize", 128)),
            timeout_s=float(props.get("Timeout", 3)),
        )
        if function.routes_with_powertools:
            function.lock = POWERTOOLS_ROUTING_LOCK
        return function
