"""Create engines and sessions, and open read and write transactions the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from careplan import jsonutil


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine whose JSON columns keep decimal precision, tuned for the backend."""
    parsed = make_url(url)
    kwargs: dict = {
        "echo": echo,
        "json_serializer": jsonutil.dumps,
        "json_deserializer": jsonutil.loads_stored,
        "future": True,
    }
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE can be issued for writes.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A write transaction takes the write lock up front; a deferred one that later writes would fail with
        # "database is locked" instead of waiting for the other writer.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine and its session factory, with transaction helpers for services."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.dialect = self.engine.dialect.name
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Yield a session for reads; it is rolled back and closed afterwards."""
        session = self.sessions()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    @contextmanager
    def writing(self, *, lock_key: str | None = None) -> Iterator[Session]:
        """Yield a session in a write transaction that commits on success and rolls back on error.

        ``lock_key`` serialises writers that must not run concurrently (e.g. conditional creates with the same
        criteria): a transaction-scoped advisory lock on PostgreSQL; SQLite's single writer lock already does it.
        """
        session = self.sessions()
        try:
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            if lock_key is not None and self.is_postgresql:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(lock_key)})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def polling(self) -> Iterator[Session]:
        """Yield a read session in which sync.horizon() is exact: on SQLite it waits out any open writer."""
        session = self.sessions()
        try:
            if not self.is_postgresql:
                session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            yield session
        finally:
            session.rollback()
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def advisory_key(name: str) -> int:
    """Map a lock name to a stable signed 64-bit PostgreSQL advisory lock key."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big", signed=True)
