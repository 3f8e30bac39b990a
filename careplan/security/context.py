"""The caller a piece of work runs for, visible to every layer that touches data.

The web layer sets it once per request (``acting_as``); the store, search and bundle code read it where they read or
write rows, so no path into the data can forget to apply the policy or the audit trail. Work started outside a
request (the CLI, the scheduler, seeding) has no context and runs as the trusted system.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement

from careplan.models import Resource, utcnow
from careplan.security import policy
from careplan.security.audit import Actor


@dataclass
class RequestContext:
    """Who is acting, and the audit facts gathered while the request runs."""

    caller: policy.Caller
    actor: Actor
    purpose_of_use: tuple[str, ...] = ("TREAT",)
    break_glass_reason: str | None = None
    touched: list[str] = field(default_factory=list)  # "Type/id" of what was read or written
    patients: list[str] = field(default_factory=list)  # "Patient/id" whose data it was
    audited_writes: set[str] = field(default_factory=set)  # already audited inside their write transaction
    redisclosure_notice: bool = False  # substance-use data was disclosed

    def touched_by_reads(self) -> list[str]:
        """Return what the caller received without writing it."""
        return [reference for reference in self.touched if reference not in self.audited_writes]

    def saw(self, resource: dict | None) -> None:
        """Note a resource the caller received or wrote, for the audit trail."""
        if not resource or "resourceType" not in resource or "id" not in resource:
            return
        reference = f"{resource['resourceType']}/{resource['id']}"
        if reference not in self.touched:
            self.touched.append(reference)
        for patient in patients_of(resource):
            if patient not in self.patients:
                self.patients.append(patient)


_current: ContextVar[RequestContext | None] = ContextVar("careplan_request_context", default=None)


def enter(context: RequestContext) -> Token:
    """Make context current until leave(token); for frameworks whose hooks cannot wrap a with-block."""
    return _current.set(context)


def leave(token: Token) -> None:
    """Restore the context that was current before enter()."""
    _current.reset(token)


def current() -> RequestContext | None:
    """Return the context of the work in progress, or None for trusted system work."""
    return _current.get()


@contextmanager
def acting_as(context: RequestContext) -> Iterator[RequestContext]:
    """Run the enclosed work for context's caller."""
    token = enter(context)
    try:
        yield context
    finally:
        leave(token)


def visibility(resource_type: str, *, row=Resource, now: datetime | None = None) -> ColumnElement[bool] | None:
    """Return the SQL condition for rows the current caller may see, or None when no restriction applies."""
    context = current()
    if context is None or context.caller.role == "admin":
        return None
    return policy.visible(context.caller, resource_type, now=now or utcnow(), row=row)


def redact(resource: dict) -> dict:
    """Return what of a visible resource the current caller may receive."""
    context = current()
    return resource if context is None else policy.redact(context.caller, resource)


def patients_of(resource: dict) -> list[str]:
    """Return the Patient references a resource is about (itself, for a Patient)."""
    if resource.get("resourceType") == "Patient" and resource.get("id"):
        return [f"Patient/{resource['id']}"]
    found = []
    for key in policy.PATIENT_LINKS:
        value = resource.get(key)
        for reference in value if isinstance(value, list) else [value]:
            target = (reference or {}).get("reference") if isinstance(reference, dict) else None
            if isinstance(target, str) and target.startswith("Patient/") and target not in found:
                found.append(target)
    return found
