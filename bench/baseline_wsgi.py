"""The benchmark's baseline: a bare WSGI function doing careplan's primary-key INSERT and SELECT, nothing else.

No framework, no ORM, no validation, no search index: it parses the JSON body, stamps id and meta the way careplan
does, inserts the same ``resource`` and ``resource_version`` rows in one transaction, and for a read runs
``SELECT content FROM resource WHERE res_type=%s AND res_id=%s`` and returns the document as JSON. What careplan
costs on top of this is what the benchmark's ratio shows.

Served by gunicorn (see bench_fhir_http.py) with the database named by ``BENCH_BASELINE_DATABASE_URL``: a libpq URL
(``postgresql://...``) or ``sqlite:///path``. Each gunicorn thread keeps one connection of its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from datetime import datetime, timezone

DATABASE_URL = os.environ.get("BENCH_BASELINE_DATABASE_URL", "")
PREFIX = "/fhir/Patient"
_local = threading.local()


class _Postgres:
    """psycopg 3, autocommit: a read is one round trip; a create is BEGIN, two INSERTs, COMMIT."""

    def __init__(self, url: str):
        import psycopg

        self.connection = psycopg.connect(url, autocommit=True)

    def insert(self, res_id: str, now: datetime, text: str) -> None:
        with self.connection.transaction():
            cursor = self.connection.execute(
                "INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, content) "
                "VALUES ('Patient', %s, 1, %s, false, %s::jsonb) RETURNING pk",
                (res_id, now, text),
            )
            pk = cursor.fetchone()[0]
            self.connection.execute(
                "INSERT INTO resource_version "
                "(resource_pk, res_type, res_id, version_id, last_updated, method, deleted, content) "
                "VALUES (%s, 'Patient', %s, 1, %s, 'POST', false, %s::jsonb)",
                (pk, res_id, now, text),
            )

    def select(self, res_id: str):
        row = self.connection.execute(
            "SELECT content FROM resource WHERE res_type=%s AND res_id=%s", ("Patient", res_id)
        ).fetchone()
        return None if row is None else row[0]  # psycopg parses jsonb into Python objects


class _SQLite:
    """sqlite3 with careplan's pragmas (WAL, synchronous=NORMAL); writes take the lock up front like careplan."""

    def __init__(self, path: str):
        self.connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000", "synchronous=NORMAL"):
            self.connection.execute(f"PRAGMA {pragma}")

    def insert(self, res_id: str, now: datetime, text: str) -> None:
        stamp = now.replace(tzinfo=None).isoformat(" ")  # naive UTC text, as careplan stores it on SQLite
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            cursor.execute(
                "INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, content) "
                "VALUES ('Patient', ?, 1, ?, 0, ?)",
                (res_id, stamp, text),
            )
            cursor.execute(
                "INSERT INTO resource_version "
                "(resource_pk, res_type, res_id, version_id, last_updated, method, deleted, content) "
                "VALUES (?, 'Patient', ?, 1, ?, 'POST', 0, ?)",
                (cursor.lastrowid, res_id, stamp, text),
            )
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise

    def select(self, res_id: str):
        row = self.connection.execute(
            "SELECT content FROM resource WHERE res_type=? AND res_id=?", ("Patient", res_id)
        ).fetchone()
        return None if row is None else json.loads(row[0])


def _database():
    database = getattr(_local, "database", None)
    if database is None:
        if DATABASE_URL.startswith("sqlite:///"):
            database = _SQLite(DATABASE_URL[len("sqlite:///"):])
        elif DATABASE_URL.startswith(("postgresql://", "postgres://")):
            database = _Postgres(DATABASE_URL)
        else:
            raise RuntimeError(f"BENCH_BASELINE_DATABASE_URL must be postgresql://... or sqlite:///..., "
                               f"got {DATABASE_URL!r}")
        _local.database = database
    return database


def _respond(start_response, status: str, body: bytes, extra: list[tuple[str, str]] = ()):
    headers = [("Content-Type", "application/fhir+json; charset=utf-8"), ("Content-Length", str(len(body))),
               *extra]
    start_response(status, headers)
    return [body]


def application(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    if path == "/healthz":
        return _respond(start_response, "200 OK", b'{"status":"ok"}')
    if method == "POST" and path == PREFIX:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        resource = json.loads(environ["wsgi.input"].read(length))
        res_id = str(uuid.uuid4())
        now = datetime.now(timezone.utc)
        meta = {"versionId": "1", "lastUpdated": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        body = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
        content = {"resourceType": "Patient", "id": res_id, "meta": meta, **body}
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        _database().insert(res_id, now, text)
        location = f"http://{environ.get('HTTP_HOST', 'localhost')}{PREFIX}/{res_id}/_history/1"
        return _respond(start_response, "201 Created", text.encode("utf-8"),
                        [("Location", location), ("ETag", 'W/"1"')])
    if method == "GET" and path.startswith(PREFIX + "/"):
        content = _database().select(path[len(PREFIX) + 1:])
        if content is None:
            return _respond(start_response, "404 Not Found", b'{"resourceType":"OperationOutcome"}')
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return _respond(start_response, "200 OK", body, [("ETag", f'W/"{content["meta"]["versionId"]}"')])
    return _respond(start_response, "404 Not Found", b'{"resourceType":"OperationOutcome"}')
