#!/usr/bin/env python3
"""Benchmark ingest of transaction Bundles through careplan.store.bundle, against a plain bulk insert of the same rows.

Both sides write the same Bundles in the same run, on the same database, one database transaction per Bundle, taking
turns (``--rounds``) so that whatever else the machine does weighs on both alike:

- **careplan**: ``careplan.store.bundle.transaction`` in-process: parse and validate every entry, assign ids,
  resolve ``urn:uuid:`` and conditional references, insert ``resource``/``resource_version`` rows and the search
  index rows through the store, in the order the FHIR transaction rules set;
- **baseline**: SQLAlchemy Core bulk inserts (``executemany``) of the same ``resource`` and ``resource_version``
  rows and the index rows ``careplan.search.extract`` computes for them (extraction is timed with the baseline:
  both sides compute the same index). Ids, reference resolution and the stamped JSON are prepared untimed.

The figure that matters is the ratio careplan/baseline (resources per second), not the absolute numbers.

    .venv/bin/python bench/bench_ingest.py              # fresh PostgreSQL database careplan_bench_ingest
    .venv/bin/python bench/bench_ingest.py --sqlite     # temporary SQLite file
    .venv/bin/python bench/bench_ingest.py --quick      # smoke run (10 Bundles)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(PROJECT_ROOT))

from sqlalchemy import insert, text  # noqa: E402

from careplan import migrations  # noqa: E402
from careplan.db import Database  # noqa: E402
from careplan.models import (  # noqa: E402
    INDEX_TABLES,
    Resource,
    ResourceVersion,
    SearchDate,
    SearchNumber,
    SearchQuantity,
    SearchReference,
    SearchString,
    SearchToken,
    SearchUri,
)
from careplan.search import extract  # noqa: E402
from careplan.search.values import (  # noqa: E402
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from careplan.store import bundle as bundles  # noqa: E402
from careplan.store import repository  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_PG_DATABASE = "careplan_bench_ingest"
PROTECTED_DATABASES = {"test", "postgres", "template0", "template1"}
ORG_SYSTEM = "https://bench.example.org/org"
MRN_SYSTEM = "https://bench.example.org/mrn"
MAX_INDEXED = 1000  # as careplan.store.index cuts long values
TABLE_FOR = {TokenIndex: SearchToken, StringIndex: SearchString, DateIndex: SearchDate,
             ReferenceIndex: SearchReference, NumberIndex: SearchNumber,
             QuantityIndex: SearchQuantity, UriIndex: SearchUri}


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# -- workload ----------------------------------------------------------------------------------------------

_GIVEN = ["Zoë", "Léa", "Noah", "Amir", "Chloé", "Mateo", "Aroha", "Siddharth", "Ingrid", "Kwame"]
_FAMILY = ["Ångström", "Tremblay", "Nguyen", "Okafor", "García", "Kowalski", "Singh", "O'Brien", "Haddad"]
_OBSERVATIONS = [("44261-6", "PHQ-9 total score", "{score}"), ("70274-6", "GAD-7 total score", "{score}"),
                 ("8867-4", "Heart rate", "/min"), ("29463-7", "Body weight", "kg"),
                 ("72166-2", "Tobacco smoking status", None)]
_CONDITIONS = [("35489007", "Depressive disorder"), ("197480006", "Anxiety disorder"),
               ("7200002", "Alcoholism"), ("191816009", "Drug dependence")]


def make_bundle(rng: random.Random, n: int) -> list[dict]:
    """Return the entries of one transaction Bundle: a Patient and their encounters, observations, conditions, plan."""
    def urn() -> str:
        return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"

    patient_urn = urn()
    entries = [_post(patient_urn, {
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": f"MRN-{n:08d}"}],
        "active": True,
        "name": [{"use": "official", "family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}],
        "telecom": [{"system": "phone", "value": f"+1-555-{rng.randint(0, 9999):04d}", "use": "mobile"}],
        "gender": rng.choice(["female", "male", "other"]),
        "birthDate": f"{rng.randint(1940, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "address": [{"line": [f"{rng.randint(1, 999)} Rue Sainte-Catherine"], "city": "Montréal",
                     "postalCode": "H2X 1Y4", "country": "CA"}],
        "managingOrganization": {"reference": f"Organization?identifier={ORG_SYSTEM}|clinic"},
    })]
    for visit in range(4):
        day = f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}"
        encounter_urn = urn()
        entries.append(_post(encounter_urn, {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                      "display": "ambulatory"},
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003",
                                  "display": "Encounter for check up"}]}],
            "subject": {"reference": patient_urn},
            "period": {"start": f"{day}T09:{visit:02d}:00-04:00", "end": f"{day}T09:{visit + 30:02d}:00-04:00"},
            "serviceProvider": {"reference": f"Organization?identifier={ORG_SYSTEM}|clinic"},
        }))
        for code, display, unit in _OBSERVATIONS:
            observation = {
                "resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "survey" if unit == "{score}" else "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
                "subject": {"reference": patient_urn}, "encounter": {"reference": encounter_urn},
                "effectiveDateTime": f"{day}T09:{visit + 10:02d}:00-04:00",
            }
            if unit:
                observation["valueQuantity"] = {"value": rng.randint(1, 120), "unit": unit,
                                                "system": "http://unitsofmeasure.org", "code": unit}
            else:
                observation["valueCodeableConcept"] = {"coding": [{"system": "http://snomed.info/sct",
                                                                   "code": "266919005", "display": "Never smoked"}]}
            entries.append(_post(urn(), observation))
    for code, display in rng.sample(_CONDITIONS, 2):
        entries.append(_post(urn(), {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
            "subject": {"reference": patient_urn}, "onsetDateTime": "2025-03-01",
        }))
    entries.append(_post(urn(), {
        "resourceType": "CarePlan", "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000"}]}],
        "subject": {"reference": patient_urn}, "period": {"start": "2026-10-01"},
        "activity": [{"detail": {"status": "scheduled", "description": "Weekly peer support",
                                 "scheduledTiming": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}}}}],
    }))
    return entries


def _post(full_url: str, resource: dict) -> dict:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


ORGANIZATION = {"resourceType": "Organization", "identifier": [{"system": ORG_SYSTEM, "value": "clinic"}],
                "name": "Clinique Bench"}


# -- the two writers ----------------------------------------------------------------------------------------


def ingest_careplan(db: Database, workload: list[list[dict]]) -> float:
    """Write every Bundle through careplan.store.bundle; return the seconds it took."""
    started = time.perf_counter()
    for entries in workload:
        bundles.transaction(db, entries)
    return time.perf_counter() - started


def _resolve(value, references: dict[str, str]):
    if isinstance(value, dict):
        return {k: (references.get(v, v) if k == "reference" and isinstance(v, str) else _resolve(v, references))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, references) for v in value]
    return value


def prepare_baseline(workload: list[list[dict]], organization: str) -> list[list[dict]]:
    """Return, per Bundle, the stored JSON careplan would write: ids assigned, references resolved, meta stamped."""
    now = datetime.now(timezone.utc)
    prepared = []
    for entries in workload:
        ids = {e["fullUrl"]: (e["resource"]["resourceType"], str(uuid.uuid4())) for e in entries}
        references = {url: f"{kind}/{rid}" for url, (kind, rid) in ids.items()}
        references[f"Organization?identifier={ORG_SYSTEM}|clinic"] = organization
        prepared.append([repository.stamp(_resolve(e["resource"], references), resource_id=ids[e["fullUrl"]][1],
                                          version_id=1, last_updated=now) for e in entries])
    return prepared


def ingest_baseline(db: Database, prepared: list[list[dict]]) -> tuple[float, float]:
    """Bulk-insert the same rows; return (seconds in all, seconds of index extraction within)."""
    extracting = 0.0
    started = time.perf_counter()
    for contents in prepared:
        now = datetime.now(timezone.utc)
        with db.engine.begin() as connection:
            rows = [{"res_type": c["resourceType"], "res_id": c["id"], "version_id": 1, "last_updated": now,
                     "deleted": False, "content": c} for c in contents]
            pks = connection.execute(insert(Resource).returning(Resource.pk, sort_by_parameter_order=True),
                                     rows).scalars().all()
            connection.execute(insert(ResourceVersion), [
                {"resource_pk": pk, "res_type": r["res_type"], "res_id": r["res_id"], "version_id": 1,
                 "last_updated": now, "method": "POST", "deleted": False, "content": r["content"]}
                for pk, r in zip(pks, rows)])
            tick = time.perf_counter()
            index_rows: dict = {}
            for pk, content in zip(pks, contents):
                for value in extract.extract(content):
                    row = {k: (v[:MAX_INDEXED] if isinstance(v, str) else v) for k, v in vars(value).items()}
                    row["resource_pk"], row["res_type"] = pk, content["resourceType"]
                    index_rows.setdefault(TABLE_FOR[type(value)], []).append(row)
            extracting += time.perf_counter() - tick
            for table, table_rows in index_rows.items():
                connection.execute(insert(table), table_rows)
    return time.perf_counter() - started, extracting


# -- database ----------------------------------------------------------------------------------------------


@dataclass
class Target:
    backend: str
    url: str
    database: str | None = None
    admin_url: str | None = None
    temp_dir: Path | None = None


def prepare_database(args) -> Target:
    if args.sqlite:
        temp_dir = Path(tempfile.mkdtemp(prefix="careplan-bench-ingest-"))
        return Target("sqlite", f"sqlite:///{temp_dir / 'bench.sqlite3'}", temp_dir=temp_dir)
    import psycopg
    from psycopg import sql

    database = args.database
    if database in PROTECTED_DATABASES:
        raise BenchError(f"refusing to benchmark in the database {database!r}: give it a database of its own")
    try:
        with psycopg.connect(args.pg_admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot create the PostgreSQL database {database} through {args.pg_admin_url}: {exc}\n"
                         "start PostgreSQL, pass --pg-admin-url, or use --sqlite") from None
    libpq = args.pg_admin_url.rsplit("/", 1)[0] + "/" + database
    return Target("postgresql", "postgresql+psycopg://" + libpq.split("://", 1)[1], database=database,
                  admin_url=args.pg_admin_url)


def drop_database(target: Target) -> None:
    if target.temp_dir is not None:
        shutil.rmtree(target.temp_dir, ignore_errors=True)
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(target.admin_url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.database)))


def empty(db: Database) -> None:
    """Remove every resource row (and refresh PostgreSQL's statistics), so each side starts from the same state."""
    with db.engine.begin() as connection:
        if db.is_postgresql:
            tables = ", ".join(t.__tablename__ for t in (*INDEX_TABLES, ResourceVersion, Resource))
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        else:
            for table in (*INDEX_TABLES, ResourceVersion, Resource):
                connection.execute(table.__table__.delete())
    if db.is_postgresql:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))


def create_organization(db: Database) -> str:
    """Create the Organization every Bundle refers to conditionally; return its reference."""
    outcome = bundles.transaction(db, [_post("urn:uuid:00000000-0000-4000-8000-000000000000", ORGANIZATION)])
    return outcome[0].stored.reference


def count_rows(db: Database) -> dict[str, int]:
    with db.engine.connect() as connection:
        return {t.__tablename__: connection.execute(text(f"SELECT count(*) FROM {t.__tablename__}")).scalar_one()
                for t in (Resource, ResourceVersion, *INDEX_TABLES)}


# -- running -----------------------------------------------------------------------------------------------


@dataclass
class Result:
    bundles: int
    resources: int
    careplan_seconds: float
    baseline_seconds: float
    baseline_extract_seconds: float
    careplan_per_second: float
    baseline_per_second: float
    ratio: float  # careplan resources/s over baseline resources/s
    baseline_db_only_per_second: float
    rows_careplan: dict
    rows_baseline: dict
    rounds: int
    load_average: float  # 1-minute load average at the end: above the CPU count, other work shared the machine


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before.get(table, 0) for table in after}


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for table, rows in more.items():
        total[table] = total.get(table, 0) + rows


def run(args) -> Result:
    rng = random.Random(args.seed)
    workload = [make_bundle(rng, n) for n in range(args.bundles)]
    warmup = [make_bundle(rng, args.bundles + n) for n in range(2)]
    resources = sum(len(entries) for entries in workload)
    rounds = max(1, min(args.rounds, args.bundles))
    careplan_seconds = baseline_seconds = extract_seconds = 0.0
    rows_careplan: dict[str, int] = {}
    rows_baseline: dict[str, int] = {}
    target = prepare_database(args)
    try:
        migrations.upgrade(target.url)
        db = Database(target.url)
        try:
            empty(db)
            organization = create_organization(db)
            ingest_careplan(db, warmup[:1])  # imports, caches and connections warm, untimed
            ingest_baseline(db, prepare_baseline(warmup[1:], organization))
            # The sides take turns, a slice of the Bundles each, so that anything else the machine does (and the
            # tables growing) weighs on both alike.
            for round_number in range(rounds):
                mine = slice(round_number * args.bundles // rounds, (round_number + 1) * args.bundles // rounds)
                before = count_rows(db)
                careplan_seconds += ingest_careplan(db, workload[mine])
                middle = count_rows(db)
                seconds, extracting = ingest_baseline(db, prepare_baseline(workload[mine], organization))
                baseline_seconds += seconds
                extract_seconds += extracting
                _add(rows_careplan, _delta(middle, before))
                _add(rows_baseline, _delta(count_rows(db), middle))
        finally:
            db.dispose()
    finally:
        if not args.keep:
            drop_database(target)
    if rows_careplan != rows_baseline:
        raise BenchError(f"the two sides wrote different rows: careplan {rows_careplan}, baseline {rows_baseline}")
    careplan_rate, baseline_rate = resources / careplan_seconds, resources / baseline_seconds
    return Result(args.bundles, resources, careplan_seconds, baseline_seconds, extract_seconds, careplan_rate,
                  baseline_rate, careplan_rate / baseline_rate, resources / (baseline_seconds - extract_seconds),
                  rows_careplan, rows_baseline, rounds, os.getloadavg()[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead of PostgreSQL")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL,
                        help="PostgreSQL URL used to create and drop the benchmark database")
    parser.add_argument("--database", default=DEFAULT_PG_DATABASE, help="name of the database to (re)create")
    parser.add_argument("--bundles", type=int, default=100, help="transaction Bundles to ingest (28 resources each)")
    parser.add_argument("--rounds", type=int, default=5, help="turns each side takes (a slice of the Bundles each)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 Bundles")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--output", type=Path, help="JSON results file (default: bench/results/<timestamp>-ingest-...)")
    args = parser.parse_args(argv)
    if args.quick:
        args.bundles = 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"bench_ingest: {exc}", file=sys.stderr)
        return 2
    backend = "sqlite" if args.sqlite else "postgresql"
    print(f"ingest of {result.bundles} transaction Bundles, {result.resources} resources ({backend}):")
    print(f"  careplan  {result.careplan_per_second:8.1f} resources/s  ({result.careplan_seconds:.2f} s)")
    print(f"  baseline  {result.baseline_per_second:8.1f} resources/s  ({result.baseline_seconds:.2f} s, of which "
          f"index extraction {result.baseline_extract_seconds:.2f} s; "
          f"{result.baseline_db_only_per_second:.1f} resources/s without it)")
    print(f"  ratio careplan/baseline: {result.ratio:.2f}   ({result.rounds} rounds; load average "
          f"{result.load_average:.1f} on {os.cpu_count()} CPUs)")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS_DIR / f"{stamp}-ingest-{backend}{'-quick' if args.quick else ''}.json"
    output.write_text(json.dumps({"benchmark": "ingest", "backend": backend, "when": stamp,
                                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                              "python": platform.python_version()},
                                  "result": asdict(result)}, indent=2))
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
