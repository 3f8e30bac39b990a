"""Fixtures shared by the whole suite: a migrated database (SQLite by default, PostgreSQL when configured), app, client.

Set CAREPLAN_TEST_DATABASE_URL to run everything against PostgreSQL; when it is set and the server cannot be
reached, the run fails instead of skipping.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import inspect, text
from werkzeug.datastructures import Headers

from api import create_app
from careplan import migrations
from careplan.config import normalize_database_url
from careplan.db import Database
from careplan.models import Base
import careplan.reminders.models  # noqa: F401,E402  (the reminder tables are truncated with the rest)

POSTGRES_URL = os.environ.get("CAREPLAN_TEST_DATABASE_URL")


def _reset_schema(database: Database) -> None:
    """Drop every table so the migrations are exercised from scratch."""
    with database.engine.begin() as connection:
        if database.is_postgresql:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        else:
            Base.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """Return the URL of a freshly migrated test database."""
    if POSTGRES_URL:
        url = normalize_database_url(POSTGRES_URL)
        database = Database(url)
        try:
            with database.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure to connect ends the run
            pytest.exit(f"PostgreSQL test database {url} is unreachable: {type(exc).__name__}: {exc}", returncode=3)
        # A throwaway test database needs no crash durability: commits stop waiting for the WAL flush (the data
        # and its visibility are unchanged), which the suite's thousands of small commits otherwise pay for.
        with database.engine.begin() as connection:
            name = connection.execute(text("SELECT current_database()")).scalar_one()
            quoted = database.engine.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"ALTER DATABASE {quoted} SET synchronous_commit = off"))
        database.dispose()  # new connections pick the setting up
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'careplan-test.sqlite3'}"
        database = Database(url)
    _reset_schema(database)
    database.dispose()
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def database(database_url) -> Database:
    """Return a Database on the migrated test database."""
    database = Database(database_url)
    yield database
    database.dispose()


class _Emptier:
    """Empty every table of the migrated test database, cheaply: one engine and one table list for the session."""

    def __init__(self, database_url: str):
        self.database = Database(database_url)
        names = set(inspect(self.database.engine).get_table_names())
        self.tables = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name in names]
        self.dirty_query = None
        if self.database.is_postgresql:
            # TRUNCATE costs a new file per table whatever its size, so only tables that hold rows or whose owned
            # sequence has been used are truncated: the end state (empty tables, identities restarted) is the same.
            with self.database.engine.connect() as connection:
                owned = connection.execute(text(
                    "SELECT t.relname, s.relname FROM pg_class s"
                    " JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass"
                    " AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"
                    " JOIN pg_class t ON t.oid = d.refobjid"
                    " JOIN pg_namespace n ON n.oid = s.relnamespace AND n.nspname = current_schema()"
                    " WHERE s.relkind = 'S'")).all()
            quote = self.database.engine.dialect.identifier_preparer.quote
            checks = []
            for name in self.tables:
                used = [f"(SELECT is_called FROM {quote(seq)})" for table, seq in owned if table == name]
                condition = " OR ".join([f"EXISTS (SELECT 1 FROM {quote(name)})", *used])
                checks.append(f"SELECT '{name}' WHERE {condition}")
            self.dirty_query = text(" UNION ALL ".join(checks))

    def empty(self) -> None:
        with self.database.engine.begin() as connection:
            if self.dirty_query is not None:
                dirty = set(connection.execute(self.dirty_query).scalars())
                if dirty:
                    names = ", ".join(name for name in self.tables if name in dirty)
                    connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for name in self.tables:
                    connection.execute(Base.metadata.tables[name].delete())


@pytest.fixture(scope="session")
def _emptier(database_url):
    emptier = _Emptier(database_url)
    yield emptier
    emptier.database.dispose()


@pytest.fixture(autouse=True)
def _empty_tables(request):
    """Start every test that touches the database with empty tables."""
    if "database_url" in request.fixturenames:
        request.getfixturevalue("_emptier").empty()
    yield


_client_numbers = itertools.count(1)
_default_token_lock = threading.Lock()


def issue_test_token(app, *, role: str = "admin", organization: str | None = None, scopes: str = "system/*.cruds",
                     client_id: str | None = None, lifetime: timedelta | None = None,
                     now: datetime | None = None) -> str:
    """Register a client and have the real token service sign a token for it, as POST /oauth/token would."""
    from api import auth as api_auth
    from careplan.auth import clients, tokens

    database = app.extensions["careplan.database"]
    registered = clients.register(database, name=f"test {role}", role=role, organization=organization,
                                  scopes=scopes, with_secret=False,
                                  client_id=client_id or f"test-client-{next(_client_numbers)}")
    with app.test_request_context():  # the test client's base URL, http://localhost/
        settings = api_auth.token_settings()
    if lifetime is not None:
        settings = replace(settings, lifetime=lifetime)
    return tokens.issue_access_token(database, client=registered.client, scopes=registered.client.scopes,
                                     settings=settings, now=now).access_token


def default_token(app) -> str:
    """Return the app's admin token (system/*.cruds), issuing it on first use."""
    with _default_token_lock:  # test clients in several threads share one token
        token = app.extensions.get("tests.default_token")
        if token is None:
            token = issue_test_token(app, client_id="test-admin")
            app.extensions["tests.default_token"] = token
        return token


class AuthenticatedClient(FlaskClient):
    """A test client that sends a real admin bearer token unless the request sets Authorization itself."""

    def open(self, *args, **kwargs):
        if args and isinstance(args[0], str):
            headers = Headers(kwargs.pop("headers", None) or {})
            if "Authorization" not in headers:
                headers["Authorization"] = f"Bearer {default_token(self.application)}"
            kwargs["headers"] = headers
        return super().open(*args, **kwargs)


@pytest.fixture
def app(database_url):
    """Return the careplan app on the test database; its test clients authenticate as an admin client."""
    app = create_app({"TESTING": True, "CAREPLAN_DATABASE_URL": database_url})
    app.test_client_class = AuthenticatedClient
    yield app
    app.extensions["careplan.database"].dispose()


@pytest.fixture
def client(app):
    """Return a test client for the app."""
    return app.test_client()


@pytest.fixture
def anonymous_client(app):
    """Return a test client that sends no token."""
    return FlaskClient(app, app.response_class, use_cookies=True)


@pytest.fixture
def token_for(app):
    """Return a factory of real access tokens: token_for(role=..., organization=..., scopes=...)."""

    def issue(*, role: str = "admin", organization: str | None = None, scopes: str = "system/*.cruds",
              lifetime: timedelta | None = None, now: datetime | None = None) -> str:
        return issue_test_token(app, role=role, organization=organization, scopes=scopes, lifetime=lifetime,
                                now=now)

    return issue


@pytest.fixture
def runner(app):
    """Return a CLI runner for the app."""
    return app.test_cli_runner()


def pytest_report_header(config):
    return f"careplan test database: {'PostgreSQL ' + POSTGRES_URL if POSTGRES_URL else 'SQLite (temporary file)'}"
