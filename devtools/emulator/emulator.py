"""LocalEmulator: the whole service on moto on loopback, its functions hosted here, its HTTP API in front.

    with LocalEmulator().start(port=0) as emulator:   # port 0 = an ephemeral port
        urllib.request.urlopen(emulator.url + "/webhooks/stripe", ...)
        boto3.client("dynamodb", endpoint_url=emulator.moto_endpoint, ...)

``start()`` brings up moto's server, the template's tables, queues, topics and alarms, the
functions (:mod:`devtools.emulator.functions`), the schedules and the HTTP fronts
(:mod:`devtools.emulator.http_front`). ``stop()`` (or leaving the ``with`` block) shuts them down
and restores ``os.environ``, ``sys.path``, ``sys.modules``, ``sys.stdout`` and moto as they were.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from werkzeug.serving import BaseWSGIServer

from devtools import local_persistence
from devtools.emulator.functions import EnvPatch, FunctionHost, HostedFunction
from devtools.emulator.http_front import InternalFront, PublicFront, Route, serve
from devtools.emulator.settings import (
    ADMIN_ENV,
    DEFAULT_PORT,
    DEFAULT_STAGE,
    FAKE_CREDENTIAL,
    HISTORY_LENGTH,
    HOST,
    LOCAL_ALERT_ROUTES,
    METRICS_NAMESPACE,
    PAGERDUTY_ENV,
    PAGERDUTY_URL_ENV,
    REGION,
    SAM_LOCAL_WEBHOOK_SECRET,
    SECRET_ENV,
    SLACK_ENV,
    EmulatorError,
    Settings,
)
from devtools.local_alarms import AlarmEvent, AlarmWatcher
from devtools.local_deployment import deployment_deliveries
from devtools.local_metrics import LocalMetrics, install_stdout_tap
from devtools.local_schedules import FiredSchedule, LocalClock, ManualClock, Scheduler
from devtools.local_sns import Delivery, TopicDeliveries
from devtools.signing import LOCAL_DEV_SECRET
from devtools.template import (
    FUNCTION_TYPE,
    HTTP_API_TYPE,
    REPO_ROOT,
    ScheduleEvent,
    create_tables,
    deployed_resources,
    function_environment,
    http_routes,
    iam_routes,
    load_template,
    parameter_values,
    resources_of_type,
    schedules,
)

log = logging.getLogger(__name__)

QUEUE_TYPE = "AWS::SQS::Queue"
# Variables from the caller's shell that would point the handlers (or botocore) somewhere other
# than the embedded moto server, or at a second webhook secret source (load_settings wants one).
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "WEBHOOK_SECRET_ID",
    "WEBHOOK_SECRET_PARAMETER",
)
_CLEARED_ENV_PREFIXES = ("AWS_ENDPOINT_URL_",)  # service-specific endpoints win over AWS_ENDPOINT_URL
# The tables every function is told about, whatever the template's own Environment says.
_TABLE_ENV = {"BILLING_TABLE_NAME": "BillingStateTable", "IDEMPOTENCY_TABLE_NAME": "IdempotencyTable"}
_LOOPBACK_NO_PROXY = ("127.0.0.1", "localhost")


def _no_proxy_with_loopback(current: str | None) -> str:
    entries = [entry.strip() for entry in (current or "").split(",") if entry.strip()]
    return ",".join(entries + [host for host in _LOOPBACK_NO_PROXY if host not in entries])


def _event_summary(body: bytes) -> dict[str, Any]:
    """The Stripe event id and type of a webhook body, when it has them (it may be anything)."""
    from billwatch.core import strict_json  # the layer is on the path once the emulator has started

    try:
        event = strict_json.loads(body)
    except strict_json.JsonRefused:
        return {}
    if not isinstance(event, dict):
        return {}
    return {key: event[key] for key in ("id", "type") if isinstance(event.get(key), str)}


def _answer_summary(answer: bytes) -> dict[str, Any]:
    """The outcome a handler answered with (applied, duplicate, stale, ...) or the problem it named."""
    try:
        body = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(body, dict):
        return {}
    return {
        key: body[key] for key in ("outcome", "error", "reason", "message") if isinstance(body.get(key), str)
    }


class LocalEmulator:
    """moto on loopback + the template's functions hosted here + its HTTP API routes in front."""

    _active: ClassVar[LocalEmulator | None] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        template_path: str | Path = "template.yaml",
        *,
        webhook_secret: str | None = None,
        env: Mapping[str, str | None] | None = None,
        table_prefix: str | None = None,
        caller_arn: str | None = None,
        speed: float | None = None,
        moto_port: int | None = None,
        autorun: bool = True,
        data_dir: str | Path | None = None,
        parameters: Mapping[str, Any] | None = None,
        clock: LocalClock | ManualClock | None = None,
    ) -> None:
        """``webhook_secret`` defaults to ``$STRIPE_WEBHOOK_SECRET``, else the local dev secret.
        ``env`` holds extra overrides for the functions' environment (``None`` removes a variable).
        ``table_prefix``, ``caller_arn``, ``speed``, ``moto_port`` and ``data_dir`` as in
        :class:`~devtools.emulator.settings.Settings` (each defaults to its variable).
        ``parameters`` override the template's parameter defaults (schedules, alarms, environment);
        ``clock`` replaces the running clock (a ManualClock for replays).
        With ``autorun`` false the schedules and the alarm evaluation do not run on their own: a
        test or a replay drives them with :meth:`step`.
        """
        path = Path(template_path)
        if not path.is_absolute() and not path.exists():
            path = REPO_ROOT / path
        self.template_path = path.resolve()
        self.template = load_template(self.template_path)
        self.settings = Settings.read(
            webhook_secret=webhook_secret,
            caller_arn=caller_arn,
            speed=speed,
            moto_port=moto_port,
            table_prefix=table_prefix,
            data_dir=data_dir,
        )
        self.secret_source = self.settings.secret_source
        self.caller_arn, self.caller_source = self.settings.caller_arn, self.settings.caller_source
        self.admin_role_arns, self.admin_source = self.settings.admin_role_arns, self.settings.admin_source
        self.data_dir = self.settings.data_dir
        self._extra_env = dict(env or {})
        self.routes: list[tuple[str, str, str]] = http_routes(self.template)
        self.iam_routes: set[tuple[str, str, str]] = iam_routes(self.template)
        self._routes = sorted(
            (Route(*route, iam_auth=route in self.iam_routes) for route in self.routes), key=Route.specificity
        )
        self.stage = parameter_values(self.template).get("Stage", DEFAULT_STAGE)
        self.parameters = dict(parameters or {})
        self.clock = clock or LocalClock(self.settings.speed)
        deployed = deployed_resources(self.template, self.parameters)
        self.schedules: list[ScheduleEvent] = [
            s for s in schedules(self.template, self.parameters) if s.function in deployed
        ]
        self.undeployed = sorted(set(resources_of_type(self.template, FUNCTION_TYPE)) - deployed)
        self.api_id = next(iter(resources_of_type(self.template, HTTP_API_TYPE)), "HttpApi")
        self.queue_urls: dict[str, str] = {}
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_LENGTH)
        self.fired: collections.deque[FiredSchedule] = collections.deque(maxlen=HISTORY_LENGTH)
        self.alarm_events: collections.deque[AlarmEvent] = collections.deque(maxlen=HISTORY_LENGTH)
        self.deliveries: collections.deque[Delivery] = collections.deque(maxlen=HISTORY_LENGTH)
        self.alerts_sent: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_LENGTH)
        self.metrics: LocalMetrics | None = None
        self.topics: TopicDeliveries | None = None
        self.alarms: AlarmWatcher | None = None
        self.scheduler: Scheduler | None = None
        self.restored: dict[str, int] = {}
        self.url = ""
        self.internal_url = ""
        self.moto_endpoint = ""
        self.table_names: dict[str, str] = {}
        self.host = FunctionHost(self.template, self.template_path)
        self._autorun = autorun
        self._routes_dir: str | None = None
        self._alert_env: dict[str, str] = {}
        self._serving = False
        self._moto: Any = None
        self._http: BaseWSGIServer | None = None
        self._internal_http: BaseWSGIServer | None = None
        self._server_threads: list[tuple[BaseWSGIServer, threading.Thread]] = []
        self._env = EnvPatch()
        self._cloudwatch: Any = None
        # What start() patched outside this object (sys.stdout, moto), undone last-in first-out.
        self._patches = contextlib.ExitStack()

    def __repr__(self) -> str:  # never shows the secret
        return f"LocalEmulator(url={self.url!r}, moto_endpoint={self.moto_endpoint!r})"

    @property
    def functions(self) -> dict[str, HostedFunction]:
        return self.host.functions

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        """The active signing secret(s), to sign test requests with (never print them)."""
        return tuple(part.strip() for part in self.settings.secret.split(",") if part.strip())

    @property
    def uses_local_dev_secret(self) -> bool:
        return self.settings.secret == LOCAL_DEV_SECRET

    @property
    def running(self) -> bool:
        return bool(self._server_threads)

    # -------------------------------------------------------------------- lifecycle

    def start(self, port: int = DEFAULT_PORT) -> LocalEmulator:
        """Start moto and serve the routes on 127.0.0.1:``port`` (0 = an ephemeral port).

        One emulator per process at a time: the environment and the handlers' module-level state
        (cached clients, bound table names) are process-wide.
        """
        with LocalEmulator._active_lock:
            if LocalEmulator._active is not None:
                raise EmulatorError("a LocalEmulator is already running in this process; stop it first")
            LocalEmulator._active = self
        try:
            # Bind first: a port in use fails fast, and early requests wait in the backlog.
            self._http = serve(PublicFront(self), port)
            self._internal_http = serve(InternalFront(self), 0)
            self.internal_url = f"http://{HOST}:{self._internal_http.server_address[1]}"
            self._start_moto()
            self.table_names = create_tables(
                self.client("dynamodb"), self.template, prefix=self.settings.table_prefix
            )
            sqs = self.client("sqs")
            for logical_id in resources_of_type(self.template, QUEUE_TYPE):
                queue_name = f"{self.settings.table_prefix}{logical_id}"
                self.queue_urls[logical_id] = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
            self.client("secretsmanager").create_secret(
                Name=SAM_LOCAL_WEBHOOK_SECRET, SecretString=self.settings.secret
            )
            metrics = self._start_cloudwatch()
            if self.data_dir is not None:
                self.restored = local_persistence.restore(
                    self.data_dir, self.client("dynamodb"), self.table_names, self._cloudwatch, metrics.store
                )
            topics = self.topics = TopicDeliveries(
                self.template, self.client("sns"), self.client("sqs"), self.invoke, self.deliveries.append
            )
            self._local_alert_channels()
            self.host.load_all(self.function_env, self._record_invocation)
            # After the handlers' imports: a log handler made at import keeps the sys.stdout it saw,
            # and that must not be a wrapper that stop() takes away.
            self._patches.callback(install_stdout_tap(metrics.on_line))
            self._observe_alerts()
            for function, event in deployment_deliveries(self.template, self.clock.now()):
                self.invoke(function, event)  # a stack that starts was just deployed: its marker
            self.alarms = AlarmWatcher(
                self.template,
                metrics,
                self.clock,
                self._cloudwatch,
                topics.publish,
                self.alarm_events.append,
                self.parameters,
            )
            self.alarms.create_stand_ins(topics.topic_arns)
            self.scheduler = Scheduler(self.schedules, self.invoke, self.clock, self.fired.append)
            topics.start()
            if self._autorun:
                self.alarms.start()
                self.scheduler.start()
            for server, name in ((self._http, "emulator-http"), (self._internal_http, "emulator-internal")):
                # stop() waits for the loop to look up from select(): at werkzeug's 0.5 s that was
                # half a second of every stop, and the suite stops a stack some thirty times.
                thread = threading.Thread(
                    target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
                )
                thread.start()
                self._server_threads.append((server, thread))
        except BaseException:
            self.stop()
            raise
        self.url = f"http://{HOST}:{self._http.server_address[1]}"
        self._serving = True
        return self

    def step(self) -> list[AlarmEvent]:
        """One local minute as `make run` lives it, at the clock's now: what fell due runs, the
        alarms are judged, and the notifications they published are delivered. Returns the alarms'
        changes."""
        if self.scheduler is None or self.alarms is None or self.topics is None:
            raise EmulatorError("the emulator is not running: start() it first")
        now = self.clock.now()
        self.scheduler.fire_due(now)
        changes = self.alarms.evaluate(now)
        self.topics.drain()
        return changes

    def stop(self) -> None:
        """Stop both servers and undo every change start() made to the process. Idempotent."""
        # The parts that invoke functions first, while moto still answers them.
        for part in (self.scheduler, self.alarms, self.topics):
            if part is not None:
                part.stop()
        self.scheduler = self.alarms = self.topics = None
        self.host.drain()
        if self._serving and self.data_dir is not None and self.metrics is not None:
            try:
                saved = local_persistence.save(
                    self.data_dir, self.client("dynamodb"), self.table_names, self.metrics.store
                )
                log.info("saved the local data to %s: %s", self.data_dir, saved)
            except Exception:
                log.exception("could not save the local data to %s", self.data_dir)
        self._serving = False
        for server, thread in self._server_threads:
            server.shutdown()
            thread.join(timeout=10)
        self._server_threads.clear()
        for bound in (self._http, self._internal_http):
            if bound is not None:
                bound.server_close()
        self._http = self._internal_http = None
        self._patches.close()
        self._cloudwatch = None
        self.metrics = None
        if self._routes_dir is not None:
            shutil.rmtree(self._routes_dir, ignore_errors=True)
            self._routes_dir = None
        self._stop_moto()
        self.host.close()
        self._env.restore()
        with LocalEmulator._active_lock:
            if LocalEmulator._active is self:
                LocalEmulator._active = None

    def __enter__(self) -> LocalEmulator:
        return self if self.running else self.start(port=0)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- the pieces

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        from devtools.moto_patches import install_item_rollback_transactions, install_parse_once

        self._patches.callback(install_item_rollback_transactions())
        self._patches.callback(install_parse_once())
        self._moto = ThreadedMotoServer(ip_address=HOST, port=self.settings.moto_port, verbose=False)
        self._moto.start()
        host, moto_port = self._moto.get_host_and_port()
        self.moto_endpoint = f"http://{host}:{moto_port}"
        cleared = {
            name: None
            for name in os.environ
            if any(name.startswith(prefix) for prefix in _CLEARED_ENV_PREFIXES)
        }
        self._env.apply(
            {
                **cleared,
                **dict.fromkeys(_CLEARED_ENV),
                "AWS_ENDPOINT_URL": self.moto_endpoint,
                # Lambda's Invoke API is the emulator's own: moto's would look for a container.
                "AWS_ENDPOINT_URL_LAMBDA": self.internal_url,
                "AWS_ACCESS_KEY_ID": FAKE_CREDENTIAL,
                "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIAL,
                "AWS_SESSION_TOKEN": FAKE_CREDENTIAL,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "NO_PROXY": _no_proxy_with_loopback(os.environ.get("NO_PROXY")),
                "no_proxy": _no_proxy_with_loopback(os.environ.get("no_proxy")),
            }
        )

    def _stop_moto(self) -> None:
        if self._moto is None:
            return
        # moto's backends live in the process: the next emulator (or test) starts from nothing.
        from moto.moto_api import _internal as moto_api

        with contextlib.suppress(Exception):
            moto_api.moto_api_backend.reset()
        with contextlib.suppress(Exception):
            self._moto.stop()
        server = getattr(self._moto, "_server", None)  # ThreadedMotoServer does not close it
        if server is not None:
            with contextlib.suppress(Exception):
                server.server_close()
        self._moto = None

    def client(self, service: str) -> Any:
        """A boto3 client of the local moto server."""
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.moto_endpoint,
            region_name=REGION,
            aws_access_key_id=FAKE_CREDENTIAL,
            aws_secret_access_key=FAKE_CREDENTIAL,
            aws_session_token=FAKE_CREDENTIAL,
        )

    def _start_cloudwatch(self) -> LocalMetrics:
        """moto's CloudWatch on the local clock, with what the billing report needs of it too:
        percentiles and the alarm history."""
        from devtools.moto_patches import install_alarm_clock, install_alarm_history, install_percentiles

        self._patches.callback(install_percentiles())
        self._patches.callback(install_alarm_history())
        self._patches.callback(install_alarm_clock(self.clock.now))
        self._cloudwatch = self.client("cloudwatch")
        self.metrics = LocalMetrics(self._cloudwatch, clock=self.clock)
        return self.metrics

    def _local_alert_channels(self) -> None:
        """The console for every alert receiver, plus Slack and PagerDuty when their settings are given."""
        slack = (os.environ.get(SLACK_ENV) or "").strip()
        pagerduty = (os.environ.get(PAGERDUTY_ENV) or "").strip()
        routes = json.loads(LOCAL_ALERT_ROUTES.read_text(encoding="utf-8"))
        secrets_for_channels = {}
        for name, receiver in routes["receivers"].items():
            if slack:
                receiver["channels"].append({"type": "slack", "webhook_url_secret": "slack_webhook_url"})  # nosec B105 # the key the secret is stored under, not the secret
                secrets_for_channels["slack_webhook_url"] = slack
            if pagerduty and name == "oncall-critical":
                channel = {"type": "pagerduty", "routing_key_secret": "pagerduty_routing_key"}  # nosec B105 # the key the secret is stored under, not the secret
                if events_url := (os.environ.get(PAGERDUTY_URL_ENV) or "").strip():
                    channel["events_url"] = events_url
                receiver["channels"].append(channel)
                secrets_for_channels["pagerduty_routing_key"] = pagerduty
        self._routes_dir = tempfile.mkdtemp(prefix="billwatch-local-routes-")
        path = Path(self._routes_dir) / "alert_routes.json"
        path.write_text(json.dumps(routes), encoding="utf-8")
        self._alert_env = {"ALERT_ROUTES_PATH": str(path), "ALERT_SECRETS": json.dumps(secrets_for_channels)}

    def _observe_alerts(self) -> None:
        """The console channel's notices, as the status page's "alerts sent", from the handlers' log."""
        emulator = self

        class Notices(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage() == "Alert notification":
                    emulator.alerts_sent.append(
                        {
                            "at": emulator.clock.now(),
                            "receiver": getattr(record, "receiver", None),
                            "kind": getattr(record, "kind", None),
                            "alert": getattr(record, "alert", {}),
                        }
                    )

        handler = Notices()
        # Powertools' Logger is the standard logger of the service's name.
        service_logger = logging.getLogger("billwatch")
        service_logger.addHandler(handler)
        self._patches.callback(service_logger.removeHandler, handler)

    def function_env(self, logical_id: str) -> dict[str, str | None]:
        """The environment a function runs with locally (``None`` = not set).

        The template's variables (resolved against parameter defaults and the local table
        names; anything unresolvable is left unset), then the local overrides (including
        ``ADMIN_ROLE_ARNS``: yours when set, else the role of the default local caller).
        """
        refs = {**self.table_names, **self.queue_urls, **(self.topics.topic_arns if self.topics else {})}
        env = function_environment(self.template, logical_id, parameters=self.parameters, resource_refs=refs)
        env.update(
            {
                variable: self.table_names[logical_table]
                for variable, logical_table in _TABLE_ENV.items()
                if logical_table in self.table_names
            }
        )
        env.update(self._alert_env)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.moto_endpoint,
                "POWERTOOLS_SERVICE_NAME": "billwatch",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                SECRET_ENV: self.settings.secret,
                ADMIN_ENV: self.admin_role_arns,
                **dict.fromkeys(_CLEARED_ENV),
            }
        )
        env.update(self._extra_env)
        return env

    # ------------------------------------------------------------------ requests

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route API Gateway would pick for ``method path`` and its path parameters."""
        for route in self._routes:
            params = route.match(method.upper(), path)
            if params is not None:
                return route, params
        return None

    def invoke(self, function: str, event: Any) -> Any:
        """Invoke a function as Lambda would (see :meth:`FunctionHost.invoke`)."""
        return self.host.invoke(function, event)

    def invoke_async(self, function: str, event: Any) -> None:
        self.host.invoke_async(function, event)

    def function_named(self, name: str) -> str | None:
        return self.host.function_named(name)

    def _record_invocation(self, function: str, succeeded: bool, elapsed_ms: float) -> None:
        """What Lambda counts of an invocation in AWS/Lambda."""
        if self.metrics is not None:
            dimensions = {"FunctionName": function}
            self.metrics.put("AWS/Lambda", "Invocations", dimensions, 1, "Count")
            self.metrics.put("AWS/Lambda", "Errors", dimensions, int(not succeeded), "Count")
            self.metrics.put("AWS/Lambda", "Duration", dimensions, elapsed_ms, "Milliseconds")

    def record_request(
        self, route: Route, status: int, elapsed_ms: float, body: bytes, answer: bytes
    ) -> None:
        """What API Gateway counts of a request, and, for the webhooks, the event and its outcome."""
        if self.metrics is not None:
            api = {"ApiId": self.api_id}
            # With DetailedMetricsEnabled (template.yaml), each route's too.
            by_route = {**api, "Stage": "$default", "Method": route.method, "Resource": route.path}
            for dimensions in (api, by_route):
                self.metrics.put("AWS/ApiGateway", "Count", dimensions, 1, "Count")
                self.metrics.put("AWS/ApiGateway", "4xx", dimensions, int(400 <= status < 500), "Count")
                self.metrics.put("AWS/ApiGateway", "5xx", dimensions, int(status >= 500), "Count")
                self.metrics.put("AWS/ApiGateway", "Latency", dimensions, elapsed_ms, "Milliseconds")
        self.requests.append(
            {
                "at": self.clock.now(),
                "route": route.route_key,
                "function": route.function,
                "status": status,
                **_event_summary(body),
                **_answer_summary(answer),
            }
        )

    def dashboards(self) -> list[dict[str, Any]]:
        """The template's dashboards with every widget's series over the last hours of the local clock."""
        from devtools.local_dashboards import DASHBOARD_HOURS, dashboard_series

        assert self.metrics is not None  # nosec B101 # narrows the Optional for type checkers; not a runtime check
        end = self.clock.now()
        with self.metrics.lock:
            return dashboard_series(self.template, self.metrics.store, end - DASHBOARD_HOURS * 3600, end)

    def billing_report(self, period: str) -> str:
        """The console billing report of the ``period`` (daily or weekly) up to now, from moto."""
        from billwatch.reporting.cloudwatch_source import CloudWatchReportSource
        from billwatch.reporting.model import ReportPeriod, report_window
        from billwatch.reporting.renderers import render_console
        from billwatch.reporting.scoring import build_report

        report_period = ReportPeriod(period)
        source = CloudWatchReportSource(
            self._cloudwatch, METRICS_NAMESPACE, stage=self.stage, http_api_id=self.api_id
        )
        # moto cuts the window to whole seconds, end excluded: ending at the next second takes in
        # what a request emitted a moment ago.
        now = datetime.fromtimestamp(self.clock.now(), UTC).replace(microsecond=0) + timedelta(seconds=1)
        start, end = report_window(report_period, end=now)
        return render_console(build_report(source.read(start, end, report_period), report_period))
