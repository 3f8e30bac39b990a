"""Practice tiers: the adoption order recommended, promising, emerging, read from a practice's data."""

from __future__ import annotations

TIER_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/practice-tier"
TIER_EXTENSION = "https://careplan.example.org/fhir/StructureDefinition/practice-tier"
# HQO's adoption rule: among innovative practices, recommended first, then promising, then emerging.
TIER_ORDER: tuple[str, ...] = ("recommended", "promising", "emerging")
_RANK = {tier: rank for rank, tier in enumerate(TIER_ORDER)}


def tier_of(plan_definition: dict) -> str | None:
    """Return the tier code a PlanDefinition (or ActivityDefinition) carries, or None when it has none."""
    for extension in plan_definition.get("extension") or []:
        if not isinstance(extension, dict) or extension.get("url") != TIER_EXTENSION:
            continue
        coding = extension.get("valueCoding") or {}
        if coding.get("system") == TIER_SYSTEM and coding.get("code") in _RANK:
            return coding["code"]
    return None


def sort_key(tier: str | None) -> int:
    """Return the rank of tier in the adoption order; an unknown or missing tier sorts last."""
    return _RANK.get(tier, len(TIER_ORDER)) if tier is not None else len(TIER_ORDER)
