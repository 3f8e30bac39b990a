"""Find catalogue practices (PlanDefinitions) and read their tier and default cadence."""

from __future__ import annotations

from sqlalchemy.orm import Session

from careplan.coordination import codes
from careplan.coordination.errors import NotFound
from careplan.coordination.store import read, search_all
from careplan.practices import tiers


def resolve(session: Session, practice: str) -> dict:
    """Return the PlanDefinition a practice id, `PlanDefinition/<id>` or canonical url names."""
    if practice.startswith(("http://", "https://", "urn:")):
        url, _, version = practice.partition("|")
        found = search_all(session, "PlanDefinition", [("url", url)] + ([("version", version)] if version else []))
        if not found:
            raise NotFound(f"No practice has the url {practice}")
        return found[0]
    return read(session, "PlanDefinition", practice.removeprefix("PlanDefinition/")).content


def canonical(plan_definition: dict) -> str:
    """Return the canonical url an activity cites for a practice."""
    return plan_definition.get("url") or f"{codes.PRACTICE_URL_PREFIX}{plan_definition['id']}"


def cadence(plan_definition: dict) -> dict | None:
    """Return the practice's default follow-up cadence (a Timing), if it has one."""
    for extension in plan_definition.get("extension", []):
        if extension.get("url") == codes.CADENCE_EXTENSION and "valueTiming" in extension:
            return extension["valueTiming"]
    return None


def tier_of(plan_definition: dict | None) -> str | None:
    """Return a practice's tier code, or None when it has none."""
    return None if plan_definition is None else tiers.tier_of(plan_definition)


def sort_key(tier: str | None) -> int:
    """Order tiers recommended, promising, emerging, then anything else."""
    return tiers.sort_key(tier)


def tier_order() -> tuple[str, ...]:
    """Return the adoption order of the tiers."""
    return tuple(tiers.TIER_ORDER)


def by_urls(session: Session, urls: set[str]) -> dict[str, dict]:
    """Return the visible practices with the given canonical urls, keyed by url."""
    found: dict[str, dict] = {}
    for url in sorted(urls):
        matches = search_all(session, "PlanDefinition", [("url", url.partition("|")[0])])
        if matches:
            found[url] = matches[0]
    return found
