"""The practice catalogue: conformance files under fhir/catalogue/, and the practices as the store holds them.

The files are the starter catalogue `careplan seed` loads; once loaded, the store is what counts: admins edit a
practice (its tier, its cadence) by updating its PlanDefinition, and the store keeps every version.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from careplan import jsonutil
from careplan.models import Resource
from careplan.practices.tiers import sort_key, tier_of
from careplan.search import query as search_query
from careplan.search.parameters import DEFAULT_FHIR_DIR

CATALOGUE_FOLDER = "catalogue"
BASE_URL = "https://careplan.example.org/fhir"
PRACTICE_URL_PREFIX = f"{BASE_URL}/PlanDefinition/"
THEME_SYSTEM = f"{BASE_URL}/CodeSystem/practice-theme"
THEME_EXTENSION = f"{BASE_URL}/StructureDefinition/practice-theme"
CADENCE_EXTENSION = f"{BASE_URL}/StructureDefinition/practice-follow-up-cadence"
ENDORSEMENT_EXTENSION = f"{BASE_URL}/StructureDefinition/practice-endorsement"
PROVENANCE_EXTENSION = f"{BASE_URL}/StructureDefinition/practice-tier-provenance"


def catalogue_files(fhir_dir: Path | None = None) -> list[Path]:
    """Return the catalogue's JSON files in name order."""
    return sorted(((fhir_dir or DEFAULT_FHIR_DIR) / CATALOGUE_FOLDER).glob("*.json"))


def load_files(fhir_dir: Path | None = None) -> list[dict]:
    """Return every conformance resource of the catalogue files (CodeSystems, ValueSets, profiles, practices)."""
    return [jsonutil.loads(path.read_bytes()) for path in catalogue_files(fhir_dir)]


def practice_order(plan_definition: dict) -> tuple[int, str, str]:
    """Return the sort key of a practice: its tier in adoption order, then its title."""
    title = plan_definition.get("title") or plan_definition.get("name") or ""
    return sort_key(tier_of(plan_definition)), title.casefold(), plan_definition.get("id", "")


def list_practices(session: Session, *, include_retired: bool = False) -> list[dict]:
    """Return the stored practices (live PlanDefinitions, active ones unless asked), recommended first, then title."""
    rows = session.scalars(select(Resource).where(Resource.res_type == "PlanDefinition",
                                                  Resource.deleted.is_(False)))
    practices = [row.content for row in rows if include_retired or row.content.get("status") == "active"]
    return sorted(practices, key=practice_order)


def practice_by_url(session: Session, url: str) -> dict | None:
    """Return the live, active PlanDefinition a canonical URL (``url`` or ``url|version``) names, or None."""
    base, _, version = url.partition("|")
    if not base:
        return None
    rows = search_query.matching_rows(session, "PlanDefinition", search_query.parse([("url", base)]))
    for row in rows:
        content = row.content
        if content.get("url") != base or content.get("status") != "active":
            continue
        if version and content.get("version") != version:
            continue
        return content
    return None


def themes_of(plan_definition: dict) -> list[str]:
    """Return the theme codes of a practice, in the order given."""
    return [e["valueCoding"]["code"] for e in plan_definition.get("extension") or []
            if isinstance(e, dict) and e.get("url") == THEME_EXTENSION
            and (e.get("valueCoding") or {}).get("system") == THEME_SYSTEM and "code" in e["valueCoding"]]


def follow_up_cadence(plan_definition: dict) -> dict | None:
    """Return the practice's default follow-up cadence (a FHIR Timing), or None when it has none."""
    for extension in plan_definition.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == CADENCE_EXTENSION and "valueTiming" in extension:
            return extension["valueTiming"]
    return None


def _string_extension(plan_definition: dict, url: str) -> str | None:
    for extension in plan_definition.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == url:
            return extension.get("valueString")
    return None


def endorsement_of(plan_definition: dict) -> str | None:
    """Return the endorsement for spread the practice's source states, or None."""
    return _string_extension(plan_definition, ENDORSEMENT_EXTENSION)


def tier_provenance_of(plan_definition: dict) -> str | None:
    """Return where the practice's tier comes from (assessed by its source, or provisional), or None."""
    return _string_extension(plan_definition, PROVENANCE_EXTENSION)
