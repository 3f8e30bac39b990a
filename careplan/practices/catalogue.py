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
from careplan.practices.tiers import TIER_EXTENSION, TIER_SYSTEM, sort_key, tier_of
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
REASSESSMENT_EXTENSION = f"{BASE_URL}/StructureDefinition/practice-tier-reassessment"
SOCIAL_NEED_SYSTEMS = ("http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
                       f"{BASE_URL}/CodeSystem/social-need")
SERVICE_CATEGORY_SYSTEM = f"{BASE_URL}/CodeSystem/service-category"


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


def reassessment_of(plan_definition: dict) -> str | None:
    """Return the date (FHIR date text) the practice's tier is due to be reassessed, or None."""
    for extension in plan_definition.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == REASSESSMENT_EXTENSION:
            return extension.get("valueDate")
    return None


def evidence_of(plan_definition: dict) -> list[dict]:
    """Return the sources the practice cites (relatedArtifact), each as {"display", "url"}."""
    return [{"display": artifact.get("display"), "url": artifact.get("url")}
            for artifact in plan_definition.get("relatedArtifact") or [] if isinstance(artifact, dict)]


def topic_codes(plan_definition: dict, systems: tuple[str, ...]) -> list[str]:
    """Return the codes of the practice's topics drawn from the given code systems, in the order given."""
    return [coding["code"] for concept in plan_definition.get("topic") or [] if isinstance(concept, dict)
            for coding in concept.get("coding") or [] if isinstance(coding, dict)
            and coding.get("system") in systems and isinstance(coding.get("code"), str)]


def social_needs_of(plan_definition: dict) -> list[str]:
    """Return the social-need domain codes the practice addresses (its topics in the social-need systems)."""
    return topic_codes(plan_definition, SOCIAL_NEED_SYSTEMS)


def service_categories_of(plan_definition: dict) -> list[str]:
    """Return the mental-health and substance-use service categories of the practice (its topics)."""
    return topic_codes(plan_definition, (SERVICE_CATEGORY_SYSTEM,))


def choose_practices(session: Session, *, theme: str | None = None, tier: str | None = None,
                     need: str | None = None, category: str | None = None, text: str | None = None,
                     include_retired: bool = False) -> list[dict]:
    """Return the stored practices matching every filter given, recommended, then promising, then emerging.

    text matches the title, name or description, ignoring case.
    """
    folded = text.casefold() if text else None
    chosen = []
    for practice in list_practices(session, include_retired=include_retired):
        if theme and theme not in themes_of(practice):
            continue
        if tier and tier_of(practice) != tier:
            continue
        if need and need not in social_needs_of(practice):
            continue
        if category and category not in service_categories_of(practice):
            continue
        if folded and not any(folded in (practice.get(element) or "").casefold()
                              for element in ("title", "name", "description")):
            continue
        chosen.append(practice)
    return chosen


def with_tier(plan_definition: dict, *, tier: str, provenance: str, reassessment: str | None) -> dict:
    """Return a copy of the practice carrying tier, its provenance and reassessment date (None: no date)."""
    kept = [e for e in plan_definition.get("extension") or [] if not (
        isinstance(e, dict) and e.get("url") in (TIER_EXTENSION, PROVENANCE_EXTENSION, REASSESSMENT_EXTENSION))]
    # The tier and where it comes from lead the extensions, as in the catalogue files.
    leading = [{"url": TIER_EXTENSION, "valueCoding": {"system": TIER_SYSTEM, "code": tier,
                                                       "display": tier.capitalize()}},
               {"url": PROVENANCE_EXTENSION, "valueString": provenance}]
    if reassessment:
        leading.append({"url": REASSESSMENT_EXTENSION, "valueDate": reassessment})
    return {**plan_definition, "extension": leading + kept}
