"""The weekly report's reads of the billing table: the accounts near or over their limits, and the
monthly cohorts of subscriptions.

Both come from one paginated Scan of the table (its cost: docs/cost.md). Used and limit are the
quota policy's own (``QuotaPolicy.used_and_limit``, grants included), in each account's current
period; a quota counts as near its limit from the policy's first limit-hit threshold (80 %).

A subscription whose customer names no account yet is kept on a provisional item keyed by the
customer id (``cus_...``): it pays, and PayingSubscriptions counts it, so its cohort does too. The
near-limit list names accounts only: a provisional item has no account to name.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from billwatch.core import dynamo
from billwatch.core.ids import is_account_id, is_customer_id
from billwatch.core.models import BillingAccount
from billwatch.core.observability import logger
from billwatch.licensing.quota_policy import LIMIT_HIT_THRESHOLDS, AccountUsage, QuotaPolicy
from billwatch.reporting.model import AccountNearLimit, Cohort, Figure, Known, Missing, NearLimits

NEAR_LIMIT_SHARE = LIMIT_HIT_THRESHOLDS[0] / 100
TOP_NEAR_LIMITS = 20  # the report lists this many, the highest shares first, and counts the rest
PAGE_SIZE = 500


def is_paying(account: BillingAccount) -> bool:
    """A live subscription that adds to MRR: what PayingSubscriptions counts (docs/revenue-metrics.md)."""
    return account.active_tier is not None and account.mrr is not None and bool(account.mrr_currency)


class AccountsReport:
    def __init__(self, policy: QuotaPolicy, clock: Callable[[], float] = time.time) -> None:
        self._policy = policy
        self._clock = clock

    def read(self) -> tuple[Figure[NearLimits], Figure[tuple[Cohort, ...]]]:
        from botocore.exceptions import BotoCoreError, ClientError
        from pynamodb.exceptions import PynamoDBException

        now = self._clock()
        near: list[AccountNearLimit] = []
        started: Counter[str] = Counter()
        paying: Counter[str] = Counter()
        try:
            for usage in self._accounts():
                account = usage.account
                if is_account_id(account.pk):
                    near += self._near_limits(usage, now)
                if account.subscription_started_at:
                    month = f"{dt.datetime.fromtimestamp(account.subscription_started_at, dt.UTC):%Y-%m}"
                    started[month] += 1
                    paying[month] += is_paying(account)
        except (BotoCoreError, ClientError, PynamoDBException) as error:
            logger.warning("Could not scan the billing table for the weekly report", exc_info=True)
            unknown = Missing(f"the billing table could not be read ({type(error).__name__})")
            return unknown, unknown
        near.sort(key=lambda entry: (-entry.share, entry.account_id, entry.feature))
        cohorts = tuple(Cohort(month, started[month], paying[month]) for month in sorted(started))
        return Known(NearLimits(tuple(near[:TOP_NEAR_LIMITS]), len(near), TOP_NEAR_LIMITS)), Known(cohorts)

    @staticmethod
    def _accounts() -> Iterator[AccountUsage]:
        connection = dynamo.table_connection(BillingAccount)
        cursor: Any = None  # DynamoDB's LastEvaluatedKey (pynamodb types it as a string)
        while True:
            page = connection.scan(
                filter_condition=BillingAccount.merged_into.does_not_exist(),
                limit=PAGE_SIZE,
                exclusive_start_key=cursor,
            )
            for raw in page.get("Items", []):
                # The stack's own items share the table.
                if is_account_id(raw["pk"]["S"]) or is_customer_id(raw["pk"]["S"]):
                    yield AccountUsage.from_raw(raw["pk"]["S"], raw)
            cursor = page.get("LastEvaluatedKey")
            if cursor is None:
                return

    def _near_limits(self, usage: AccountUsage, now: float) -> list[AccountNearLimit]:
        account = usage.account
        tier = self._policy.effective_tier(account)
        current = self._policy.is_current(account.usage_since, self._policy.period(tier, account, now))
        near = []
        for feature, spec in tier.features.items():
            if spec.quota is None or not self._policy.enabled(account, tier, feature):
                continue
            used, limit = self._policy.used_and_limit(usage, spec.quota, feature, current)
            if used and used >= NEAR_LIMIT_SHARE * limit:
                near.append(AccountNearLimit(account.pk, feature, used, limit))
        return near
