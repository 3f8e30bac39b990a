#!/usr/bin/env python3
"""Benchmark the common care searches on PostgreSQL as the store grows: latency at 100k (and 1M) against 10k.

The searches are index-driven when their latency stays flat as the data grows, so the figure that matters is the
ratio of each search's median latency at the larger size to its median at 10k resources, measured in the same run
on the same machine. The engine is called directly (no HTTP), so the numbers are the search itself: matching,
total, page fetch and includes.

Data is loaded with COPY in a few large transactions, index rows extracted by careplan's own extraction, into a
database of its own (careplan_bench_search, created and dropped here).

    .venv/bin/python bench/bench_search.py            # 10k and 100k resources, a few minutes on 2 cores
    .venv/bin/python bench/bench_search.py --full     # also 1M resources (long: extraction runs for each)
    .venv/bin/python bench/bench_search.py --quick    # 2k and 10k, a smoke run
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from careplan import jsonutil, migrations  # noqa: E402
from careplan.config import normalize_database_url  # noqa: E402
from careplan.db import Database  # noqa: E402
from careplan.search import engine  # noqa: E402
from careplan.search.extract import extract  # noqa: E402
from careplan.search.request import parse_request  # noqa: E402
from careplan.search.values import (  # noqa: E402
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from careplan.store.repository import stamp  # noqa: E402

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "careplan_bench_search"
CHUNK = 20_000  # resources per loading transaction
SEARCHES = [
    ("CarePlan", "patient=Patient/{patient}&status=active"),
    ("Task", "owner=Organization/{organization}&status=requested"),
    ("Patient", "identifier=urn:mrn|{mrn}"),
    ("Patient", "name=zo"),
    ("Patient", "name=zo&_total=none"),
    ("CarePlan", "patient=Patient/{patient}&_include=CarePlan:goal"),
]
_FAMILY = ["Tremblay", "Nguyen", "Okafor", "García", "Kowalski", "Singh", "O'Brien", "Haddad", "Ito", "Roy",
           "Gagnon", "Côté", "Bouchard", "Morin", "Lavoie", "Fortin", "Gauthier", "Pelletier", "Bélanger", "Lévesque",
           "Bergeron", "Leblanc", "Paquette", "Girard", "Simard", "Boucher", "Caron", "Beaulieu", "Cloutier", "Zorić"]
_GIVEN = ["Léa", "Noah", "Amir", "Chloé", "Mateo", "Aroha", "Siddharth", "Ingrid", "Kwame", "Mei", "Jonas", "Zoë",
          "Olivia", "Liam", "Emma", "William", "Alice", "Thomas", "Florence", "Félix", "Charlotte", "Jacob", "Rosalie",
          "Édouard", "Béatrice"]
# The same table names and columns careplan.store.index writes.
_TABLES = {
    TokenIndex: ("search_token", ("param", "system", "code", "text")),
    StringIndex: ("search_string", ("param", "value", "normalized")),
    DateIndex: ("search_date", ("param", "low", "high")),
    ReferenceIndex: ("search_reference", ("param", "target_type", "target_id", "url")),
    NumberIndex: ("search_number", ("param", "value")),
    QuantityIndex: ("search_quantity", ("param", "value", "system", "code", "unit")),
    UriIndex: ("search_uri", ("param", "uri")),
}


# -- workload ----------------------------------------------------------------------------------------------


def counts(size: int) -> dict[str, int]:
    """Split size resources into a care network: per patient two plans, two goals and about five tasks."""
    organizations = max(size // 100, 10)
    patients = max((size - organizations) // 10, 10)
    return {"Organization": organizations, "Patient": patients, "Goal": 2 * patients, "CarePlan": 2 * patients,
            "Task": size - organizations - 5 * patients}


def resource(kind: str, n: int, sizes: dict[str, int], rng: random.Random) -> dict:
    """Return resource number n of kind; references stay inside the given sizes."""
    patients, organizations = sizes["Patient"], sizes["Organization"]
    if kind == "Organization":
        return {"resourceType": "Organization", "id": f"o{n}", "active": True, "name": f"Agency {n}",
                "identifier": [{"system": "urn:org", "value": str(n)}]}
    if kind == "Patient":
        return {"resourceType": "Patient", "id": f"p{n}", "identifier": [{"system": "urn:mrn", "value": str(n)}],
                "name": [{"family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}],
                "gender": rng.choice(["female", "male", "other"]),
                "birthDate": f"{rng.randint(1940, 2008)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "managingOrganization": {"reference": f"Organization/o{n % organizations}"}}
    if kind == "Goal":
        return {"resourceType": "Goal", "id": f"g{n}", "lifecycleStatus": rng.choice(["active", "proposed"]),
                "description": {"text": "Stable housing"}, "subject": {"reference": f"Patient/p{n // 2}"},
                "target": [{"dueDate": "2025-06-01"}]}
    if kind == "CarePlan":
        return {"resourceType": "CarePlan", "id": f"cp{n}", "intent": "plan",
                "status": rng.choice(["active", "active", "completed", "draft", "revoked"]),
                "subject": {"reference": f"Patient/p{n // 2}"}, "goal": [{"reference": f"Goal/g{n}"}],
                "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "736378000"}]}],
                "period": {"start": "2024-01-15", "end": "2025-01-15"},
                "activity": [{"detail": {"status": "scheduled", "code": {"text": "Peer support"},
                                         "scheduledPeriod": {"start": "2024-02-01"}}}]}
    return {"resourceType": "Task", "id": f"t{n}", "intent": "order",
            "status": rng.choice(["requested", "accepted", "in-progress", "completed", "completed", "cancelled"]),
            "for": {"reference": f"Patient/p{rng.randrange(patients)}"},
            "owner": {"reference": f"Organization/o{rng.randrange(organizations)}"},
            "focus": {"reference": f"CarePlan/cp{rng.randrange(2 * patients)}"},
            "authoredOn": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z"}


# -- loading -----------------------------------------------------------------------------------------------


def load(database: Database, sizes: dict[str, int], start: dict[str, int], rng: random.Random) -> int:
    """COPY the resources numbered from start up to sizes (per kind) with their versions and index rows."""
    batch: list[dict] = []
    loaded = 0
    for kind, total in sizes.items():
        for n in range(start.get(kind, 0), total):
            batch.append(resource(kind, n, sizes, rng))
            if len(batch) >= CHUNK:
                loaded += _copy(database, batch)
                batch = []
    if batch:
        loaded += _copy(database, batch)
    return loaded


def _copy(database: Database, resources: list[dict]) -> int:
    now = datetime.now(timezone.utc)
    with database.engine.begin() as connection:
        first = connection.execute(text("SELECT nextval(pg_get_serial_sequence('resource', 'pk'))")).scalar_one()
        connection.execute(text("SELECT setval(pg_get_serial_sequence('resource', 'pk'), :last)"),
                           {"last": first + len(resources) - 1})
        resource_rows, version_rows = io.StringIO(), io.StringIO()
        index_rows: dict[str, io.StringIO] = {}
        for offset, body in enumerate(resources):
            pk = first + offset
            content = stamp(body, resource_id=body["id"], version_id=1, last_updated=now)
            document = jsonutil.dumps(content)
            resource_rows.write(_line([pk, body["resourceType"], body["id"], 1, now, False, document]))
            version_rows.write(_line([pk, body["resourceType"], body["id"], 1, now, "PUT", False, document]))
            for value in extract(content):
                table, columns = _TABLES[type(value)]
                index_rows.setdefault(table, io.StringIO()).write(
                    _line([pk, body["resourceType"], *(getattr(value, c) for c in columns)]))
        cursor = connection.connection.driver_connection.cursor()
        _copy_in(cursor, "resource (pk, res_type, res_id, version_id, last_updated, deleted, content)",
                 resource_rows)
        _copy_in(cursor, "resource_version (resource_pk, res_type, res_id, version_id, last_updated, method, "
                         "deleted, content)", version_rows)
        for table, rows in index_rows.items():
            columns = _columns(table)
            _copy_in(cursor, f"{table} (resource_pk, res_type, {', '.join(columns)})", rows)
    return len(resources)


def _columns(table: str) -> tuple[str, ...]:
    return next(columns for name, columns in _TABLES.values() if name == table)


def _copy_in(cursor, target: str, rows: io.StringIO) -> None:
    with cursor.copy(f"COPY {target} FROM STDIN") as copy:
        copy.write(rows.getvalue())


def _line(values: list) -> str:
    return "\t".join(_field(v) for v in values) + "\n"


def _field(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    text_value = str(value)
    return text_value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# -- measuring ---------------------------------------------------------------------------------------------


def measure(database: Database, sizes: dict[str, int], repeats: int, rng: random.Random) -> dict[str, dict]:
    """Return p50/p95 latency in ms of each search, with fresh random targets on each repeat."""
    figures = {}
    for resource_type, template in SEARCHES:
        timings = []
        for attempt in range(repeats + 5):
            query = template.format(patient=rng.randrange(sizes["Patient"]),
                                    organization=rng.randrange(sizes["Organization"]),
                                    mrn=rng.randrange(sizes["Patient"]))
            request = parse_request(parse_qsl(query), types=(resource_type,), strict=True, default_count=50,
                                    max_count=1000)
            began = time.perf_counter()
            with database.reading() as session:
                result = engine.search(session, request)
            elapsed = (time.perf_counter() - began) * 1000
            if attempt >= 5:  # the first few warm the caches and the connection pool
                timings.append(elapsed)
        timings.sort()
        figures[f"{resource_type}?{template}"] = {
            "p50": statistics.median(timings), "p95": timings[int(len(timings) * 0.95) - 1],
            "last_matches": len(result.matches), "last_total": result.total}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL, without a database")
    parser.add_argument("--full", action="store_true", help="also measure at 1M resources")
    parser.add_argument("--quick", action="store_true", help="2k and 10k resources only")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="leave the database in place afterwards")
    args = parser.parse_args()
    steps = [2_000, 10_000] if args.quick else [10_000, 100_000] + ([1_000_000] if args.full else [])
    admin = create_engine(normalize_database_url(f"{args.server.rstrip('/')}/postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        connection.execute(text(f"CREATE DATABASE {DATABASE}"))
    url = normalize_database_url(f"{args.server.rstrip('/')}/{DATABASE}")
    rng = random.Random(20261123)
    results: dict[int, dict] = {}
    database = None
    try:
        migrations.upgrade(url)
        database = Database(url)
        loaded: dict[str, int] = {}
        for size in steps:
            sizes = counts(size)
            began = time.perf_counter()
            # grow in place: earlier resources keep their ids, references spread over the new totals
            load(database, sizes, loaded, rng)
            loaded = sizes
            with database.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            print(f"loaded {size:,} resources in {time.perf_counter() - began:.0f} s", flush=True)
            results[size] = measure(database, sizes, args.repeats, rng)
            # other programs on the machine skew single figures; say how busy it was
            print(f"measured at {size:,}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
                  flush=True)
        report(steps, results)
    finally:
        if database is not None:
            database.dispose()
        if not args.keep:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        admin.dispose()
    return 0


def report(steps: list[int], results: dict[int, dict]) -> None:
    base = steps[0]
    header = f"{'search':<62}" + "".join(f"{f'p50/p95 ms @{s:,}':>22}" for s in steps) + "".join(
        f"{f'ratio {s // 1000}k/{base // 1000}k':>16}" for s in steps[1:])
    print(header)
    for name in results[base]:
        cells = "".join(f"{results[s][name]['p50']:>12.2f} / {results[s][name]['p95']:<7.2f}" for s in steps)
        ratios = "".join(f"{results[s][name]['p50'] / results[base][name]['p50']:>16.2f}" for s in steps[1:])
        print(f"{name:<62}{cells}{ratios}")


if __name__ == "__main__":
    sys.exit(main())
