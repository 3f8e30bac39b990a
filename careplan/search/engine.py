"""Execute a checked FHIR search: match, count, sort, page with keyset cursors, and add included resources.

https://hl7.org/fhir/R4/search.html

Paging is stable while other clients write. The first page records the highest resource pk (the snapshot bound)
and every page only considers rows at or below it, so resources created later never appear; each next link
carries the sort values and pk of the last row returned, and the next page starts strictly after them (no
OFFSET), so no row is returned twice and none that existed at the start and still matches is skipped. Resources
deleted (or changed to no longer match) after the first page are not returned. A `_sort` on an element that a
concurrent update changes can move that resource to another page; the default order (creation order) and
`_sort=_id` never change.

``visibility`` is the caller's access policy: a SQL condition on Resource (or None for everything). It filters
matches, totals, included resources, chained and `_has` subqueries, and compartments alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from careplan.errors import InvalidRequest
from careplan.models import (
    Resource,
    SearchDate,
    SearchNumber,
    SearchQuantity,
    SearchReference,
    SearchString,
    SearchToken,
    SearchUri,
)
from careplan.resources import WIDE_SEARCH_TYPES
from careplan.search import compartment as compartments
from careplan.search.query import Scope, alias, condition
from careplan.search.request import Include, SearchRequest, SortKey, resource_level
from careplan.store import repository
from careplan.store.records import StoredResource

MAX_INCLUDED = 5000  # included resources per page; past it the page says so in an OperationOutcome
MAX_ITERATIONS = 4  # rounds of :iterate includes
CURSOR_VERSION = 1


@dataclass
class SearchResult:
    """One page of a search: the matches, the resources included with them, the total and the next cursor."""

    matches: list[StoredResource] = field(default_factory=list)
    included: list[StoredResource] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    warnings: list[str] = field(default_factory=list)


def search(session: Session, request: SearchRequest, *, visibility: ColumnElement[bool] | None = None,
           local_bases: tuple[str, ...] = ()) -> SearchResult:
    """Return one page of request's results as visibility allows."""
    scope = Scope(visibility=visibility, local_bases=tuple(b.rstrip("/") for b in local_bases))
    where = _conditions(request, scope)
    state = decode_cursor(request) if request.cursor else None
    bound = state["b"] if state else (session.scalar(select(func.max(Resource.pk))) or 0)
    where.append(Resource.pk <= bound)

    result = SearchResult()
    if request.total != "none" or request.total_only:
        carried = state.get("t") if state else None
        result.total = carried if carried is not None else session.scalar(
            select(func.count()).select_from(Resource).where(*where))
    if request.total_only:
        return result

    keys = [(sort_expression(key), key) for key in request.sort]
    query = select(Resource, *(expr for expr, _ in keys)).where(*where)
    if state:
        query = query.where(_after(keys, state["k"], state["p"]))
    order = [expr.desc().nulls_last() if key.descending else expr.asc().nulls_last() for expr, key in keys]
    rows = session.execute(query.order_by(*order, Resource.pk).limit(request.count + 1)).all()
    page = rows[:request.count]
    result.matches = [repository.as_record(row[0]) for row in page]
    if len(rows) > request.count:
        last = page[-1]
        result.next_cursor = encode_cursor(request, bound=bound, last_pk=last[0].pk,
                                           values=[_dump(v) for v in last[1:]], total=result.total)
    if request.includes or request.revincludes:
        included, truncated = _included(session, [row[0] for row in page], request, scope)
        result.included = [repository.as_record(r) for r in included]
        if truncated:
            result.warnings.append(f"Only the first {MAX_INCLUDED} included resources are returned on a page")
    return result


def compartment_owner(session: Session, patient_id: str, *,
                      visibility: ColumnElement[bool] | None = None) -> Resource | None:
    """Return the live Patient that owns a compartment, if the caller may see it."""
    conditions = [Resource.res_type == compartments.OWNER_TYPE, Resource.res_id == patient_id,
                  Resource.deleted.is_(False)]
    if visibility is not None:
        conditions.append(visibility)
    return session.scalars(select(Resource).where(*conditions)).one_or_none()


# --- matching --------------------------------------------------------------------------------------


def _conditions(request: SearchRequest, scope: Scope) -> list:
    where: list = [Resource.deleted.is_(False)]
    if scope.visibility is not None:
        where.append(scope.visibility)
    if request.since is not None:
        where.append(Resource.last_updated >= request.since)
    wide = len(request.types) > 1
    shared = [c for c in request.criteria if wide and resource_level(c)]
    specific = [c for c in request.criteria if not (wide and resource_level(c))]
    where.extend(condition(None, c, scope=scope) for c in shared)
    if len(request.types) == 1:
        resource_type = request.types[0]
        where.append(Resource.res_type == resource_type)
        where.extend(condition(resource_type, c, scope=scope) for c in specific)
    elif specific:
        where.append(or_(*(and_(Resource.res_type == t, *(condition(t, c, scope=scope) for c in specific))
                           for t in request.types)))
    elif not request.all_types:
        where.append(Resource.res_type.in_(request.types))
    else:
        where.append(Resource.res_type.in_(WIDE_SEARCH_TYPES))
    if request.compartment is not None:
        where.append(compartments.in_compartment(request.compartment.patient_id, request.types))
    return where


# --- sorting and keyset paging ---------------------------------------------------------------------

_SORT_COLUMNS = {
    "token": (SearchToken, "code"),
    "string": (SearchString, "normalized"),
    "uri": (SearchUri, "uri"),
    "number": (SearchNumber, "value"),
    "quantity": (SearchQuantity, "value"),
}


def sort_expression(key: SortKey):
    """Return the per-resource value a sort key orders by (lowest value ascending, highest descending)."""
    if key.name == "_id":
        return Resource.res_id
    if key.name == "_lastUpdated":
        return Resource.last_updated
    pick = func.max if key.descending else func.min
    if key.type == "date":
        row = alias(SearchDate)
        value = pick(row.high if key.descending else row.low)
    elif key.type == "reference":
        row = alias(SearchReference)
        value = pick(func.coalesce(row.target_type + "/" + row.target_id, row.url))
    else:
        table, column = _SORT_COLUMNS[key.type]
        row = alias(table)
        value = pick(getattr(row, column))
    return (select(value).where(row.resource_pk == Resource.pk, row.param == key.name)
            .scalar_subquery().label(f"sort_{key.name}"))


def _after(keys: list, values: list, last_pk: int):
    """Return "the row sorts after (values..., last_pk)", with NULLs last in either direction."""
    clauses, equal = [], []
    for (expression, key), value in zip(keys, values):
        expression = expression.element if hasattr(expression, "element") else expression
        value = _load(value, key)
        if value is not None:
            beyond = expression < value if key.descending else expression > value
            clauses.append(and_(*equal, or_(beyond, expression.is_(None))))
            equal.append(expression == value)
        else:
            equal.append(expression.is_(None))
    clauses.append(and_(*equal, Resource.pk > last_pk))
    return or_(*clauses)


def _dump(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return value


def _load(value, key: SortKey):
    if value is None:
        return None
    try:
        if key.type == "date":
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("naive")
            return moment
        if key.type in ("number", "quantity"):
            return Decimal(value)
    except (TypeError, ValueError, InvalidOperation):
        raise _bad_cursor() from None
    if not isinstance(value, str):
        raise _bad_cursor()
    return value


# --- cursors ---------------------------------------------------------------------------------------


def encode_cursor(request: SearchRequest, *, bound: int, last_pk: int, values: list, total: int | None) -> str:
    """Return the opaque cursor of the page after the row (values, last_pk)."""
    state = {"v": CURSOR_VERSION, "q": request.digest(), "b": bound, "p": last_pk, "k": values, "t": total}
    raw = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_checksum(raw) + raw).rstrip(b"=").decode("ascii")


def decode_cursor(request: SearchRequest) -> dict:
    """Return the state in request's cursor; raise InvalidRequest when it is garbled, altered or foreign."""
    text = request.cursor or ""
    try:
        blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        check, raw = blob[:8], blob[8:]
        if not raw or check != _checksum(raw):
            raise ValueError("checksum")
        state = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _bad_cursor() from None
    valid = (
        isinstance(state, dict) and state.get("v") == CURSOR_VERSION
        and all(isinstance(state.get(k), int) and not isinstance(state.get(k), bool) for k in ("b", "p"))
        and isinstance(state.get("k"), list) and len(state["k"]) == len(request.sort)
        and (state.get("t") is None or (isinstance(state["t"], int) and not isinstance(state["t"], bool)))
    )
    if not valid:
        raise _bad_cursor()
    if state.get("q") != request.digest():
        raise InvalidRequest("_cursor belongs to a search with other parameters; follow the links as given",
                             code="value", expression="_cursor")
    return state


def _checksum(raw: bytes) -> bytes:
    # Catches garbled or hand-edited cursors; it is no access control (the visibility condition is).
    return hashlib.blake2b(raw, digest_size=8, person=b"careplan-cursor").digest()


def _bad_cursor() -> InvalidRequest:
    return InvalidRequest("_cursor is not one this server issued; restart the search from its first page",
                          code="value", expression="_cursor")


# --- _include and _revinclude ----------------------------------------------------------------------


def _included(session: Session, matches: list[Resource], request: SearchRequest,
              scope: Scope) -> tuple[list[Resource], bool]:
    """Return the resources the page's _include and _revinclude bring in (iterating where asked)."""
    seen = {row.pk for row in matches}
    found: list[Resource] = []
    frontier = matches
    for round_number in range(MAX_ITERATIONS + 1):
        forward = [i for i in request.includes if round_number == 0 or i.iterate]
        reverse = [i for i in request.revincludes if round_number == 0 or i.iterate]
        if not frontier or not (forward or reverse):
            break
        fresh: list[Resource] = []
        for include in forward:
            fresh.extend(_forward(session, frontier, include, scope))
        for include in reverse:
            fresh.extend(_reverse(session, frontier, include, scope))
        frontier = []
        for row in fresh:
            if row.pk not in seen:
                seen.add(row.pk)
                frontier.append(row)
        found.extend(frontier)
        if len(found) > MAX_INCLUDED:
            return found[:MAX_INCLUDED], True
    return found, False


def _live(scope: Scope) -> list:
    return [Resource.deleted.is_(False)] + ([scope.visibility] if scope.visibility is not None else [])


def _forward(session: Session, frontier: list[Resource], include: Include, scope: Scope) -> list[Resource]:
    sources = [r.pk for r in frontier if include.source_type in (None, r.res_type)]
    if not sources:
        return []
    link = alias(SearchReference)
    conditions = [link.resource_pk.in_(sources), link.target_id.is_not(None), link.target_type.is_not(None)]
    if include.parameter is not None:
        conditions.append(link.param == include.parameter)
    if include.target_type is not None:
        conditions.append(link.target_type == include.target_type)
    if include.source_type is not None:
        conditions.append(link.res_type == include.source_type)
    targets: dict[str, set[str]] = {}
    for target_type, target_id in session.execute(select(link.target_type, link.target_id).where(*conditions)):
        targets.setdefault(target_type, set()).add(target_id)
    if not targets:
        return []
    wanted = or_(*(and_(Resource.res_type == t, Resource.res_id.in_(sorted(ids))) for t, ids in targets.items()))
    return list(session.scalars(select(Resource).where(wanted, *_live(scope)).order_by(Resource.pk)))


def _reverse(session: Session, frontier: list[Resource], include: Include, scope: Scope) -> list[Resource]:
    by_type: dict[str, list[str]] = {}
    for row in frontier:
        by_type.setdefault(row.res_type, []).append(row.res_id)
    link = alias(SearchReference)
    conditions = [or_(*(and_(link.target_type == t, link.target_id.in_(ids)) for t, ids in by_type.items()))]
    if include.source_type is not None:
        conditions.append(link.res_type == include.source_type)
    else:
        conditions.append(link.res_type.in_(WIDE_SEARCH_TYPES))
    if include.parameter is not None:
        conditions.append(link.param == include.parameter)
    if include.target_type is not None:
        conditions.append(link.target_type == include.target_type)
    sources = select(link.resource_pk).where(*conditions)
    return list(session.scalars(select(Resource).where(Resource.pk.in_(sources), *_live(scope))
                                .order_by(Resource.pk)))
