"""What a Lambda process does once its handler module is imported."""

from __future__ import annotations

import gc
import os


def handler_imported() -> None:
    """Tells the garbage collector that what the import built lives as long as the process.

    A Lambda process imports its handler once and keeps every module, class and model it made
    until it is shut down. Left in the collected generations, they are what the first full
    collection walks, and the first event's client (botocore's JSON service models) triggers one:
    ~40 ms of a webhook's first event (bench/README.md, 1b), paid again by every later full
    collection for objects that never become garbage.

    Only in a Lambda process (``LAMBDA_TASK_ROOT``, the variable Powertools reads for the same
    question): a test process imports handlers again and again, and whatever is frozen is never
    collected.
    """
    if os.environ.get("LAMBDA_TASK_ROOT"):
        gc.freeze()
