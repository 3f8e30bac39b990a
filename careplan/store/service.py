"""FHIR store operations, each in its own transaction: create, read, vread, update, patch, delete, history.

The functions that take a ``session`` work inside a caller's transaction (a transaction Bundle composes them);
the ones that take ``db`` open, commit and retry their own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import jsonpatch
import jsonpointer
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from careplan.db import Database, advisory_key
from careplan.errors import (
    Gone,
    InvalidRequest,
    InvalidResource,
    MethodNotAllowed,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
    UnknownResourceType,
    UnprocessableEntity,
)
from careplan.models import Resource
from careplan.practices import profiles
from careplan.referrals import workflow
from careplan.reminders import rules as reminder_rules
from careplan.resources import SERVER_WRITTEN_TYPES, is_supported
from careplan.search import query as search_query
from careplan.security import context, guard
from careplan.store import repository, sync
from careplan.store.records import HistoryPage, StoredResource, WriteResult
from careplan.validation import validate_resource

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ATTEMPTS = 3


def require_type(resource_type: str) -> None:
    """Raise UnknownResourceType unless resource_type is stored here."""
    if not is_supported(resource_type):
        raise UnknownResourceType(f"Resource type {resource_type!r} is not supported by this server")


def _require_client_writable(resource_type: str, by_server: bool) -> None:
    if resource_type in SERVER_WRITTEN_TYPES and not by_server:
        raise MethodNotAllowed(f"{resource_type} resources are written by the server only")


def require_client_writable(resource_type: str) -> None:
    """Raise MethodNotAllowed when clients may not write resource_type (the audit trail)."""
    _require_client_writable(resource_type, False)


def conditional_lock_key(resource_type: str, criteria: list[tuple[str, str]]) -> str:
    """Return the lock name that serialises conditional writes with the same criteria."""
    return f"conditional:{resource_type}?{sorted(criteria)}"


def lock_in(session: Session, name: str) -> None:
    """Take the advisory lock name until session's transaction ends (PostgreSQL; SQLite has one writer already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(name)})


def _retrying(db: Database, work: Callable[[Session], T], *, lock_key: str | None = None) -> T:
    """Run work in a write transaction, retrying when a concurrent writer won a unique-key race."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with db.writing(lock_key=lock_key) as session:
                return work(session)
        except (IntegrityError, OperationalError) as exc:
            if attempt == MAX_ATTEMPTS or not _is_transient(exc):
                raise
            log.info("write conflict, retrying (attempt %d): %s", attempt, type(exc.orig).__name__)
    raise AssertionError("unreachable")


def write_retrying(db: Database, work: Callable[[Session], T], *, lock_key: str | None = None) -> T:
    """Run work(session) in a write transaction, retrying it whole when a concurrent writer won a race."""
    return _retrying(db, work, lock_key=lock_key)


def _is_transient(exc: Exception) -> bool:
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate is not None:
        # unique_violation, serialization_failure, deadlock_detected
        return sqlstate in {"23505", "40001", "40P01"}
    message = str(getattr(exc, "orig", exc)).lower()
    return "unique constraint" in message or "database is locked" in message


def _check_if_match(row, if_match: int | None) -> None:
    if if_match is None:
        return
    if row is None:
        raise PreconditionFailed(f"If-Match W/\"{if_match}\" given, but the resource does not exist")
    if row.version_id != if_match:
        raise PreconditionFailed(
            f"Version conflict: If-Match is W/\"{if_match}\" but the current version is W/\"{row.version_id}\"",
            code="conflict",
        )


# -- reads -------------------------------------------------------------------------------------------------


def read(db: Database, *, resource_type: str, resource_id: str) -> StoredResource:
    """Return the current version of a resource; raise NotFound, or Gone when it was deleted."""
    require_type(resource_type)
    with db.reading() as session:
        return read_in(session, resource_type=resource_type, resource_id=resource_id)


def read_in(session: Session, *, resource_type: str, resource_id: str) -> StoredResource:
    """Return the current version of a resource within session."""
    row = repository.head(session, resource_type, resource_id)
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    guard.require_visible(session, row)
    if row.deleted:
        raise _gone(row)
    return repository.as_record(row)


class GoneResource(Gone):
    """A deleted resource, carrying the deletion version for ETag headers."""

    def __init__(self, record: StoredResource):
        super().__init__(f"{record.resource_type}/{record.id} was deleted (version {record.version_id})")
        self.record = record


def _gone(row) -> GoneResource:
    return GoneResource(repository.as_record(row))


def vread(db: Database, *, resource_type: str, resource_id: str, version_id: str) -> StoredResource:
    """Return one version of a resource; a version that records a deletion raises Gone."""
    require_type(resource_type)
    with db.reading() as session:
        return vread_in(session, resource_type=resource_type, resource_id=resource_id, version_id=version_id)


def vread_in(session: Session, *, resource_type: str, resource_id: str, version_id: str) -> StoredResource:
    """Return one version of a resource within session; a version that records a deletion raises Gone."""
    if not version_id.isdigit():
        raise NotFound(f"Version {version_id!r} of {resource_type}/{resource_id} is not known")
    current = repository.head(session, resource_type, resource_id)
    if current is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    guard.require_visible(session, current)
    row = repository.version(session, resource_type, resource_id, int(version_id))
    if row is None:
        raise NotFound(f"Version {version_id} of {resource_type}/{resource_id} is not known")
    record = repository.as_record(row)
    if record.deleted:
        raise GoneResource(record)
    return record


def history(db: Database, *, resource_type: str | None = None, resource_id: str | None = None,
            since: datetime | None = None, count: int, cursor: int | None = None,
            horizon: datetime | None = None) -> HistoryPage:
    """Return a page of history for one resource, one type, or the whole system, newest first.

    The page's horizon is where the client's next ``_since`` poll should start; later pages reuse the first one's.
    """
    if resource_type is not None:
        require_type(resource_type)
    with db.polling() as session:
        horizon = horizon or sync.horizon(session)
        resource_pk = None
        if resource_id is not None:
            row = repository.head(session, resource_type, resource_id)
            if row is None:
                raise NotFound(f"{resource_type}/{resource_id} is not known")
            guard.require_visible(session, row)
            resource_pk = row.pk
        page = repository.history(session, resource_type=resource_type, resource_pk=resource_pk, since=since,
                                  count=count, cursor=cursor, with_total=resource_type is not None,
                                  visible=context.visibility(resource_type))
        return dataclasses.replace(page, horizon=horizon)


# -- writes ------------------------------------------------------------------------------------------------


def create(db: Database, *, resource: object, resource_type: str | None = None,
           if_none_exist: str | None = None, by_server: bool = False) -> WriteResult:
    """Create a resource with a server-assigned id; with if_none_exist, only when nothing matches."""
    resource_type = validate_resource(resource, expected_type=resource_type)
    _require_client_writable(resource_type, by_server)
    criteria = _criteria(if_none_exist) if if_none_exist else None
    lock_key = conditional_lock_key(resource_type, criteria) if criteria else None
    return _retrying(db, lambda s: create_in(s, resource=resource, criteria=criteria), lock_key=lock_key)


def create_in(session: Session, *, resource: dict, criteria: list[tuple[str, str]] | None = None,
              resource_id: str | None = None, now: datetime | None = None) -> WriteResult:
    """Create a validated resource inside session (conditionally when criteria are given)."""
    resource_type = resource["resourceType"]
    guard.authorize_create(session, resource)
    if criteria:
        existing = _matches(session, resource_type, criteria)
        if len(existing) > 1:
            raise MultipleMatches(
                f"If-None-Exist matches {len(existing)} {resource_type} resources; the criteria are not selective enough")
        if existing:
            return WriteResult(repository.as_record(existing[0]), created=False, unchanged=True)
    profiles.check(session, resource, resource_id=resource_id)
    workflow.check_transition(session, old=None, new=resource)
    stored = repository.insert(session, guard.label(resource, None), resource_id=resource_id or repository.new_id(),
                               now=now or repository.transaction_time(session), method="POST")
    _after_write(session, old=None, stored=stored)
    return WriteResult(stored, created=True)


def update(db: Database, *, resource_type: str, resource_id: str, resource: object, if_match: int | None = None,
           by_server: bool = False) -> WriteResult:
    """Replace a resource with a new version, or create it with the client's id when it does not exist."""
    require_type(resource_type)
    _require_client_writable(resource_type, by_server)
    validate_resource(resource, expected_type=resource_type)
    if "id" not in resource:
        raise InvalidResource("The resource in an update must have an id", code="required",
                              expression=f"{resource_type}.id")
    if resource["id"] != resource_id:
        raise InvalidResource(f"The id in the body ({resource['id']!r}) does not match the URL ({resource_id!r})",
                              expression=f"{resource_type}.id")
    return _retrying(db, lambda s: update_in(s, resource=resource, resource_id=resource_id, if_match=if_match))


def update_in(session: Session, *, resource: dict, resource_id: str, if_match: int | None = None,
              method: str = "PUT", now: datetime | None = None) -> WriteResult:
    """Write resource as the next version of resource_id inside session; create it when it does not exist."""
    resource_type = resource["resourceType"]
    row = repository.head(session, resource_type, resource_id, for_update=True)
    if row is None:
        guard.authorize_create(session, resource)
    else:
        guard.authorize_change(session, row, new=resource)
    _check_if_match(row, if_match)
    profiles.check(session, resource, resource_id=resource_id)
    workflow.check_transition(session, old=row.content if row is not None and not row.deleted else None, new=resource)
    resource = guard.label(resource, row.content if row is not None and not row.deleted else None)
    if row is None:
        stored = repository.insert(session, resource, resource_id=resource_id,
                                   now=now or repository.transaction_time(session), method=method)
        _after_write(session, old=None, stored=stored)
        return WriteResult(stored, created=True)
    if not row.deleted and repository.without_server_meta(row.content) == repository.without_server_meta(resource):
        # An identical update makes no new version, so syncing clients are not told of a change that never was.
        return WriteResult(repository.as_record(row), unchanged=True)
    previous = None if row.deleted else row.content
    stored = repository.revise(session, row, resource, now=now or repository.transaction_time(session), method=method)
    _after_write(session, old=previous, stored=stored)
    return WriteResult(stored)


def _after_write(session: Session, *, old: dict | None, stored: StoredResource) -> None:
    """Run what a stored version causes in the same transaction: referral closing effects, reminder rows."""
    new = None if stored.deleted else stored.content
    if new is not None:
        workflow.after_write(session, old=old, new=new, now=stored.last_updated)
    reminder_rules.sync_for_write(session, old=old, new=new, now=stored.last_updated)


def conditional_update(db: Database, *, resource_type: str, criteria: str, resource: object,
                       if_match: int | None = None) -> WriteResult:
    """Update the single resource matching criteria, or create one when none matches."""
    require_type(resource_type)
    _require_client_writable(resource_type, False)
    validate_resource(resource, expected_type=resource_type)
    parsed = _criteria(criteria)

    def work(session: Session) -> WriteResult:
        existing = _matches(session, resource_type, parsed)
        if len(existing) > 1:
            raise MultipleMatches(f"The criteria match {len(existing)} {resource_type} resources; "
                                  "a conditional update needs exactly one")
        if existing:
            target = existing[0].res_id
            if resource.get("id", target) != target:
                raise InvalidResource(f"The id in the body ({resource['id']!r}) is not the id of the matching "
                                      f"resource ({target!r})", expression=f"{resource_type}.id")
            return update_in(session, resource=resource, resource_id=target, if_match=if_match)
        if if_match is not None:
            raise PreconditionFailed("If-Match given, but no resource matches the criteria")
        if "id" in resource and repository.head(session, resource_type, resource["id"]) is not None:
            raise InvalidResource(f"{resource_type}/{resource['id']} exists but does not match the criteria",
                                  expression=f"{resource_type}.id")
        return create_in(session, resource=resource, resource_id=resource.get("id"))

    return _retrying(db, work, lock_key=conditional_lock_key(resource_type, parsed))


def patch(db: Database, *, resource_type: str, resource_id: str, operations: object,
          if_match: int | None = None) -> WriteResult:
    """Apply a JSON Patch to the current version and store the result as a new version."""
    require_type(resource_type)
    _require_client_writable(resource_type, False)
    patch_document = parse_patch(operations)
    return _retrying(db, lambda s: patch_in(s, resource_type=resource_type, resource_id=resource_id,
                                            patch_document=patch_document, if_match=if_match))


def parse_patch(operations: object) -> jsonpatch.JsonPatch:
    """Parse a JSON Patch document; raise InvalidRequest when it is not one."""
    if not isinstance(operations, list):
        raise InvalidRequest("A JSON Patch document must be a JSON array of operations")
    try:
        return jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise InvalidRequest(f"Invalid JSON Patch: {exc}") from None


def patch_in(session: Session, *, resource_type: str, resource_id: str, patch_document: jsonpatch.JsonPatch,
             if_match: int | None = None) -> WriteResult:
    """Apply a parsed JSON Patch to the current version inside session and store the result as a new version."""
    row = repository.head(session, resource_type, resource_id, for_update=True)
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    # Before anything else: a failing "test" operation would otherwise reveal the content.
    guard.authorize_change(session, row)
    if row.deleted:
        raise _gone(row)
    _check_if_match(row, if_match)
    patched = apply_patch(patch_document, row.content)
    validate_resource(patched, expected_type=resource_type)
    if patched.get("id") != resource_id:
        raise UnprocessableEntity("A patch may not change the resource id", expression=f"{resource_type}.id")
    return update_in(session, resource=patched, resource_id=resource_id, method="PATCH")


def apply_patch(patch_document: jsonpatch.JsonPatch, content: dict) -> dict:
    """Apply patch_document to a copy of content; a failing operation raises UnprocessableEntity."""
    try:
        return patch_document.apply(content, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise UnprocessableEntity(f"JSON Patch test failed: {exc}", code="processing") from None
    except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException, jsonpatch.InvalidJsonPatch) as exc:
        raise UnprocessableEntity(f"JSON Patch cannot be applied: {exc}", code="processing") from None


def delete(db: Database, *, resource_type: str, resource_id: str, if_match: int | None = None) -> StoredResource | None:
    """Delete a resource (a new version marked deleted); deleting a deleted resource changes nothing."""
    require_type(resource_type)
    _require_client_writable(resource_type, False)
    return _retrying(db, lambda s: delete_in(s, resource_type=resource_type, resource_id=resource_id,
                                             if_match=if_match))


def delete_in(session: Session, *, resource_type: str, resource_id: str, if_match: int | None = None,
              now: datetime | None = None) -> StoredResource | None:
    """Delete a resource inside session; return the deletion version, or None when it was already deleted."""
    row = repository.head(session, resource_type, resource_id, for_update=True)
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    guard.authorize_delete(session, row)
    _check_if_match(row, if_match)
    if row.deleted:
        return None
    previous = row.content
    deleted = repository.tombstone(session, row, now=now or repository.transaction_time(session))
    _after_write(session, old=previous, stored=deleted)
    return deleted


def conditional_delete(db: Database, *, resource_type: str, criteria: str) -> StoredResource | None:
    """Delete the single resource matching criteria; no match deletes nothing, several is an error."""
    require_type(resource_type)
    _require_client_writable(resource_type, False)
    parsed = _criteria(criteria)

    def work(session: Session) -> StoredResource | None:
        existing = _matches(session, resource_type, parsed)
        if len(existing) > 1:
            raise MultipleMatches(f"The criteria match {len(existing)} {resource_type} resources; "
                                  "conditional delete removes one at a time")
        if not existing:
            return None
        return delete_in(session, resource_type=resource_type, resource_id=existing[0].res_id)

    return _retrying(db, work, lock_key=conditional_lock_key(resource_type, parsed))


# -- criteria ----------------------------------------------------------------------------------------------


def _criteria(query_string: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    text = query_string.split("?", 1)[1] if "?" in query_string else query_string
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidRequest(f"Malformed conditional criteria {query_string!r}") from None
    if not pairs:
        raise InvalidRequest("Conditional criteria must name at least one search parameter")
    return pairs


def _matches(session: Session, resource_type: str, pairs: list[tuple[str, str]]):
    # Two are enough to tell "one" from "several". What the caller may not see does not match: existence must not leak.
    rows = search_query.matching_rows(session, resource_type, search_query.parse(pairs), limit=2)
    visible = context.visibility(resource_type)
    if visible is None or not rows:
        return rows
    allowed = set(session.scalars(select(Resource.pk).where(Resource.pk.in_([r.pk for r in rows]), visible)))
    return [r for r in rows if r.pk in allowed]


def parse_criteria(query_string: str) -> list[tuple[str, str]]:
    """Parse conditional criteria (``identifier=s|v&...``, optionally after ``Type?``) into name/value pairs."""
    return _criteria(query_string)


def matches_in(session: Session, *, resource_type: str, criteria: list[tuple[str, str]]) -> list[StoredResource]:
    """Return the live resources matching criteria inside session; at most two (enough to tell one from several)."""
    return [repository.as_record(row) for row in _matches(session, resource_type, criteria)]
