"""Turn FHIR search parameters into SQL over the search index (the subset conditional interactions need)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy import and_, exists, false, or_, select
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
from careplan.search.dates import parse_range
from careplan.search.parameters import load_registry

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Parameters that steer the result (paging, sorting, format) rather than select resources.
RESULT_PARAMETERS = frozenset({
    "_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_contained",
    "_containedType", "_format", "_pretty", "_cursor",
})


@dataclass(frozen=True)
class Criterion:
    """One search parameter as sent: name, optional modifier, and its comma-separated values."""

    name: str
    modifier: str | None
    values: tuple[str, ...]


def parse(pairs: Iterable[tuple[str, str]]) -> list[Criterion]:
    """Split query pairs into criteria, leaving out result parameters."""
    criteria = []
    for raw_name, raw_value in pairs:
        name, _, modifier = raw_name.partition(":")
        if name in RESULT_PARAMETERS:
            continue
        criteria.append(Criterion(name, modifier or None, tuple(_split_commas(raw_value))))
    return criteria


def _split_commas(value: str) -> list[str]:
    # A backslash escapes a comma inside a value.
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def matching_rows(session: Session, resource_type: str, criteria: list[Criterion], *,
                  limit: int | None = None) -> list[Resource]:
    """Return the live resources of resource_type matching every criterion."""
    if not criteria:
        raise InvalidRequest("Conditional criteria must name at least one search parameter")
    query = (
        select(Resource)
        .where(Resource.res_type == resource_type, Resource.deleted.is_(False),
               *(condition(resource_type, c) for c in criteria))
        .order_by(Resource.pk)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def condition(resource_type: str, criterion: Criterion):
    """Return the SQL condition on Resource for one criterion."""
    if criterion.name == "_id":
        return Resource.res_id.in_(criterion.values)
    if criterion.name == "_lastUpdated":
        return or_(*(_date_condition(Resource.last_updated, Resource.last_updated, v) for v in criterion.values))
    parameter = load_registry().get(resource_type, criterion.name)
    if parameter is None:
        raise InvalidRequest(f"Unknown search parameter {criterion.name!r} for {resource_type}",
                             code="not-supported")
    builder = _BUILDERS.get(parameter.type)
    if builder is None:
        raise InvalidRequest(f"Search parameter {criterion.name!r} of type {parameter.type} is not supported here",
                             code="not-supported")
    table, value_condition = builder
    if criterion.modifier == "missing":
        flag = criterion.values[0].lower()
        if flag not in ("true", "false"):
            raise InvalidRequest(f":missing takes true or false, not {criterion.values[0]!r}")
        present = exists().where(table.resource_pk == Resource.pk, table.param == criterion.name)
        return ~present if flag == "true" else present
    matches = or_(*(value_condition(criterion.modifier, v, criterion.name) for v in criterion.values))
    return exists().where(table.resource_pk == Resource.pk, table.res_type == resource_type,
                          table.param == criterion.name, matches)


def _unsupported(modifier: str, kind: str, name: str) -> InvalidRequest:
    return InvalidRequest(f"Modifier :{modifier} is not supported on {kind} parameter {name!r}", code="not-supported")


def _token(modifier: str | None, value: str, name: str):
    if modifier == "text":
        return SearchToken.text.ilike(f"{value}%")
    if modifier is not None:
        raise _unsupported(modifier, "token", name)
    if "|" not in value:
        return SearchToken.code == value
    system, _, code = value.partition("|")
    if not system:
        return and_(SearchToken.code == code, SearchToken.system.is_(None))
    if not code:
        return SearchToken.system == system
    return and_(SearchToken.system == system, SearchToken.code == code)


def _string(modifier: str | None, value: str, name: str):
    from careplan.search.extract import normalize  # the same folding indexing applied

    if modifier == "exact":
        return SearchString.value == value
    if modifier == "contains":
        return SearchString.normalized.contains(normalize(value), autoescape=True)
    if modifier is not None:
        raise _unsupported(modifier, "string", name)
    return SearchString.normalized.startswith(normalize(value), autoescape=True)


def _reference(modifier: str | None, value: str, name: str):
    if "://" in value:
        return SearchReference.url == value
    if "/" in value:
        target_type, _, target_id = value.rpartition("/")
        return and_(SearchReference.target_type == target_type, SearchReference.target_id == target_id)
    if modifier:
        return and_(SearchReference.target_type == modifier, SearchReference.target_id == value)
    return SearchReference.target_id == value


def _uri(modifier: str | None, value: str, name: str):
    if modifier is not None:
        raise _unsupported(modifier, "uri", name)
    return SearchUri.uri == value


def _date(modifier: str | None, value: str, name: str):
    if modifier is not None:
        raise _unsupported(modifier, "date", name)
    return _date_condition(SearchDate.low, SearchDate.high, value)


def _date_condition(low_column, high_column, value: str):
    prefix, text = (value[:2], value[2:]) if value[:2] in PREFIXES else ("eq", value)
    try:
        low, high = parse_range(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="value") from None
    return {
        "eq": and_(low_column >= low, high_column <= high),
        "ne": or_(low_column < low, high_column > high),
        "gt": high_column > high,
        "lt": low_column < low,
        "ge": high_column >= low,
        "le": low_column <= high,
        "sa": low_column > high,
        "eb": high_column < low,
        "ap": and_(low_column <= high, high_column >= low),
    }[prefix]


def _number(table):
    def build(modifier: str | None, value: str, name: str):
        if modifier is not None:
            raise _unsupported(modifier, "number", name)
        prefix, text = (value[:2], value[2:]) if value[:2] in PREFIXES else ("eq", value)
        number_text, _, unit = text.partition("|")
        try:
            number = Decimal(number_text)
        except InvalidOperation:
            raise InvalidRequest(f"{text!r} is not a number", code="value") from None
        if not number.is_finite():
            raise InvalidRequest(f"{text!r} is not a finite number", code="value")
        # eq means "within the precision the value was written with": 1.5 matches 1.45 up to 1.55.
        half = Decimal(1).scaleb(number.as_tuple().exponent) / 2
        column = table.value
        conditions = [{
            "eq": and_(column >= number - half, column < number + half),
            "ne": or_(column < number - half, column >= number + half),
            "gt": column > number, "lt": column < number, "ge": column >= number, "le": column <= number,
            "sa": column > number, "eb": column < number,
            "ap": and_(column >= number * Decimal("0.9"), column <= number * Decimal("1.1")),
        }.get(prefix, false())]
        if table is SearchQuantity and unit:
            system, _, code = unit.rpartition("|")
            conditions.append(or_(SearchQuantity.code == code, SearchQuantity.unit == code))
            if system:
                conditions.append(SearchQuantity.system == system)
        return and_(*conditions)

    return build


_BUILDERS = {
    "token": (SearchToken, _token),
    "string": (SearchString, _string),
    "reference": (SearchReference, _reference),
    "uri": (SearchUri, _uri),
    "date": (SearchDate, _date),
    "number": (SearchNumber, _number(SearchNumber)),
    "quantity": (SearchQuantity, _number(SearchQuantity)),
}
