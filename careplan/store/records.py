"""Values the store hands back: a stored resource version and a history page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


def format_instant(moment: datetime) -> str:
    """Format a UTC datetime as a FHIR instant with microseconds, e.g. 2026-11-22T02:18:08.948276Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource as stored: the body is the client's JSON with server-owned id and meta."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: dict | None
    method: str | None = None  # the HTTP method that made this version (history only)

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the resulting version and whether it created the resource, or changed nothing."""

    stored: StoredResource
    created: bool = False
    unchanged: bool = False


@dataclass(frozen=True)
class HistoryPage:
    """A page of history, newest first, with the cursor for the next page (None on the last)."""

    entries: list[StoredResource]
    next_cursor: int | None
    total: int | None
    horizon: datetime | None = None  # continue an incremental sync from here (see careplan.store.sync)
