"""Reads and searches for the coordination services, always through the policy-enforcing store and search layers."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from careplan import errors as fhir_errors
from careplan.coordination.errors import CoordinationError, NotFound, RuleViolation
from careplan.search import engine
from careplan.search.request import parse_request
from careplan.security import context
from careplan.store import repository, service
from careplan.store.records import StoredResource
from careplan.validation import validate_resource

MAX_LIMIT = 100
MAX_SCAN = 1000  # resources one internal sweep reads (worklist, summary)
FILTER_SCAN_PAGE = 100  # resources a filtered listing reads per search page
ANY_CHUNK = 100  # values one OR-search of search_any carries


@dataclass(frozen=True)
class Page:
    """One page of a listing with the opaque cursor of the next page (None on the last)."""

    items: list[dict]
    next_cursor: str | None


def now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def read(session: Session, resource_type: str, resource_id: str) -> StoredResource:
    """Return the current version of a visible resource or raise the domain NotFound."""
    if not _FHIR_ID.match(resource_id):
        raise NotFound(f"{resource_type}/{resource_id[:64]} is not known")
    try:
        return service.read_in(session, resource_type=resource_type, resource_id=resource_id)
    except (fhir_errors.NotFound, fhir_errors.Gone):
        raise NotFound(f"{resource_type}/{resource_id} is not known") from None


def search(session: Session, resource_type: str, params: list[tuple[str, str]], *, limit: int = MAX_SCAN,
           cursor: str | None = None) -> Page:
    """Run a FHIR search as the current caller and return one page of resources."""
    pairs = [*params, ("_count", str(limit)), ("_total", "none")]
    if cursor:
        pairs.append(("_cursor", cursor))
    request = parse_request(pairs, types=(resource_type,), strict=True, default_count=limit,
                            max_count=max(limit, MAX_SCAN))
    result = engine.search(session, request, visibility=context.visibility(None))
    return Page([record.content for record in result.matches], result.next_cursor)


def search_all(session: Session, resource_type: str, params: list[tuple[str, str]]) -> list[dict]:
    """Return every match of a search as the current caller, paging through the engine MAX_SCAN at a time."""
    # No silent cap: a worklist or summary that stopped at one page would drop due items without saying so.
    page = search(session, resource_type, params, limit=MAX_SCAN)
    items = page.items
    while page.next_cursor is not None:
        page = search(session, resource_type, params, limit=MAX_SCAN, cursor=page.next_cursor)
        items.extend(page.items)
    return items


def escape(value: str) -> str:
    """Return value with the FHIR search escapes for backslash, comma, dollar and pipe."""
    return re.sub(r"([\\,$|])", r"\\\1", value)


def search_any(session: Session, resource_type: str, params: list[tuple[str, str]], name: str,
               values: list[str] | set[str]) -> list[dict]:
    """Return every match of params plus name=any of values (an OR in the index, ANY_CHUNK values per search)."""
    chunk = ANY_CHUNK
    ordered = sorted(escape(v) for v in set(values))
    found: dict[str, dict] = {}
    for start in range(0, len(ordered), chunk):
        for resource in search_all(session, resource_type, [*params, (name, ",".join(ordered[start:start + chunk]))]):
            found.setdefault(resource["id"], resource)
    if len(ordered) <= chunk:
        return list(found.values())
    # Chunks each come in the engine's order; put them back in it, as one search would have returned them.
    position = repository.creation_order(session, resource_type=resource_type, resource_ids=list(found))
    return sorted(found.values(), key=lambda r: position.get(r["id"], 0))


_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def caller_reference() -> dict | None:
    """Return a Reference to the calling person or client as a Practitioner (None for trusted system work)."""
    current = context.current()
    if current is None:
        return None
    subject = current.actor.subject
    if _FHIR_ID.match(subject):
        return {"reference": f"Practitioner/{subject}"}
    # An identity provider's subject need not be a valid FHIR id: refer to it by identifier instead.
    return {"identifier": {"system": current.actor.issuer, "value": subject}}


def validate(resource: dict) -> None:
    """Raise RuleViolation unless resource is valid FHIR R4 (what the services build from checked input always is)."""
    try:
        validate_resource(resource, expected_type=resource["resourceType"])
    except fhir_errors.InvalidResource as error:
        raise RuleViolation(f"The {resource['resourceType']} would not be valid FHIR: {error}") from None


def filtered_page(session: Session, resource_type: str, params: list[tuple[str, str]],
                  keep: Callable[[dict], dict | None], *, limit: int, cursor: str | None,
                  prefetch: Callable[[list[dict]], None] | None = None) -> Page:
    """Return up to limit views keep() makes of the matches (None: skip one), with the cursor of the next page.

    For filters the search index cannot express: the cursor is the engine's cursor plus how many of that page were
    already read, so paging neither repeats nor skips. params must sort stably (e.g. ``_sort=_id``). prefetch, if
    given, sees each search page's unread resources before keep() does, to load what keep() needs in one query.
    """
    state = _decode_cursor(cursor) if cursor else {"c": None, "s": 0}
    engine_cursor, skip = state["c"], state["s"]
    items: list[dict] = []
    while True:
        try:
            page = search(session, resource_type, params, limit=FILTER_SCAN_PAGE, cursor=engine_cursor)
        except fhir_errors.InvalidRequest:  # the engine's own cursor inside ours was forged or is stale
            raise _bad_cursor() from None
        if prefetch is not None:
            prefetch(page.items[skip:])
        for index, resource in enumerate(page.items[skip:], start=skip):
            view = keep(resource)
            if view is None:
                continue
            items.append(view)
            if len(items) == limit:
                if index + 1 < len(page.items):
                    return Page(items, _encode_cursor(engine_cursor, index + 1))
                return Page(items, _encode_cursor(page.next_cursor, 0) if page.next_cursor else None)
        if page.next_cursor is None:
            return Page(items, None)
        engine_cursor, skip = page.next_cursor, 0


def _encode_cursor(engine_cursor: str | None, skip: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"c": engine_cursor, "s": skip}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("s"), int) or state["s"] < 0 \
            or not (state.get("c") is None or isinstance(state.get("c"), str)):
        raise _bad_cursor()
    return state


def _bad_cursor() -> CoordinationError:
    return CoordinationError("The cursor is not one this server made; start again without it",
                             errors={"cursor": ["Not a valid cursor."]}, location="query")
