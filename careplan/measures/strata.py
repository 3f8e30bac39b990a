"""Equity stratifiers (who is being left behind) and small-cell suppression (nobody can be singled out).

Where each dimension lives in FHIR (domain.md 6.3; US Core and Gravity personal characteristics):

- age band: Patient.birthDate, age on the member's event date;
- gender: Patient.gender (administrative); gender identity: the US Core ``us-core-genderIdentity`` or the core
  ``individual-genderIdentity`` extension;
- preferred language: Patient.communication (the preferred one, else the first), primary language subtag; need for
  an interpreter: the core ``patient-interpreterRequired`` extension;
- housing status: the latest Observation LOINC 71802-3 (Housing status) on or before the event (else the first
  after it), else an active social-need Condition about housing;
- race and ethnicity: the US Core ``us-core-race`` / ``us-core-ethnicity`` extensions (OMB categories);
- income quintile, rurality, disability: careplan extensions on Patient (``income-quintile`` valueInteger 1-5,
  ``rurality`` valueCode, ``disability`` valueBoolean or valueCodeableConcept) or an Observation coded in the
  careplan ``equity-dimension`` CodeSystem with the same code;
- tier (measures of reminders and activities): the practice tier of the member itself.

Indigenous identity is deliberately not offered: it is reported only under a community data-governance agreement
(OCAP), which is a decision for the programme, not a default.

Suppression: a cell (one stratum in one period, or the overall value) whose numerator or denominator is 1 to 4 is
suppressed. When exactly one stratum of a period is suppressed while the overall value is shown, it could be
recovered by subtraction, so the next smallest stratum is suppressed too (complementary suppression).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from careplan.measures.periods import parse_instant
from careplan.models import Resource, SearchReference, SearchToken

BASE = "https://careplan.example.org/fhir"
UNKNOWN = "unknown"
SMALL_CELL_MAX = 4
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
RACE_EXTENSION = US_CORE + "us-core-race"
ETHNICITY_EXTENSION = US_CORE + "us-core-ethnicity"
GENDER_IDENTITY_EXTENSIONS = (US_CORE + "us-core-genderIdentity",
                              "http://hl7.org/fhir/StructureDefinition/individual-genderIdentity")
INTERPRETER_EXTENSION = "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired"
LOINC = "http://loinc.org"
HOUSING_STATUS = "71802-3"
HOUSING_ANSWERS = {"LA31993-1": "housed", "LA31994-9": "not-housed", "LA31995-6": "at-risk"}
EQUITY_SYSTEM = f"{BASE}/CodeSystem/equity-dimension"
EQUITY_EXTENSIONS = {code: f"{BASE}/StructureDefinition/{code}" for code in ("income-quintile", "rurality",
                                                                             "disability")}
SOCIAL_NEED_SYSTEMS = ("http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",)
HOUSING_NEEDS = {"homelessness": "not-housed", "housing-instability": "at-risk", "inadequate-housing": "at-risk"}
AGE_BANDS = ((0, 17, "0-17"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"), (45, 54, "45-54"),
             (55, 64, "55-64"), (65, 200, "65+"))


@dataclass(frozen=True)
class Stratifier:
    """One equity dimension a measure can be broken down by."""

    id: str
    title: str
    source: str
    member_level: bool = False  # read from the member itself (tier), not from its patient


STRATIFIERS: tuple[Stratifier, ...] = (
    Stratifier("age-band", "Age band", "Patient.birthDate (age on the event date)"),
    Stratifier("gender", "Gender (administrative)", "Patient.gender"),
    Stratifier("gender-identity", "Gender identity", "us-core-genderIdentity / individual-genderIdentity extension"),
    Stratifier("language", "Preferred language", "Patient.communication (preferred), primary subtag"),
    Stratifier("interpreter", "Needs an interpreter", "patient-interpreterRequired extension"),
    Stratifier("housing", "Housing status", "Observation LOINC 71802-3, else a housing social-need Condition"),
    Stratifier("race", "Race", "us-core-race extension (OMB category)"),
    Stratifier("ethnicity", "Ethnicity", "us-core-ethnicity extension (OMB category)"),
    Stratifier("income-quintile", "Neighbourhood income quintile",
               "income-quintile extension or equity-dimension Observation"),
    Stratifier("rurality", "Rurality", "rurality extension or equity-dimension Observation"),
    Stratifier("disability", "Disability", "disability extension or equity-dimension Observation"),
    Stratifier("tier", "Practice tier", "the reminder's or activity's practice tier", member_level=True),
)
BY_ID = {s.id: s for s in STRATIFIERS}


@dataclass
class PatientFacts:
    """What the stratifiers need of one patient, read once per evaluation."""

    patient: dict
    housing: list[tuple[datetime, str]] = field(default_factory=list)  # (effective, value), oldest first
    housing_need: str | None = None
    equity: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)  # from Observations


def load_facts(session: Session, patient_ids: Iterable[str]) -> dict[str, PatientFacts]:
    """Read the Patients and their equity Observations and housing Conditions, in a few queries."""
    ids = sorted(set(patient_ids))
    facts: dict[str, PatientFacts] = {}
    for chunk in _chunks(ids):
        rows = session.execute(select(Resource.res_id, Resource.content).where(
            Resource.res_type == "Patient", Resource.deleted.is_(False), Resource.res_id.in_(chunk)))
        for res_id, content in rows:
            facts[res_id] = PatientFacts(patient=content)
        for content in _linked(session, "Observation", "subject", chunk, codes=(
                (LOINC, HOUSING_STATUS), *((EQUITY_SYSTEM, code) for code in EQUITY_EXTENSIONS))):
            _add_observation(facts, content)
        for content in _linked(session, "Condition", "subject", chunk, codes=tuple(
                (system, code) for system in SOCIAL_NEED_SYSTEMS for code in HOUSING_NEEDS), param="category"):
            _add_condition(facts, content)
    for item in facts.values():
        item.housing.sort()
        for values in item.equity.values():
            values.sort()
    return facts


def _linked(session: Session, resource_type: str, link: str, patient_ids: list[str], *,
            codes: tuple[tuple[str, str], ...], param: str = "code") -> list[dict]:
    if not codes:
        return []
    coded = select(SearchToken.resource_pk).where(
        SearchToken.res_type == resource_type, SearchToken.param == param,
        SearchToken.code.in_(sorted({c for _, c in codes})))
    linked = select(SearchReference.resource_pk).where(
        SearchReference.res_type == resource_type, SearchReference.param == link,
        SearchReference.target_type == "Patient", SearchReference.target_id.in_(patient_ids))
    rows = session.scalars(select(Resource.content).where(
        Resource.res_type == resource_type, Resource.deleted.is_(False), Resource.pk.in_(coded),
        Resource.pk.in_(linked)))
    return list(rows)


def _patient_of(resource: dict) -> str | None:
    reference = (resource.get("subject") or {}).get("reference") or ""
    return reference.split("/", 1)[1] if reference.startswith("Patient/") else None


def _add_observation(facts: dict[str, PatientFacts], observation: dict) -> None:
    if observation.get("status") in ("entered-in-error", "cancelled", "preliminary"):
        return
    item = facts.get(_patient_of(observation) or "")
    if item is None:
        return
    when = parse_instant(observation.get("effectiveDateTime") or (observation.get("effectivePeriod") or {}).get(
        "start") or observation.get("issued") or observation.get("meta", {}).get("lastUpdated"))
    if when is None:
        return
    codings = observation.get("code", {}).get("coding", [])
    if any(c.get("system") == LOINC and c.get("code") == HOUSING_STATUS for c in codings):
        value = _concept_value(observation.get("valueCodeableConcept"), HOUSING_ANSWERS)
        if value:
            item.housing.append((when, value))
        return
    for coding in codings:
        if coding.get("system") == EQUITY_SYSTEM and coding.get("code") in EQUITY_EXTENSIONS:
            value = _value(observation, coding["code"])
            if value:
                item.equity.setdefault(coding["code"], []).append((when, value))


def _add_condition(facts: dict[str, PatientFacts], condition: dict) -> None:
    item = facts.get(_patient_of(condition) or "")
    if item is None:
        return
    status = {c.get("code") for c in (condition.get("clinicalStatus") or {}).get("coding", [])}
    if status and not status & {"active", "recurrence", "relapse"}:
        return
    for category in condition.get("category", []):
        for coding in category.get("coding", []):
            value = HOUSING_NEEDS.get(coding.get("code"))
            if coding.get("system") in SOCIAL_NEED_SYSTEMS and value:
                # the worse of two recorded needs describes the person's housing
                item.housing_need = "not-housed" if "not-housed" in (value, item.housing_need) else value


def _concept_value(concept: dict | None, answers: dict[str, str] | None = None) -> str | None:
    if not concept:
        return None
    for coding in concept.get("coding", []):
        if answers and coding.get("code") in answers:
            return answers[coding["code"]]
    for coding in concept.get("coding", []):
        if coding.get("code"):
            return str(coding["code"])
    return concept.get("text")


def _value(element: dict, code: str) -> str | None:
    if "valueInteger" in element:
        return _quintile(element["valueInteger"]) if code == "income-quintile" else str(element["valueInteger"])
    if "valueBoolean" in element:
        return "yes" if element["valueBoolean"] else "no"
    if "valueCode" in element:
        return str(element["valueCode"])
    if "valueString" in element:
        return str(element["valueString"])
    if "valueCoding" in element:
        return element["valueCoding"].get("code")
    return _concept_value(element.get("valueCodeableConcept"))


def _quintile(value: object) -> str | None:
    return f"Q{value}" if isinstance(value, int) and 1 <= value <= 5 else None


def value_of(stratifier: str, facts: PatientFacts | None, *, on: date, tier: str | None = None) -> str:
    """Return the stratum a member falls in on its event date ("unknown" when the data says nothing)."""
    if stratifier == "tier":
        return tier or "none"
    if facts is None:
        return UNKNOWN
    patient = facts.patient
    value: str | None
    if stratifier == "age-band":
        value = _age_band(patient.get("birthDate"), on)
    elif stratifier == "gender":
        value = patient.get("gender")
    elif stratifier == "gender-identity":
        value = _gender_identity(patient)
    elif stratifier == "language":
        value = _language(patient)
    elif stratifier == "interpreter":
        value = next((_value(e, "interpreter") for e in _extensions(patient, INTERPRETER_EXTENSION)), None)
    elif stratifier == "housing":
        value = _as_of(facts.housing, on) or facts.housing_need
    elif stratifier in ("race", "ethnicity"):
        value = _omb(patient, RACE_EXTENSION if stratifier == "race" else ETHNICITY_EXTENSION)
    elif stratifier in EQUITY_EXTENSIONS:
        value = next((_value(e, stratifier) for e in _extensions(patient, EQUITY_EXTENSIONS[stratifier])), None)
        value = value or _as_of(facts.equity.get(stratifier, []), on)
    else:
        raise KeyError(stratifier)
    return value or UNKNOWN


def _extensions(resource: dict, url: str) -> list[dict]:
    return [e for e in resource.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _age_band(birth_date: str | None, on: date) -> str | None:
    if not birth_date or len(birth_date) < 4:
        return None
    try:
        year = int(birth_date[:4])
        month = int(birth_date[5:7]) if len(birth_date) >= 7 else 7  # mid-year when only the year is known
        day = int(birth_date[8:10]) if len(birth_date) >= 10 else 1
    except ValueError:
        return None
    age = on.year - year - ((on.month, on.day) < (month, day))
    if age < 0:
        return None
    return next(label for low, high, label in AGE_BANDS if low <= age <= high)


def _gender_identity(patient: dict) -> str | None:
    for url in GENDER_IDENTITY_EXTENSIONS:
        for extension in _extensions(patient, url):
            if "valueCodeableConcept" in extension:
                return _concept_value(extension["valueCodeableConcept"])
            for inner in extension.get("extension", []):
                if inner.get("url") == "value":
                    return _concept_value(inner.get("valueCodeableConcept"))
    return None


def _language(patient: dict) -> str | None:
    communications = patient.get("communication") or []
    chosen = next((c for c in communications if c.get("preferred")), communications[0] if communications else None)
    code = _concept_value((chosen or {}).get("language"))
    return code.split("-")[0].lower() if code else None


def _omb(patient: dict, url: str) -> str | None:
    for extension in _extensions(patient, url):
        categories = [inner.get("valueCoding", {}) for inner in extension.get("extension", [])
                      if inner.get("url") == "ombCategory"]
        if len(categories) > 1:
            return "multiple"
        if categories:
            return categories[0].get("display") or categories[0].get("code")
        text = next((inner.get("valueString") for inner in extension.get("extension", [])
                     if inner.get("url") == "text"), None)
        if text:
            return text
    return None


def _as_of(values: list[tuple[datetime, str]], on: date) -> str | None:
    if not values:
        return None
    before = [value for when, value in values if when.date() <= on]
    return before[-1] if before else values[0][1]


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for index in range(0, len(items), size):
        yield items[index:index + size]


# -- suppression ------------------------------------------------------------------------------------------------


def is_small(count: int | None) -> bool:
    """Tell whether a count would single people out (1 to 4)."""
    return count is not None and 1 <= count <= SMALL_CELL_MAX


def suppressed_cells(total: tuple[int | None, int | None],
                     cells: dict[str, tuple[int | None, int | None]]) -> tuple[bool, set[str]]:
    """Return whether the total is suppressed and which cells are, complementary suppression included.

    total and each cell are (numerator, denominator); numerator is None for continuous measures.
    """
    total_hidden = is_small(total[0]) or is_small(total[1])
    hidden = {key for key, (numerator, denominator) in cells.items() if is_small(numerator) or is_small(denominator)}
    shown = [key for key in cells if key not in hidden]
    if len(hidden) == 1 and not total_hidden and shown:
        # total minus the shown cells would give the hidden one back
        def size(key: str) -> tuple[int, int, str]:
            numerator, denominator = cells[key]
            return denominator or 0, numerator or 0, key
        hidden.add(min(shown, key=size))
    return total_hidden, hidden
