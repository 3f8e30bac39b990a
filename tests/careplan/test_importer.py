"""careplan import: Bundles and NDJSON into the store, resumable, with failures reported without patient data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from careplan import jsonutil
from careplan.cli import main
from careplan.importer import Importer
from careplan.models import Resource
from careplan.store.records import StoredResource
from careplan.store.repository import as_record
from tests.factories import observation, patient

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = REPO_ROOT.parent / "shared" / "data" / "synthea"
ORG_ID = "https://careplan.example.org/org"


def synthea_files() -> list[Path]:
    """Return the five Synthea sample files in load order; fail (never skip) when they are missing."""
    assert SYNTHEA.is_dir(), f"the Synthea sample data is missing: expected it at {SYNTHEA}"
    reference = [*sorted(SYNTHEA.glob("hospitalInformation*.json")),
                 *sorted(SYNTHEA.glob("practitionerInformation*.json"))]
    patients = sorted(p for p in SYNTHEA.glob("*.json") if p not in reference)
    assert len(reference) == 2 and len(patients) == 3, sorted(p.name for p in SYNTHEA.iterdir())
    return reference + patients


def stored(database) -> list[StoredResource]:
    with database.reading() as session:
        return [as_record(row) for row in session.scalars(select(Resource).where(Resource.deleted.is_(False)))]


def import_cli(database_url, *args):
    return CliRunner().invoke(main, ["import", *map(str, args)], env={"CAREPLAN_DATABASE_URL": database_url})


def write_ndjson(path: Path, resources) -> Path:
    path.write_text("".join(jsonutil.dumps(r) + "\n" for r in resources))
    return path


class Interrupt:
    """A progress callback that presses Ctrl-C once the import has advanced past a number of entries or lines."""

    def __init__(self, after: int):
        self.after, self.seen = after, 0

    def __call__(self, steps: int) -> None:
        self.seen += steps
        if self.seen >= self.after:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_imports_the_synthea_sample_with_skip_unsupported(database_url, database, tmp_path):
    files = synthea_files()
    state_dir = tmp_path / "state"
    result = import_cli(database_url, "--skip-unsupported", "--state-dir", state_dir, *files)

    assert result.exit_code == 0, result.output
    assert "4987 created, 0 updated, 0 unchanged, 0 failed, 512 skipped" in result.output
    rows = stored(database)
    assert Counter(r.resource_type for r in rows) == {
        "Organization": 1191, "Location": 1191, "Practitioner": 1191, "PractitionerRole": 1191,
        "Patient": 3, "Encounter": 92, "Observation": 124, "Condition": 1, "Provenance": 3}
    by_reference = {f"{r.resource_type}/{r.id}": r.content for r in rows}
    encounters = [r.content for r in rows if r.resource_type == "Encounter"]
    for encounter in encounters:
        # Conditional references became real ones, to the resources the batch files created.
        assert encounter["serviceProvider"]["reference"] in by_reference
        assert encounter["subject"]["reference"] in by_reference
        for participant in encounter["participant"]:
            assert participant["individual"]["reference"].startswith("Practitioner/")
            assert participant["individual"]["reference"] in by_reference
    for obs in (r.content for r in rows if r.resource_type == "Observation"):
        assert obs["encounter"]["reference"] in by_reference
    provenance_targets = [t["reference"] for r in rows if r.resource_type == "Provenance" for t in r.content["target"]]
    # References to the entries left out (Claim, Immunization...) stay as sent; the others were resolved.
    assert any(t.startswith("urn:uuid:") for t in provenance_targets)
    assert all(t in by_reference for t in provenance_targets if not t.startswith("urn:uuid:"))

    again = import_cli(database_url, "--skip-unsupported", "--state-dir", state_dir, *files)
    assert again.exit_code == 0, again.output
    assert "5 already imported: 0 created" in again.output
    assert len(stored(database)) == len(rows)


def test_a_patient_bundle_without_skip_unsupported_fails_clearly_and_loads_nothing(database_url, database,
                                                                                    tmp_path):
    patient_file = synthea_files()[2]
    result = import_cli(database_url, "--state-dir", tmp_path, patient_file)
    assert result.exit_code == 1
    assert f"{patient_file.name} entry 2: 404 not-supported" in result.output
    assert "(Immunization)" in result.output
    assert stored(database) == []


def test_ndjson_lines_become_updates_or_creates_in_chunks(database_url, database, tmp_path):
    lines = [patient(id="p1"), patient(id="p2", gender="male"), observation(subject={"reference": "Patient/p1"}),
             observation(subject={"reference": "Patient/p2"}), patient()]
    source = write_ndjson(tmp_path / "patients.ndjson", lines)
    result = import_cli(database_url, "--batch-size", "2", "--state-dir", tmp_path / "state", source)
    assert result.exit_code == 0, result.output
    assert "5 created, 0 updated, 0 unchanged, 0 failed" in result.output
    rows = stored(database)
    assert {r.id for r in rows if r.resource_type == "Patient"} >= {"p1", "p2"}
    assert Counter(r.resource_type for r in rows) == {"Patient": 3, "Observation": 2}

    # Changed content is a new file: it is imported again, and lines with ids update in place.
    write_ndjson(source, [patient(id="p1", gender="other"), patient(id="p2", gender="male")])
    result = import_cli(database_url, "--state-dir", tmp_path / "state", source)
    assert "0 created, 1 updated, 1 unchanged, 0 failed" in result.output


def test_a_bad_line_fails_alone_and_is_reported_without_patient_data(database_url, database, tmp_path):
    secret = patient(id="p3", name=[{"family": "Zyxwvutsrq", "given": ["Qwertzuiop"]}], gender="not-a-gender")
    source = tmp_path / "mixed.ndjson"
    source.write_text("\n".join([jsonutil.dumps(patient(id="p1")), jsonutil.dumps(patient(id="p2")),
                                 jsonutil.dumps(secret), "{not json Zyxwvutsrq", "",
                                 jsonutil.dumps(patient(id="p4"))]) + "\n")
    result = import_cli(database_url, "--batch-size", "10", "--state-dir", tmp_path / "state", source)
    assert result.exit_code == 1
    assert "3 created, 0 updated, 0 unchanged, 2 failed" in result.output
    assert "mixed.ndjson line 3: 400 code-invalid at Patient.gender" in result.output
    assert "mixed.ndjson line 4: 400 structure" in result.output
    assert "Zyxwvutsrq" not in result.output and "Qwertzuiop" not in result.output
    assert {r.id for r in stored(database)} == {"p1", "p2", "p4"}


def test_an_interrupted_ndjson_import_resumes_after_the_committed_chunks(database, tmp_path):
    source = write_ndjson(tmp_path / "obs.ndjson", [observation() for _ in range(7)])  # creates: no ids
    state_dir = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        Importer(database, batch_size=2, state_dir=state_dir, progress=Interrupt(after=4)).run([source])
    assert len(stored(database)) == 4

    summary = Importer(database, batch_size=2, state_dir=state_dir).run([source])
    assert (summary.created, summary.failed) == (3, 0)
    assert len(stored(database)) == 7
    assert Importer(database, batch_size=2, state_dir=state_dir).run([source]).files_already_done == 1
    assert len(stored(database)) == 7


def test_an_interrupted_batch_bundle_resumes_at_the_next_entry(database, tmp_path):
    entries = [{"resource": observation(), "request": {"method": "POST", "url": "Observation"}} for _ in range(5)]
    source = tmp_path / "batch.json"
    source.write_text(jsonutil.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}))
    state_dir = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        Importer(database, batch_size=100, state_dir=state_dir, progress=Interrupt(after=3)).run([source])
    assert len(stored(database)) == 3
    saved = json.loads(next(state_dir.glob("batch.json.*.import-state.json")).read_text())
    assert saved["done"] == 3 and not saved["finished"]

    summary = Importer(database, batch_size=100, state_dir=state_dir).run([source])
    assert summary.created == 2
    assert len(stored(database)) == 5


def test_a_failed_unit_is_tried_again_on_the_next_run(database_url, database, tmp_path):
    org_criteria = f"identifier={ORG_ID}|ORG-7"
    patients = tmp_path / "patients.json"
    patients.write_text(jsonutil.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(managingOrganization={"reference": f"Organization?{org_criteria}"}),
         "request": {"method": "POST", "url": "Patient"}}]}))
    organizations = tmp_path / "organizations.json"
    organizations.write_text(jsonutil.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Organization", "identifier": [{"system": ORG_ID, "value": "ORG-7"}]},
         "request": {"method": "POST", "url": "Organization", "ifNoneExist": org_criteria}}]}))
    state = tmp_path / "state"

    first = import_cli(database_url, "--state-dir", state, patients)  # loaded before what it refers to
    assert first.exit_code == 1
    assert "patients.json entry 0: 412 not-found at Bundle.entry[0].resource.managingOrganization.reference" \
        in first.output
    second = import_cli(database_url, "--state-dir", state, organizations, patients)
    assert second.exit_code == 0, second.output
    assert "2 created" in second.output
    assert Counter(r.resource_type for r in stored(database)) == {"Organization": 1, "Patient": 1}


def test_files_that_are_not_bundles_are_reported_and_the_rest_still_loads(database_url, database, tmp_path):
    collection = tmp_path / "collection.json"
    collection.write_text(jsonutil.dumps({"resourceType": "Bundle", "type": "collection"}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceType": "Patient"}\n{"resourceType": "Patient"}\n')
    good = write_ndjson(tmp_path / "good.ndjson", [patient(id="p1")])
    result = import_cli(database_url, "--state-dir", tmp_path / "state", collection, broken, good)
    assert result.exit_code == 1
    assert "collection.json: 400: Bundle.type must be transaction or batch" in result.output
    assert "broken.json: 400: not valid JSON" in result.output and ".ndjson" in result.output
    assert [r.id for r in stored(database)] == ["p1"]


def test_import_refuses_an_unmigrated_database(tmp_path):
    source = write_ndjson(tmp_path / "one.ndjson", [patient(id="p1")])
    result = import_cli(f"sqlite:///{tmp_path / 'new.sqlite3'}", source)
    assert result.exit_code == 1
    assert "careplan db upgrade" in result.output
