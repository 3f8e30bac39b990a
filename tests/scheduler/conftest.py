"""Fixtures of the scheduler tests: settings, reminder rows, a real HTTP receiver and a real SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from careplan import config as careplan_config
from careplan.db import Database
from careplan.reminders.models import Delivery, RecipientChannel, Reminder

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=timezone.utc)
SECRET = "whsec-test-secret"


@pytest.fixture
def settings(database_url):
    """Return settings on the test database with short, test-friendly timings."""
    return replace(careplan_config.from_env({"CAREPLAN_DATABASE_URL": database_url}),
                   reminder_lease_seconds=60.0, scheduler_batch_size=50, delivery_retry_hours=26.0,
                   delivery_backoff_base_seconds=30.0, delivery_backoff_cap_seconds=3600.0,
                   webhook_timeout_seconds=5.0)


def add_reminders(db: Database, count: int, *, due_at: datetime = NOW - timedelta(minutes=1),
                  recipient: str = "Practitioner/p1", prefix: str = "test", spacing: timedelta = timedelta(0),
                  state: str = "scheduled") -> list[int]:
    """Insert count reminders and return their ids."""
    with db.writing() as session:
        rows = [Reminder(key=f"{prefix}|{i}", kind="follow-up", source=f"CarePlan/cp{i}#act-1", recipient=recipient,
                         patient=f"Patient/pt{i}", tier="recommended", due_at=due_at + spacing * i, state=state,
                         payload={"care_plan": f"CarePlan/cp{i}", "activity": "act-1"}, created_at=NOW,
                         updated_at=NOW)
                for i in range(count)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def add_channel(db: Database, *, recipient: str = "Practitioner/p1", channel: str = "webhook", address: str,
                secret: str | None = SECRET, active: bool = True) -> int:
    """Register a recipient channel and return its id."""
    with db.writing() as session:
        row = RecipientChannel(recipient=recipient, channel=channel, address=address, secret=secret, active=active,
                               created_at=NOW)
        session.add(row)
        session.flush()
        return row.id


def deliveries(db: Database, **where) -> list[Delivery]:
    """Return delivery rows matching column=value filters, by id."""
    with db.reading() as session:
        query = select(Delivery).order_by(Delivery.id)
        for name, value in where.items():
            query = query.where(getattr(Delivery, name) == value)
        rows = list(session.scalars(query))
        session.expunge_all()  # keep them loaded after the read transaction ends
        return rows


def count(db: Database, model, **where) -> int:
    """Return how many rows of model match column=value filters."""
    with db.reading() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return session.scalar(query)


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def verify(secret: str, headers, body: bytes, *, now: float | None = None, tolerance: int = 300) -> bool:
    """Verify a careplan webhook the way the README tells receivers to."""
    import time

    timestamp = headers["X-Careplan-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs((now or time.time()) - int(timestamp)) <= tolerance
    return fresh and hmac.compare_digest(expected, headers.get("X-Careplan-Signature", ""))


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    request_queue_size = 256  # several schedulers with a few send threads each: a backlog of 5 drops SYNs


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST; it can answer an error status or go down."""

    port: int
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/careplan"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                    status = receiver.status
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def keys(self) -> list[str]:
        with self.lock:
            return [r.headers["Idempotency-Key"] for r in self.requests]


@pytest.fixture
def receiver():
    """Return a running webhook receiver; stopped after the test."""
    receiver = Receiver(port=free_port())
    receiver.up()
    yield receiver
    receiver.down()


@pytest.fixture
def smtp_server():
    """Return a real aiosmtpd SMTP server on a free port and the list of messages it received."""
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
            self.messages.append(envelope)
            return "250 Message accepted for delivery"

    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler.messages
    controller.stop()
