#!/usr/bin/env python3
"""Benchmark the coordinator's worklist and the partner's referral inbox at N=100 versus N=2,000 patients.

Two databases are seeded with the synthetic demo story (``careplan.demo.load``: enrolments, coordinated care plans
with care teams, goals, activities, referrals that partners accept, decline and work), one with N small patients,
one with N large. On each, ``careplan.coordination.worklist.build`` (for the demo coordinator) and
``careplan.referrals.service.inbox`` (for the demo housing partner) are timed as trusted system work, repeated and
the median taken. Reported: milliseconds, and the ratio large/small measured in the same run (a listing that grows
with the coordinator's own items only, not with the whole store, stays near the ratio of their items). The baseline
of each ratio is the small database's figure; no absolute figure is a goal.

    .venv/bin/python bench/bench_worklist.py                 # SQLite files, N=100 and N=2,000
    .venv/bin/python bench/bench_worklist.py --postgresql    # databases careplan_bench_worklist_{small,large}
    .venv/bin/python bench/bench_worklist.py --small 50 --large 400 --repeat 3   # a quick run
    .venv/bin/python bench/bench_worklist.py --workdir /tmp/bw   # keep the SQLite files; a rerun only measures

The seeding is idempotent (``demo.load`` leaves a loaded database alone), so ``--workdir`` lets the same data be
measured by two checkouts (before/after a change) without seeding twice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from careplan import config as careplan_config  # noqa: E402
from careplan import demo, migrations, seeding  # noqa: E402
from careplan.coordination import worklist  # noqa: E402
from careplan.db import Database  # noqa: E402
from careplan.referrals import service as referrals  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
COORDINATOR = demo.COORDINATORS[0]
PARTNER = "Organization/demo-housing-first"


def _database(url: str) -> Database:
    migrations.upgrade(url)
    database = Database(url)
    seeding.load(database, careplan_config.from_env().fhir_dir)
    return database


def _fresh_url(name: str, *, postgresql: bool, server: str, workdir: Path) -> str:
    if not postgresql:
        return f"sqlite:///{workdir / (name + '.db')}"  # reused as it is: demo.load skips a loaded database
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"


def _median_ms(call, repeat: int) -> float:
    call()  # warm caches (practice catalogue, statement cache) outside the measure
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(database: Database, *, repeat: int) -> dict[str, float | int]:
    """Return the median milliseconds of the worklist and the inbox, and how many items each returned."""
    settings = careplan_config.from_env()
    items = sum(len(g["items"]) for g in worklist.build(database, coordinator=COORDINATOR)["groups"])
    inbox = referrals.inbox(database, organization=PARTNER, settings=settings)
    return {
        "worklist_ms": _median_ms(lambda: worklist.build(database, coordinator=COORDINATOR), repeat),
        "inbox_ms": _median_ms(lambda: referrals.inbox(database, organization=PARTNER, settings=settings), repeat),
        "worklist_items": items, "inbox_open": inbox["counts"]["open"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100, help="patients in the baseline database")
    parser.add_argument("--large", type=int, default=2000, help="patients in the large database")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats per figure (median)")
    parser.add_argument("--postgresql", action="store_true", help="PostgreSQL instead of SQLite files")
    parser.add_argument("--pg-server", default=DEFAULT_SERVER, help="PostgreSQL server URL without a database")
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the SQLite files here")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-worklist-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for label, patients in (("small", args.small), ("large", args.large)):
            url = _fresh_url(f"careplan_bench_worklist_{label}_{patients}", postgresql=args.postgresql,
                             server=args.pg_server, workdir=workdir)
            database = _database(url)
            start = time.perf_counter()
            demo.load(database, patients=patients)
            print(f"seeded {patients} patients in {time.perf_counter() - start:.0f} s", flush=True)
            results[label] = measure(database, repeat=args.repeat)
            database.dispose()

    small, large = results["small"], results["large"]
    print(f"\n{'':22}{'N=' + str(args.small):>12}{'N=' + str(args.large):>12}{'ratio':>9}")
    for key, name in (("worklist_ms", "worklist (ms)"), ("inbox_ms", "partner inbox (ms)")):
        print(f"{name:22}{small[key]:12.1f}{large[key]:12.1f}{large[key] / small[key]:9.2f}")
    for key, name in (("worklist_items", "worklist items"), ("inbox_open", "inbox open referrals")):
        print(f"{name:22}{small[key]:12d}{large[key]:12d}{large[key] / max(small[key], 1):9.2f}")


if __name__ == "__main__":
    main()
