#!/usr/bin/env python3
"""Benchmark the reminder engine on PostgreSQL: dispatch throughput against the bare claim query, and the due scan
at 100k versus 1M scheduled reminders.

1. Throughput. The same number of due reminders is processed three ways in one run, each on fresh rows:
   - baseline: the bare claim query alone (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``,
     batches of 200), nothing else;
   - claim + expand: the claim plus rendering each reminder and writing its outbox rows;
   - full tick: ``scheduler.worker.tick``, i.e. claim, expand, then deliver every row: the inbox Communication through
     the FHIR store and a signed webhook POST to a real local HTTP receiver.
   Reported as reminders per second and as the ratio to the baseline.
2. Due scan. The reminder table is grown to 100k and then 1M rows (nearly all scheduled in the future, a fixed 1,000
   due, and as many already sent), and the claim of one batch is timed (in a transaction that is rolled back, so every
   repeat sees the same rows). The scan is index-driven (partial index on due_at over open rows) when the 1M/100k
   ratio stays near 1. The digest pass's search for recipients (``careplan.reminders.rules.digest_recipients``) is
   timed on the same table against the former read of every not-done reminder.

Data goes into a database of its own (careplan_bench_reminders, created and dropped here).

    .venv/bin/python bench/bench_reminders.py           # 2,000 reminders per mode; 100k and 1M for the scan
    .venv/bin/python bench/bench_reminders.py --quick   # 500 reminders; 10k and 100k
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from careplan import config as careplan_config  # noqa: E402
from careplan import migrations  # noqa: E402
from careplan.config import normalize_database_url  # noqa: E402
from careplan.db import Database  # noqa: E402
from careplan.models import utcnow  # noqa: E402
from scheduler import queue, worker  # noqa: E402

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "careplan_bench_reminders"
BATCH = 200
RECIPIENT = "Organization/bench-agency"


class _Receiver(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def add_due(database: Database, count: int, *, prefix: str) -> None:
    """Insert count reminders due a minute ago."""
    with database.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO reminder (key, kind, source, recipient, patient, tier, due_at, state, payload, created_at,"
            " updated_at) SELECT :prefix || n, 'follow-up', 'Task/t' || n, :recipient, 'Patient/p' || n,"
            " 'recommended', now() - interval '1 minute' + n * interval '1 microsecond', 'scheduled',"
            " '{}'::jsonb, now(), now() FROM generate_series(1, :count) AS n"),
            {"prefix": prefix, "recipient": RECIPIENT, "count": count})


def clear(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("TRUNCATE delivery, reminder RESTART IDENTITY CASCADE"))
        connection.execute(text("DELETE FROM resource_version WHERE res_type = 'Communication'"))
        connection.execute(text("DELETE FROM resource WHERE res_type = 'Communication'"))


def throughput(database: Database, settings, count: int) -> dict[str, float]:
    """Return reminders per second of the three modes, each on count fresh due reminders."""
    results = {}
    lease = timedelta(seconds=120)

    clear(database)
    add_due(database, count, prefix="bare|")
    began = time.perf_counter()
    done = 0
    while True:
        claimed = queue.claim_due(database, holder="bench", now=utcnow(), limit=BATCH, lease=lease)
        if not claimed:
            break
        done += len(claimed)
    results["bare claim query (baseline)"] = done / (time.perf_counter() - began)

    clear(database)
    add_due(database, count, prefix="expand|")
    began = time.perf_counter()
    done = 0
    while True:
        claimed = queue.claim_due(database, holder="bench", now=utcnow(), limit=BATCH, lease=lease)
        if not claimed:
            break
        done += queue.expand(database, reminders=claimed, holder="bench", now=utcnow()).sent
    results["claim + expand (render, outbox rows)"] = done / (time.perf_counter() - began)

    # The same with a render per reminder that shares nothing across the batch (how expand rendered before).
    from careplan.reminders import messages

    clear(database)
    add_due(database, count, prefix="uncached|")
    began = time.perf_counter()
    done = 0
    while True:
        claimed = queue.claim_due(database, holder="bench", now=utcnow(), limit=BATCH, lease=lease)
        if not claimed:
            break
        done += queue.expand(database, reminders=claimed, holder="bench", now=utcnow(),
                             render=lambda session, reminder: messages.render(session, reminder)).sent
    results["claim + expand, no per-batch lookups"] = done / (time.perf_counter() - began)

    clear(database)
    add_due(database, count, prefix="tick|")
    began = time.perf_counter()
    summary = worker.tick(database, settings=settings, holder="bench", periodic=False)
    elapsed = time.perf_counter() - began
    assert summary.sent == count and summary.delivered == 2 * count, summary.line()
    results["full tick (inbox Communication + webhook)"] = count / elapsed
    return results


def grow(database: Database, total: int, current: int) -> None:
    """Add future scheduled reminders (and a share of sent ones) until the table holds total rows."""
    step = 100_000
    while current < total:
        n = min(step, total - current)
        with database.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO reminder (key, kind, source, recipient, patient, tier, due_at, state, payload,"
                " created_at, updated_at) SELECT 'future|' || (:start + n), 'follow-up', 'CarePlan/c' || n,"
                " 'Practitioner/p' || (n % 500), NULL, 'recommended',"
                " now() + interval '1 hour' + ((:start + n) % 525600) * interval '1 minute',"
                " 'scheduled', '{}'::jsonb, now(), now() FROM generate_series(1, :n) AS n"),
                {"start": current, "n": n})
        current += n


def scan(database: Database, repeats: int) -> dict[str, float]:
    """Time the claim of one batch over the current table (rolled back each time); return p50/p95 in ms."""
    timings = []
    statement = text(
        "UPDATE reminder SET state = 'claimed', lease_holder = 'bench', lease_expires_at = now() + interval '2 min'"
        " WHERE id IN (SELECT id FROM reminder WHERE state IN ('scheduled', 'claimed') AND due_at <= now()"
        " AND (state = 'scheduled' OR lease_expires_at < now()) ORDER BY due_at LIMIT :n FOR UPDATE SKIP LOCKED)"
        " RETURNING id")
    with database.engine.connect() as connection:
        for _ in range(repeats):
            began = time.perf_counter()
            rows = connection.execute(statement, {"n": BATCH}).all()
            timings.append((time.perf_counter() - began) * 1000)
            connection.rollback()
            assert len(rows) == BATCH
        plan = "\n".join(r[0] for r in connection.execute(text("EXPLAIN " + statement.text), {"n": BATCH}))
        connection.rollback()
    timings.sort()
    return {"p50": statistics.median(timings), "p95": timings[int(len(timings) * 0.95) - 1],
            "index": "ix_reminder_due" in plan, "seq": "Seq Scan on reminder" in plan, "plan": plan}


def digest_scan(database: Database, repeats: int) -> dict[str, float]:
    """Time the digest pass's search for recipients, the index-driven one against the former full read (ms p50)."""
    from sqlalchemy import select

    from careplan.reminders import rules
    from careplan.reminders.models import Reminder

    former = select(Reminder.recipient).where(Reminder.kind.in_(rules.DIGEST_KINDS), Reminder.state != "cancelled",
                                              Reminder.done_at.is_(None)).distinct()
    results = {}
    for name, find in (("index-driven", lambda session: rules.digest_recipients(session, utcnow())),
                       ("former full read", lambda session: sorted(set(session.scalars(former))))):
        timings = []
        for _ in range(repeats):
            with database.reading() as session:
                began = time.perf_counter()
                find(session)
                timings.append((time.perf_counter() - began) * 1000)
        results[name] = statistics.median(timings)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL, without a database")
    parser.add_argument("--quick", action="store_true", help="500 reminders per mode; 10k and 100k for the scan")
    parser.add_argument("--reminders", type=int, default=None, help="due reminders per throughput mode")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="leave the database in place afterwards")
    args = parser.parse_args()
    count = args.reminders or (500 if args.quick else 2_000)
    steps = [10_000, 100_000] if args.quick else [100_000, 1_000_000]
    admin = create_engine(normalize_database_url(f"{args.server.rstrip('/')}/postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        connection.execute(text(f"CREATE DATABASE {DATABASE}"))
    url = normalize_database_url(f"{args.server.rstrip('/')}/{DATABASE}")
    ThreadingHTTPServer.request_queue_size = 256  # the send threads connect at once; a backlog of 5 drops SYNs
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    database = None
    try:
        migrations.upgrade(url)
        database = Database(url)
        with database.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO recipient_channel (recipient, channel, address, secret, active, created_at)"
                " VALUES (:r, 'webhook', :url, 'bench-secret', true, now())"),
                {"r": RECIPIENT, "url": f"http://127.0.0.1:{server.server_address[1]}/hook"})
        settings = replace(careplan_config.from_env({"CAREPLAN_DATABASE_URL": url}), scheduler_batch_size=BATCH)

        rates = throughput(database, settings, count)
        print(f"throughput, {count:,} due reminders per mode; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores", flush=True)
        base = rates["bare claim query (baseline)"]
        print(f"{'mode':<46}{'reminders/s':>14}{'ratio to bare claim':>22}")
        for name, rate in rates.items():
            print(f"{name:<46}{rate:>14.0f}{rate / base:>22.3f}")

        clear(database)
        current = 0
        results = {}
        for size in steps:
            began = time.perf_counter()
            # The fixed part: 1,000 due (what a claim can take) and 1,000 sent; the rest is future.
            grow(database, size - 2_000, current)
            current = size - 2_000
            if not results:
                add_due(database, 1_000, prefix="due|")
                add_due(database, 1_000, prefix="sent|")
                with database.engine.begin() as connection:
                    connection.execute(text("UPDATE reminder SET state = 'sent' WHERE key LIKE 'sent|%'"))
            with database.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE reminder"))
            print(f"grew to {size:,} reminders in {time.perf_counter() - began:.0f} s", flush=True)
            results[size] = scan(database, args.repeats)
            results[size]["digest"] = digest_scan(database, max(5, args.repeats // 10))
            print(f"measured at {size:,}; load average {os.getloadavg()[0]:.1f}", flush=True)
        first = steps[0]
        print(f"{'due scan (claim of one batch of 200)':<40}" + "".join(
            f"{f'p50/p95 ms @{s:,}':>24}" for s in steps) + f"{'ratio':>8}  plan")
        cells = "".join(f"{results[s]['p50']:>14.2f} / {results[s]['p95']:<7.2f}" for s in steps)
        ratio = results[steps[-1]]["p50"] / results[first]["p50"]
        plan = " / ".join("partial index" if r["index"] and not r["seq"] else "SEQUENTIAL SCAN"
                          for r in results.values())
        print(f"{'':<40}{cells}{ratio:>8.2f}  {plan}")
        print(f"{'digest recipients (p50 ms)':<40}" + "".join(f"{f'@{s:,}':>24}" for s in steps) + f"{'ratio':>8}")
        for name in results[first]["digest"]:
            cells = "".join(f"{results[s]['digest'][name]:>24.2f}" for s in steps)
            ratio = results[steps[-1]]["digest"][name] / results[first]["digest"][name]
            print(f"{name:<40}{cells}{ratio:>8.2f}")
        print(f"plan at {steps[-1]:,}:\n{results[steps[-1]]['plan']}")
    finally:
        server.shutdown()
        if database is not None:
            database.dispose()
        if not args.keep:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
