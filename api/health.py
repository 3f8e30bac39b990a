"""Liveness and readiness endpoints for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.database import get_db
from careplan import migrations

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz():
    """Answer that the process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Answer 200 only when the database is reachable and migrated to the head revision."""
    db = get_db()
    try:
        with db.reading() as session:
            session.execute(text("SELECT 1"))
        current = migrations.current_revision(db.engine)
    except SQLAlchemyError as exc:
        log.warning("readiness check: database unreachable (%s)", type(exc).__name__)
        return jsonify(status="unavailable", reason="database unreachable"), 503
    head = migrations.head_revision(db.url)
    if current != head:
        return jsonify(status="unavailable", reason="database not migrated", current=current, head=head), 503
    return jsonify(status="ok", database=db.dialect, revision=current)
