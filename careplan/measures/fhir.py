"""The measures as FHIR R4 Measure resources, and evaluated measures as MeasureReport (summary and subject-list).

https://hl7.org/fhir/R4/measure.html, https://hl7.org/fhir/R4/measurereport.html,
https://hl7.org/fhir/R4/operation-measure-evaluate-measure.html. The Measure resources are generated from
careplan.measures.definitions and kept under fhir/measures/ (``write_files``), which ``careplan seed`` loads; a test
keeps the files and the definitions in step. Suppressed counts and scores carry the data-absent-reason ``masked``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

from careplan.measures import compute, strata
from careplan.measures.definitions import CONTINUOUS, DEFINITIONS, MeasureDefinition

VERSION = "1.0.0"
DATE = "2026-11-30"
FOLDER = "measures"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
SCORING_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-scoring"
TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-type"
IMPROVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
STRATIFIER_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/measure-stratifier"
SUBJECT_TYPES = {"patient": "Patient", "referral": "Task", "reminder": "Task", "activity": "CarePlan",
                 "discharge": "Encounter"}
MASKED = {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}


def _concept(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _population(code: str, description: str) -> dict:
    return {"code": _concept(POPULATION_SYSTEM, code), "description": description,
            "criteria": {"language": "text/plain", "expression": description}}


def measure_resource(measure: MeasureDefinition) -> dict:
    """Return the FHIR Measure of a definition."""
    continuous = measure.kind == CONTINUOUS
    if continuous:
        populations = [_population("initial-population", measure.population),
                       _population("measure-population", measure.denominator),
                       _population("measure-population-exclusion", measure.exclusions),
                       _population("measure-observation", measure.numerator)]
    else:
        populations = [_population("initial-population", measure.population),
                       _population("denominator", measure.denominator),
                       _population("denominator-exclusion", measure.exclusions),
                       _population("numerator", measure.numerator)]
    stratifiers = [{"code": _concept(STRATIFIER_SYSTEM, s.id, s.title), "description": s.source,
                    "criteria": {"language": "text/plain", "expression": s.source}}
                   for s in strata.STRATIFIERS if s.id in compute.stratifiers_for(measure)]
    return {
        "resourceType": "Measure", "id": measure.id, "url": measure.url, "version": VERSION,
        "name": "".join(part.capitalize() for part in measure.id.split("-")), "title": measure.title,
        "status": "active", "experimental": False, "date": DATE, "publisher": "careplan",
        "description": measure.description,
        "subjectCodeableConcept": _concept("http://hl7.org/fhir/resource-types", "Patient"),
        "scoring": _concept(SCORING_SYSTEM, "continuous-variable" if continuous else "proportion"),
        "type": [_concept(TYPE_SYSTEM, "outcome" if measure.id in ("got-help",) else "process")],
        "improvementNotation": _concept(IMPROVEMENT_SYSTEM, measure.improvement),
        "guidance": f"Periods: ISO weeks (from Monday) or calendar months, UTC; a member's period is given by its "
                    f"{measure.period_event}. Unit: {measure.unit}. Counts of 1 to {strata.SMALL_CELL_MAX} are "
                    "suppressed (complementary suppression across strata).",
        "group": [{"description": measure.title, "population": populations, "stratifier": stratifiers}],
    }


def measure_resources() -> list[dict]:
    """Return every Measure resource."""
    return [measure_resource(m) for m in DEFINITIONS]


def write_files(fhir_dir: Path) -> list[Path]:
    """Write the Measure resources to fhir_dir/measures/ (one file each); return the paths."""
    folder = fhir_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for resource in measure_resources():
        path = folder / f"measure-{resource['id']}.json"
        path.write_text(json.dumps(resource, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


# -- MeasureReport -----------------------------------------------------------------------------------------------


def _count(code: str, count: int | None, subject_list: str | None = None) -> dict:
    population: dict = {"code": _concept(POPULATION_SYSTEM, code)}
    if count is None:
        population["_count"] = MASKED
    else:
        population["count"] = count
    if subject_list:
        population["subjectResults"] = {"reference": f"#{subject_list}"}
    return population


def _score(measure: MeasureDefinition, point: compute.Point) -> dict:
    if point.suppressed or point.value is None:
        return dict(MASKED) if point.suppressed else {}
    if measure.kind == CONTINUOUS:
        return {"value": point.value, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}
    return {"value": point.value}


def _populations(measure: MeasureDefinition, point: compute.Point, lists: dict[str, str] | None = None) -> list:
    lists = lists or {}
    if measure.kind == CONTINUOUS:
        return [_count("measure-population", point.denominator, lists.get("denominator"))]
    return [_count("denominator", point.denominator, lists.get("denominator")),
            _count("numerator", point.numerator, lists.get("numerator"))]


def _group(measure: MeasureDefinition, point: compute.Point, by_stratifier: dict[str, compute.Result],
           lists: dict[str, str] | None = None) -> dict:
    group: dict = {"population": _populations(measure, point, lists)}
    score = _score(measure, point)
    if score:
        group["measureScore"] = score
    stratifiers = []
    for stratifier, result in by_stratifier.items():
        strata_ = []
        for value, points in result.strata.items():
            cell = points[0]
            stratum: dict = {"value": {"text": value}, "population": _populations(measure, cell)}
            score = _score(measure, cell)
            if score:
                stratum["measureScore"] = score
            strata_.append(stratum)
        if strata_:
            stratifiers.append({"code": [_concept(STRATIFIER_SYSTEM, stratifier)], "stratum": strata_})
    if stratifiers:
        group["stratifier"] = stratifiers
    return group


def _instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary_report(overall: compute.Result, by_stratifier: dict[str, compute.Result]) -> dict:
    """Return the summary MeasureReport of a measure evaluated over one period (stratified when given)."""
    measure = overall.measure
    point = overall.points[0]
    report = _report(measure, overall, "summary")
    report["group"] = [_group(measure, point, {s: r for s, r in by_stratifier.items()
                                               if any(k != strata.UNKNOWN for k in r.strata)})]
    return report


def subject_list_report(overall: compute.Result, found: dict) -> dict:
    """Return the subject-list MeasureReport: counts unsuppressed, with contained Lists of the visible members.

    found is compute.visible_members' answer for the same period.
    """
    measure = overall.measure
    report = _report(measure, overall, "subject-list")
    contained = []
    lists = {}
    for part in ("denominator", "numerator"):
        entries = [{"item": {"reference": m.reference.partition("#")[0]}} for m in found[part]
                   if "/" in m.reference]
        contained.append({"resourceType": "List", "id": part, "status": "current", "mode": "snapshot",
                          "title": f"{measure.title}: {part}", **({"entry": entries} if entries else {})})
        lists[part] = part
    point = compute.point_of(measure, found["period_start"], found["period_end"], found["denominator"])
    report["contained"] = contained
    report["group"] = [_group(measure, point, {}, lists)]
    if found.get("hidden"):
        report["extension"] = [{"url": "https://careplan.example.org/fhir/StructureDefinition/hidden-members",
                                "valueInteger": found["hidden"]}]
    return report


def _report(measure: MeasureDefinition, result: compute.Result, report_type: str) -> dict:
    start: date = result.points[0].period_start
    end: date = result.points[-1].period_end
    return {"resourceType": "MeasureReport", "status": "complete", "type": report_type, "measure": measure.url,
            "date": _instant(result.evaluated_at or datetime.now(timezone.utc)),
            "period": {"start": start.isoformat(), "end": end.isoformat()},
            "improvementNotation": _concept(IMPROVEMENT_SYSTEM, measure.improvement)}
