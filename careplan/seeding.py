"""Load the demo data and conformance resources kept as JSON under fhir/ (idempotent)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from careplan import jsonutil
from careplan.db import Database
from careplan.store import service
from careplan.validation import validate_resource

log = logging.getLogger(__name__)
SEED_FOLDERS = ("examples",)


@dataclass
class SeedSummary:
    """How many seed resources were created, changed, or already as shipped."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


def resources_in(fhir_dir: Path):
    """Yield every resource in the seed folders (single resources or collection Bundles), in file order."""
    for folder in SEED_FOLDERS:
        for path in sorted((fhir_dir / folder).glob("*.json")):
            document = jsonutil.loads(path.read_bytes())
            if document.get("resourceType") == "Bundle":
                yield from (entry["resource"] for entry in document.get("entry", []))
            else:
                yield document


def load(db: Database, fhir_dir: Path) -> SeedSummary:
    """Create or refresh every seed resource under its fixed id, all in one transaction."""
    summary = SeedSummary()
    seeds = list(resources_in(fhir_dir))
    for resource in seeds:
        validate_resource(resource)
    with db.writing() as session:
        for resource in seeds:
            result = service.update_in(session, resource=resource, resource_id=resource["id"])
            if result.created:
                summary.created += 1
            elif result.unchanged:
                summary.unchanged += 1
            else:
                summary.updated += 1
    log.info("seeded %d resources", len(seeds))
    return summary
