"""Read and write resource versions inside the caller's transaction (no commits here)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session, SessionTransaction

from careplan.models import Resource, ResourceVersion, utcnow
from careplan.security import guard
from careplan.store import index
from careplan.store.records import HistoryPage, StoredResource, format_instant

SERVER_META = ("versionId", "lastUpdated")
TRANSACTION_TIME = "careplan.transaction_time"


@event.listens_for(Session, "after_transaction_end")
def _forget_transaction_time(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(TRANSACTION_TIME, None)


def transaction_time(session: Session) -> datetime:
    """Return the instant that stamps this transaction's writes (see careplan.store.sync for why)."""
    stamp_ = session.info.get(TRANSACTION_TIME)
    if stamp_ is None:
        if session.get_bind().dialect.name == "postgresql":
            # psycopg returns the server's zone (e.g. ZoneInfo('Etc/UTC')); keep one representation of UTC.
            stamp_ = session.execute(text("SELECT now()")).scalar_one().astimezone(timezone.utc)
        else:
            stamp_ = utcnow()
        session.info[TRANSACTION_TIME] = stamp_
    return stamp_


def _after(row: Resource, now: datetime) -> datetime:
    # A transaction that started before the previous version was written still stamps a later instant.
    return max(now, row.last_updated + timedelta(microseconds=1))


def new_id() -> str:
    """Return a fresh server-assigned logical id."""
    return str(uuid.uuid4())


def stamp(resource: dict, *, resource_id: str, version_id: int, last_updated: datetime) -> dict:
    """Return resource with the server-owned id, meta.versionId and meta.lastUpdated set; the rest as sent."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in SERVER_META}
    meta = {"versionId": str(version_id), "lastUpdated": format_instant(last_updated), **meta}
    body = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    return {"resourceType": resource["resourceType"], "id": resource_id, "meta": meta, **body}


def without_server_meta(resource: dict) -> dict:
    """Return resource minus the parts the server owns, to compare what a client actually sent."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in SERVER_META}
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    if meta:
        body["meta"] = meta
    return body


def head(session: Session, resource_type: str, resource_id: str, *, for_update: bool = False) -> Resource | None:
    """Return the current row of a resource (deleted or not), locking it for update when asked."""
    query = select(Resource).where(Resource.res_type == resource_type, Resource.res_id == resource_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def as_record(row: Resource | ResourceVersion) -> StoredResource:
    """Turn a head or version row into a StoredResource, as much of it as the current caller may receive."""
    return StoredResource(
        resource_type=row.res_type,
        id=row.res_id,
        version_id=row.version_id,
        last_updated=row.last_updated,
        deleted=row.deleted,
        content=guard.disclose(row.content),
        method=getattr(row, "method", None),
    )


def insert(session: Session, resource: dict, *, resource_id: str, now: datetime, method: str) -> StoredResource:
    """Store the first version of a new resource and index it."""
    content = stamp(resource, resource_id=resource_id, version_id=1, last_updated=now)
    row = Resource(res_type=resource["resourceType"], res_id=resource_id, version_id=1, last_updated=now,
                   deleted=False, content=content)
    session.add(row)
    session.flush()
    _append_version(session, row, method)
    index.replace(session, resource_pk=row.pk, resource_type=row.res_type, content=content, fresh=True)
    guard.after_write(session, row, method)
    return as_record(row)


def revise(session: Session, row: Resource, resource: dict, *, now: datetime, method: str) -> StoredResource:
    """Store resource as the next version of row (which the caller has locked) and re-index it."""
    version_id = row.version_id + 1
    now = _after(row, now)
    row.content = stamp(resource, resource_id=row.res_id, version_id=version_id, last_updated=now)
    row.version_id, row.last_updated, row.deleted = version_id, now, False
    session.flush()
    _append_version(session, row, method)
    index.replace(session, resource_pk=row.pk, resource_type=row.res_type, content=row.content, fresh=False)
    guard.after_write(session, row, method)
    return as_record(row)


def tombstone(session: Session, row: Resource, *, now: datetime) -> StoredResource:
    """Record a deletion as a new version and drop the resource from the search index."""
    row.version_id += 1
    row.last_updated, row.deleted, row.content = _after(row, now), True, None
    session.flush()
    _append_version(session, row, "DELETE")
    index.clear(session, resource_pk=row.pk)
    guard.after_write(session, row, "DELETE")
    return as_record(row)


def _append_version(session: Session, row: Resource, method: str) -> None:
    session.add(ResourceVersion(resource_pk=row.pk, res_type=row.res_type, res_id=row.res_id,
                                version_id=row.version_id, last_updated=row.last_updated, method=method,
                                deleted=row.deleted, content=row.content))
    session.flush()


def version(session: Session, resource_type: str, resource_id: str, version_id: int) -> ResourceVersion | None:
    """Return one stored version of a resource."""
    return session.scalars(
        select(ResourceVersion).where(ResourceVersion.res_type == resource_type,
                                      ResourceVersion.res_id == resource_id,
                                      ResourceVersion.version_id == version_id)
    ).one_or_none()


def last_live_version(session: Session, row: Resource) -> ResourceVersion | None:
    """Return the newest version of row that is not a deletion."""
    return session.scalars(
        select(ResourceVersion)
        .where(ResourceVersion.resource_pk == row.pk, ResourceVersion.deleted.is_(False))
        .order_by(ResourceVersion.version_id.desc())
        .limit(1)
    ).one_or_none()


def history(session: Session, *, resource_type: str | None, resource_pk: int | None, since: datetime | None,
            count: int, cursor: int | None, with_total: bool, visible=None) -> HistoryPage:
    """Return one page of history, newest first, keyed on the version sequence so pages never shift.

    ``visible`` is the caller's access condition on the resource's current row (None: everything).
    """
    conditions = []
    if visible is not None:
        conditions.append(ResourceVersion.resource_pk.in_(select(Resource.pk).where(visible)))
    if resource_pk is not None:
        conditions.append(ResourceVersion.resource_pk == resource_pk)
    elif resource_type is not None:
        conditions.append(ResourceVersion.res_type == resource_type)
    else:
        # The audit trail is not clinical data to sync: it stays out of system history (admins read it by type).
        conditions.append(ResourceVersion.res_type != "AuditEvent")
    if since is not None:
        conditions.append(ResourceVersion.last_updated >= since)
    total = None
    if with_total:
        total = session.scalar(select(func.count()).select_from(ResourceVersion).where(*conditions))
    if cursor is not None:
        conditions.append(ResourceVersion.pk < cursor)
    rows = session.scalars(
        select(ResourceVersion).where(*conditions).order_by(ResourceVersion.pk.desc()).limit(count + 1)
    ).all()
    next_cursor = rows[count - 1].pk if len(rows) > count else None
    return HistoryPage(entries=[as_record(r) for r in rows[:count]], next_cursor=next_cursor, total=total)


def histories(session: Session, *, resource_type: str, resource_ids: list[str]) -> dict[str, list[dict]]:
    """Return the live versions of many resources of one type, oldest first per id, in one query per 500 ids."""
    found: dict[str, list[dict]] = {resource_id: [] for resource_id in resource_ids}
    ids = list(found)
    for start in range(0, len(ids), 500):  # keeps the IN list well inside every driver's parameter limit
        rows = session.scalars(
            select(ResourceVersion)
            .where(ResourceVersion.resource_pk.in_(select(Resource.pk).where(
                Resource.res_type == resource_type, Resource.res_id.in_(ids[start:start + 500]))))
            .order_by(ResourceVersion.resource_pk, ResourceVersion.pk)
        ).all()
        for row in rows:
            record = as_record(row)
            if record.content is not None:
                found[row.res_id].append(record.content)
    return found


def creation_order(session: Session, *, resource_type: str, resource_ids: list[str]) -> dict[str, int]:
    """Return the storage key of each resource (the search engine's default order), one query per 500 ids."""
    ids = sorted(set(resource_ids))
    found: dict[str, int] = {}
    for start in range(0, len(ids), 500):
        found.update((res_id, pk) for res_id, pk in session.execute(select(Resource.res_id, Resource.pk).where(
            Resource.res_type == resource_type, Resource.res_id.in_(ids[start:start + 500]))))
    return found
