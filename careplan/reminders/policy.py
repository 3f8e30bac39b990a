"""Per-tier reminder policy from configuration: how early to remind, and after how many misses to escalate.

The defaults favour recommended practices: they are reminded earliest (2 days before due) and escalated to the
coordinator after the first missed day; promising ones 1 day early and after 2 misses; emerging ones on the day and
after 3. A reminder tied to no practice is treated like an emerging one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import time
from functools import lru_cache

from careplan import config
from careplan.practices.tiers import TIER_ORDER
from careplan.reminders import timing

_ENV_NAMES = ("CAREPLAN_DEFAULT_TIMEZONE", "CAREPLAN_PLAN_REVIEW_DAYS", "CAREPLAN_DIGEST_TIME",
              *(f"CAREPLAN_REMINDER_LEAD_DAYS_{t.upper()}" for t in TIER_ORDER),
              *(f"CAREPLAN_REMINDER_ESCALATE_AFTER_MISSES_{t.upper()}" for t in TIER_ORDER))


@dataclass(frozen=True)
class Policy:
    """The reminder policy in force."""

    lead_days: dict[str, float]
    escalate_after: dict[str, int]
    plan_review_days: int = 90
    digest_time: time = time(7, 30)
    default_timezone: str = timing.DEFAULT_TIMEZONE

    def lead(self, tier: str | None) -> float:
        """Return how many days before its due moment a reminder of tier is sent."""
        return self.lead_days.get(tier or TIER_ORDER[-1], self.lead_days.get(TIER_ORDER[-1], 0.0))

    def misses(self, tier: str | None) -> int:
        """Return how many missed days pass before a reminder of tier escalates to the coordinator."""
        return self.escalate_after.get(tier or TIER_ORDER[-1], max(self.escalate_after.values(), default=3))


def from_settings(settings: config.Settings) -> Policy:
    """Return the policy the settings configure."""
    default_timezone = getattr(settings, "default_timezone", None) or timing.DEFAULT_TIMEZONE
    return Policy(lead_days=dict(zip(TIER_ORDER, settings.reminder_lead_days)),
                  escalate_after=dict(zip(TIER_ORDER, settings.reminder_escalate_after)),
                  plan_review_days=settings.plan_review_days, digest_time=timing.parse_hhmm(settings.digest_time),
                  default_timezone=default_timezone if timing.is_timezone(default_timezone)
                  else timing.DEFAULT_TIMEZONE)


def current(environ: dict | None = None) -> Policy:
    """Return the policy the environment configures (read on every write, so it is cached by the values)."""
    env = os.environ if environ is None else environ
    return _policy(tuple((name, env.get(name)) for name in _ENV_NAMES))


@lru_cache(maxsize=8)
def _policy(values: tuple[tuple[str, str | None], ...]) -> Policy:
    env = {name: value for name, value in values if value is not None}
    policy = from_settings(config.from_env(env))
    zone_name = env.get("CAREPLAN_DEFAULT_TIMEZONE")
    if zone_name and timing.is_timezone(zone_name):
        policy = Policy(policy.lead_days, policy.escalate_after, policy.plan_review_days, policy.digest_time,
                        zone_name)
    return policy
