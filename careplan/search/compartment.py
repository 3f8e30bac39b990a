"""The Patient compartment: which resources belong to a patient, from the official CompartmentDefinition.

https://hl7.org/fhir/R4/compartmentdefinition.html
https://hl7.org/fhir/R4/compartmentdefinition-patient.html
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from sqlalchemy import ColumnElement, and_, exists, or_

from careplan.models import Resource, SearchReference
from careplan.search.parameters import DEFAULT_FHIR_DIR
from careplan.search.query import alias

COMPARTMENT_FILE = Path("definitions") / "compartmentdefinition-patient.json"
OWNER_TYPE = "Patient"


@lru_cache(maxsize=None)
def patient_compartment(fhir_dir: Path | None = None) -> dict[str, tuple[str, ...]]:
    """Return, per resource type, the reference parameters that put a resource in a patient's compartment."""
    path = (fhir_dir or DEFAULT_FHIR_DIR) / COMPARTMENT_FILE
    with path.open(encoding="utf-8") as f:
        definition = json.load(f)
    return {r["code"]: tuple(r["param"]) for r in definition.get("resource", []) if r.get("param")}


def member_types() -> tuple[str, ...]:
    """Return the resource types that can be in a patient's compartment (Patient itself included)."""
    return tuple(sorted({OWNER_TYPE, *patient_compartment()}))


def in_compartment(patient_id: str, types: tuple[str, ...], *, entity=Resource) -> ColumnElement[bool]:
    """Return the condition "entity is in the compartment of Patient/patient_id", for resources of types.

    One EXISTS over the references to the patient (index on target_type, target_id) serves every type at once;
    the patient itself belongs to its own compartment.
    """
    link = alias(SearchReference)
    definitions = patient_compartment()
    by_type = [and_(link.res_type == t, link.param.in_(definitions[t])) for t in types if t in definitions]
    members = []
    if by_type:
        members.append(exists().where(link.resource_pk == entity.pk, link.target_type == OWNER_TYPE,
                                      link.target_id == patient_id, or_(*by_type)))
    if OWNER_TYPE in types:
        members.append(and_(entity.res_type == OWNER_TYPE, entity.res_id == patient_id))
    return or_(*members)
