"""The local emulator: the template's HTTP API served by the real handlers, AWS in an embedded moto server.

    python -m devtools.emulator          # what `make run` runs; PORT=3000 by default

No AWS account, Docker or network is needed: moto's server runs in-process on 127.0.0.1, the
tables are created from template.yaml's own definitions, and every ``HttpApi`` route of the
template is served on ``http://127.0.0.1:$PORT``. Each request becomes an API Gateway HTTP API
payload-format-2.0 event for the route's real handler (loaded from the function's CodeUri +
Handler, with the template's environment), and the handler's response becomes the HTTP response.

The webhook signing secret is ``$STRIPE_WEBHOOK_SECRET`` when set (e.g. the ``whsec_`` printed by
``stripe listen``), else the public local dev secret ``whsec_local_dev_secret``.

Routes whose HttpApi event has ``Auth: {Authorizer: AWS_IAM}`` (or that inherit an ``AWS_IAM``
``DefaultAuthorizer``) are not SigV4-checked locally: their event carries
``requestContext.authorizer.iam`` for a configurable caller instead, as API Gateway sends it for a
signed request. The caller is ``$LOCAL_CALLER_ARN``, by default
``arn:aws:sts::123456789012:assumed-role/billwatch-local-admin/local``; an
``x-billwatch-caller-arn`` request header overrides it for that request (and is not passed on to
the handler). The functions get ``ADMIN_ROLE_ARNS=arn:aws:iam::123456789012:role/billwatch-local-admin``
unless ``$ADMIN_ROLE_ARNS`` is set, so the default caller is an admin.

Tests use :class:`LocalEmulator` directly::

    with LocalEmulator().start(port=0) as emulator:   # port 0 = an ephemeral port
        urllib.request.urlopen(emulator.url + "/webhooks/stripe", ...)
        boto3.client("dynamodb", endpoint_url=emulator.moto_endpoint, ...)

The parts: :mod:`.settings` (ports, paths, the variables read, validated), :mod:`.functions` (the
function host), :mod:`.http_front` (API Gateway's part, on werkzeug), :mod:`.emulator` (moto and
the lifecycle), :mod:`.banner` and :mod:`.__main__` (`make run`).

Lambda's Invoke API, which the functions that hand a long job over to a fresh invocation call,
is served on a second, unannounced loopback port (``emulator.internal_url``, what
``AWS_ENDPOINT_URL_LAMBDA`` points the functions at), never on ``$PORT``: people tunnel ``$PORT``
to receive real Stripe webhooks, and nothing reachable there may apply an event unsigned.

``stop()`` (or leaving the ``with`` block) shuts the servers down and restores ``os.environ``,
``sys.path``, ``sys.modules``, ``sys.stdout`` and moto as they were before ``start()``.

The metrics the handlers print (CloudWatch EMF, as in Lambda) are put into moto's CloudWatch by
:mod:`devtools.local_metrics`, and ``GET /_local/report[?period=daily|weekly]`` (what
``make report`` prints) renders the billing report of the last day or week from them. That route
is the emulator's own, not the template's; moto gets the percentiles and the alarm history the
report needs from :mod:`devtools.moto_patches`.

Differences from AWS worth knowing: invocations of one function are serialised (like a function
with a single warm instance), the function timeout is reported to the handler but not enforced,
and moto's state lives in memory unless ``BILLWATCH_DATA_DIR`` keeps the tables and metrics.
"""

from devtools.emulator.emulator import LocalEmulator
from devtools.emulator.settings import EmulatorError

__all__ = ["EmulatorError", "LocalEmulator"]
