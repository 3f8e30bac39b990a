"""The common care searches are index-driven on PostgreSQL: no sequential scan of resource or search_* tables.

Loads a few thousand resources into a database of its own, runs ANALYZE, then EXPLAINs every statement the engine executes for each search
(page, total and includes) with the same parameters.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import event, insert, make_url, text

from careplan import migrations
from careplan.db import Database

from careplan.models import (
    Resource,
    ResourceVersion,
    SearchDate,
    SearchNumber,
    SearchQuantity,
    SearchReference,
    SearchString,
    SearchToken,
    SearchUri,
    utcnow,
)
from careplan.search import engine
from careplan.search.extract import extract
from careplan.search.request import parse_request
from careplan.search.values import (
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from careplan.store.repository import stamp
from tests.conftest import POSTGRES_URL

pytestmark = [pytest.mark.postgresql,
              pytest.mark.skipif(not POSTGRES_URL, reason="EXPLAIN plans are checked on PostgreSQL only")]

PATIENTS, ORGANIZATIONS, PLANS, TASKS = 600, 30, 1500, 1500
SEARCHES = [
    ("CarePlan", "patient=Patient/p17&status=active"),
    ("Task", "owner=Organization/o7&status=requested"),
    ("Patient", "identifier=urn:mrn|123"),
    ("Patient", "name=zo"),
    ("CarePlan", "patient=Patient/p17&_include=CarePlan:goal"),
]
TABLES = {"resource", "search_token", "search_string", "search_date", "search_reference", "search_number",
          "search_quantity", "search_uri"}


def care_network() -> list[dict]:
    families = ["Zoë", "Tremblay", "Roy", "Gagnon", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie", "Fortin"]
    plan_states = ["active", "completed", "draft", "active", "revoked", "completed", "active"]
    task_states = ["requested", "accepted", "in-progress", "completed", "completed", "cancelled"]
    resources = [{"resourceType": "Organization", "id": f"o{i}", "name": f"Agency {i}"}
                 for i in range(ORGANIZATIONS)]
    resources += [{"resourceType": "Patient", "id": f"p{i}", "identifier": [{"system": "urn:mrn", "value": str(i)}],
                   "name": [{"family": f"{families[i % len(families)]}{i}", "given": ["Alex"]}]}
                  for i in range(PATIENTS)]
    resources += [{"resourceType": "Goal", "id": f"g{i}", "lifecycleStatus": "active", "description": {"text": "g"},
                   "subject": {"reference": f"Patient/p{i % PATIENTS}"}} for i in range(PLANS)]
    resources += [{"resourceType": "CarePlan", "id": f"cp{i}", "intent": "plan",
                   "status": plan_states[i % len(plan_states)], "subject": {"reference": f"Patient/p{i % PATIENTS}"},
                   "goal": [{"reference": f"Goal/g{i}"}], "period": {"start": "2024-01-01"}} for i in range(PLANS)]
    resources += [{"resourceType": "Task", "id": f"t{i}", "intent": "order",
                   "status": task_states[(i // ORGANIZATIONS) % len(task_states)],
                   "for": {"reference": f"Patient/p{(i * 7) % PATIENTS}"},
                   "owner": {"reference": f"Organization/o{i % ORGANIZATIONS}"},
                   "focus": {"reference": f"CarePlan/cp{i}"}} for i in range(TASKS)]
    return resources


_TABLES = {TokenIndex: SearchToken, StringIndex: SearchString, DateIndex: SearchDate, ReferenceIndex: SearchReference,
           NumberIndex: SearchNumber, QuantityIndex: SearchQuantity, UriIndex: SearchUri}


def bulk_load(database, resources: list[dict]) -> None:
    """Insert resources, their first versions and their index rows in a few large statements."""
    now = utcnow()
    with database.writing() as session:
        rows = [{"res_type": r["resourceType"], "res_id": r["id"], "version_id": 1, "last_updated": now,
                 "deleted": False, "content": stamp(r, resource_id=r["id"], version_id=1, last_updated=now)}
                for r in resources]
        pks = session.scalars(insert(Resource).returning(Resource.pk, sort_by_parameter_order=True), rows).all()
        session.execute(insert(ResourceVersion), [
            {"resource_pk": pk, "res_type": row["res_type"], "res_id": row["res_id"], "version_id": 1,
             "last_updated": now, "method": "PUT", "deleted": False, "content": row["content"]}
            for pk, row in zip(pks, rows)])
        by_table: dict = {}
        for pk, row in zip(pks, rows):
            for value in extract(row["content"]):
                by_table.setdefault(_TABLES[type(value)], []).append(
                    {**vars(value), "resource_pk": pk, "res_type": row["res_type"]})
        for table, values in by_table.items():
            session.execute(insert(table), values)


def scans(plan: dict):
    """Yield (node type, relation) of every node of a JSON plan."""
    yield plan.get("Node Type"), plan.get("Relation Name")
    for child in plan.get("Plans", []):
        yield from scans(child)


@pytest.fixture
def loaded(database_url):
    """Yield a Database on a migrated database of its own, loaded and ANALYZEd, and drop it afterwards.

    Not the suite's shared database: column statistics outlive TRUNCATE, and with autovacuum off (as on the CI
    machines) the statistics of this test's data would steer every later test's plans (one later turned a 200-key
    lookup into a 69 s nested loop).
    """
    url = make_url(database_url)
    name = f"{url.database}_plans"
    admin = Database(url.render_as_string(hide_password=False))
    quoted = admin.engine.dialect.identifier_preparer.quote(name)
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {quoted}"))
    own_url = url.set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(own_url)
    database = Database(own_url)
    try:
        bulk_load(database, care_network())
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
        yield database
    finally:
        database.dispose()
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        admin.dispose()


def test_care_search_plans_use_indexes(loaded):
    for resource_type, query in SEARCHES:
        _check_plans(loaded, resource_type, query)


def _check_plans(loaded, resource_type: str, query: str) -> None:
    request = parse_request(parse_qsl(query), types=(resource_type,), strict=True, default_count=50,
                            max_count=1000)
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(loaded.engine, "before_cursor_execute", capture)
    try:
        with loaded.reading() as session:
            result = engine.search(session, request)
    finally:
        event.remove(loaded.engine, "before_cursor_execute", capture)
    assert result.matches, "the search should find something, or the plan proves little"
    if "_include" in query:
        assert result.included
    assert len(statements) >= 2
    with loaded.engine.connect() as connection:
        for statement, parameters in statements:
            raw = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
            plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
            sequential = [relation for node, relation in scans(plan) if node == "Seq Scan" and relation in TABLES]
            assert not sequential, f"{resource_type}?{query}: sequential scan of {sequential} in\n{statement}"
