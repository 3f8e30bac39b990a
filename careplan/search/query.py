"""Turn FHIR search parameters into SQL conditions over the search index.

https://hl7.org/fhir/R4/search.html

Every condition is a boolean SQL expression on one Resource entity (the table itself, or an alias when the
condition sits inside a chained or reverse-chained subquery), so conditional interactions and the search engine
build on the same code. Each index table is aliased in every subquery: a chain whose two hops use the same
table must not have the inner subquery correlate to the outer one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql import expression as sql_expression
from sqlalchemy.sql.util import ClauseAdapter
from sqlalchemy.types import Boolean

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
from careplan.resources import SUPPORTED_TYPES, is_supported
from careplan.search.dates import MAX_UTC, parse_range
from careplan.search.parameters import SearchParameter, load_registry

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Parameters that steer the result (paging, sorting, format) rather than select resources.
RESULT_PARAMETERS = frozenset({
    "_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_contained",
    "_containedType", "_format", "_pretty", "_cursor", "_type",
})
# Parameter types the engine can evaluate; composite and special ones (_text, _content, near) it cannot.
SEARCHABLE_TYPES = frozenset({"token", "string", "reference", "uri", "date", "number", "quantity"})
# Modifiers each parameter type supports here (a subset of what search.html defines).
SUPPORTED_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not", "text"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "reference": frozenset({"missing"}),  # plus :Type, checked separately
    "uri": frozenset({"missing", "above", "below"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
}
MAX_CHAIN_DEPTH = 3
_REFERENCE_VALUE = re.compile(
    r"^(?:(?P<base>[A-Za-z][A-Za-z0-9+.-]*://.+?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


class UnknownParameter(InvalidRequest):
    """A search parameter this server does not know or cannot evaluate for the resource type."""

    code = "not-supported"

    def __init__(self, name: str, diagnostics: str):
        super().__init__(diagnostics, expression=name)
        self.name = name


@dataclass(frozen=True)
class Criterion:
    """One search parameter as sent: name, optional modifier, and its comma-separated values.

    ``chain`` holds what follows the first '.' of a chained parameter (`subject:Patient.name:exact` has name
    `subject`, modifier `Patient` and chain `name:exact`); `_has` keeps the rest of its name in ``modifier``.
    """

    name: str
    modifier: str | None
    values: tuple[str, ...]
    chain: str | None = None

    @property
    def raw_name(self) -> str:
        """Return the parameter name as the client wrote it."""
        text = self.name + (f":{self.modifier}" if self.modifier else "")
        return text + (f".{self.chain}" if self.chain else "")


@dataclass(frozen=True)
class Scope:
    """What conditions need beyond the criterion: the caller's visibility and the server's own base URLs."""

    visibility: ColumnElement[bool] | None = None  # a condition on Resource; None shows everything
    local_bases: tuple[str, ...] = ()
    depth: int = field(default=0, compare=False)


def parse(pairs: Iterable[tuple[str, str]]) -> list[Criterion]:
    """Split query pairs into criteria, leaving out result parameters."""
    criteria = []
    for raw_name, raw_value in pairs:
        criterion = criterion_from(raw_name, raw_value)
        if criterion is not None:
            criteria.append(criterion)
    return criteria


def criterion_from(raw_name: str, raw_value: str) -> Criterion | None:
    """Parse one query pair into a Criterion; None for result parameters (_count, _sort...)."""
    if raw_name.startswith("_has:"):
        return Criterion("_has", raw_name[len("_has:"):], tuple(split_commas(raw_value)))
    head, dot, chain = raw_name.partition(".")
    name, _, modifier = head.partition(":")
    if name in RESULT_PARAMETERS:
        return None
    return Criterion(name, modifier or None, tuple(split_commas(raw_value)), chain if dot else None)


def split_commas(value: str) -> list[str]:
    """Split a parameter value on unescaped commas; other escapes stay for the type-specific parsing."""
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char if char == "," else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    """Remove the search escapes (\\| \\$ \\\\) from a value."""
    return re.sub(r"\\(.)", r"\1", value)


def split_pipe(value: str) -> tuple[str, str] | None:
    """Split value at its first unescaped '|' into two unescaped halves, or return None when it has none."""
    escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            return unescape(value[:i]), unescape(value[i + 1:])
    return None


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


def parameter_for(resource_type: str | None, name: str) -> SearchParameter:
    """Return the searchable parameter `name` of resource_type; raise UnknownParameter otherwise.

    resource_type None asks for a parameter every type has (_tag, _profile...).
    """
    if resource_type is None:
        parameter = load_registry().get(SUPPORTED_TYPES[0], name)
        if parameter is not None and not is_resource_level(parameter):
            parameter = None
    else:
        parameter = load_registry().get(resource_type, name)
    if parameter is None:
        raise UnknownParameter(name, f"Unknown search parameter {name!r} for {resource_type or 'all types'}")
    if not is_searchable(parameter):
        raise UnknownParameter(name, f"Search parameter {name!r} ({parameter.type}) is not supported")
    return parameter


def is_searchable(parameter: SearchParameter) -> bool:
    """Tell whether the engine can evaluate parameter: composite, special and expression-less ones
    (_text, _content, _query) it cannot."""
    return parameter.type in SEARCHABLE_TYPES and (parameter.expression is not None or parameter.code in
                                                   ("_id", "_lastUpdated"))


def is_resource_level(parameter: SearchParameter) -> bool:
    """Tell whether parameter is defined on Resource, so every type has it alike."""
    return "/SearchParameter/Resource-" in parameter.url


def condition(resource_type: str | None, criterion: Criterion, *, entity=Resource, scope: Scope = Scope()):
    """Return the SQL condition on entity (Resource or an alias of it) for one criterion."""
    if not criterion.values or not any(criterion.values):
        raise InvalidRequest(f"Search parameter {criterion.raw_name!r} has no value", code="value",
                             expression=criterion.raw_name)
    if criterion.name == "_has":
        return _has(resource_type, criterion, entity, scope)
    if criterion.name == "_id":
        _no_modifier(criterion, "token")
        return entity.res_id.in_([unescape(v) for v in criterion.values])
    if criterion.name == "_lastUpdated":
        _no_modifier(criterion, "date")
        return or_(*(date_condition(entity.last_updated, entity.last_updated, v) for v in criterion.values))
    parameter = parameter_for(resource_type, criterion.name)
    if criterion.chain is not None:
        return _chain(resource_type, parameter, criterion, entity, scope)
    table = _TABLES[parameter.type]
    modifier = criterion.modifier
    if modifier == "missing":
        return _missing(table, parameter, criterion, entity)
    if parameter.type == "reference" and modifier is not None:
        if not is_supported(modifier):
            raise _unsupported(modifier, parameter)
    elif modifier is not None and modifier not in SUPPORTED_MODIFIERS[parameter.type]:
        raise _unsupported(modifier, parameter)
    row = alias(table)
    if parameter.type == "token" and modifier in (None, "not"):
        matches = _token_any(row, criterion.values)
    else:
        build = _BUILDERS[parameter.type]
        matches = or_(*(build(row, modifier, v, parameter, scope) for v in criterion.values))
    of_type = [] if resource_type is None else [row.res_type == resource_type]
    if modifier == "not":
        return ~exists().where(row.resource_pk == entity.pk, *of_type, row.param == parameter.code, matches)
    # IN over an uncorrelated subquery, not a correlated EXISTS: SQLite ran the EXISTS once per candidate resource
    # and, when the criterion filled the lookup index, scanned all of its matches each time (a cost growing with the
    # square of the store); the IN list is computed once and its resources fetched by key. PostgreSQL plans both
    # as the same semi-join. (:not keeps NOT EXISTS, which PostgreSQL plans as an anti-join; NOT IN it does not.)
    return entity.pk.in_(select(row.resource_pk).where(*of_type, row.param == parameter.code, matches))


def _no_modifier(criterion: Criterion, kind: str) -> None:
    if criterion.chain is not None:
        raise InvalidRequest(f"{criterion.name} cannot be chained", code="not-supported",
                             expression=criterion.raw_name)
    if criterion.modifier is not None:
        raise InvalidRequest(f"Modifier :{criterion.modifier} is not supported on {criterion.name}",
                             code="not-supported", expression=criterion.raw_name)


def _unsupported(modifier: str, parameter: SearchParameter) -> InvalidRequest:
    return InvalidRequest(f"Modifier :{modifier} is not supported on {parameter.type} parameter "
                          f"{parameter.code!r}", code="not-supported", expression=f"{parameter.code}:{modifier}")


def _missing(table, parameter: SearchParameter, criterion: Criterion, entity):
    flag = criterion.values[0].lower()
    if len(criterion.values) != 1 or flag not in ("true", "false"):
        raise InvalidRequest(f":missing takes true or false, not {','.join(criterion.values)!r}", code="value",
                             expression=criterion.raw_name)
    row = alias(table)
    present = exists().where(row.resource_pk == entity.pk, row.param == parameter.code)
    return ~present if flag == "true" else present


def alias(model):
    """Return the columns of a fresh alias of model's table (Core: much cheaper to build than ORM aliases)."""
    return model.__table__.alias().c


def adapt(condition_on_resource: ColumnElement[bool] | None, columns) -> ColumnElement[bool] | None:
    """Re-target a condition written on Resource to an alias of it (visibility inside subqueries)."""
    if condition_on_resource is None or columns is Resource:
        return condition_on_resource
    return ClauseAdapter(columns.pk.table).traverse(condition_on_resource)


def _visible(scope: Scope, columns) -> list:
    adapted = adapt(scope.visibility, columns)
    return [] if adapted is None else [adapted]


def _deeper(scope: Scope, name: str) -> Scope:
    if scope.depth >= MAX_CHAIN_DEPTH:
        raise InvalidRequest(f"Search parameter {name!r} chains more than {MAX_CHAIN_DEPTH} levels",
                             code="too-costly", expression=name)
    return Scope(scope.visibility, scope.local_bases, scope.depth + 1)


def _chain(resource_type: str, parameter: SearchParameter, criterion: Criterion, entity, scope: Scope):
    """`subject:Patient.identifier=x`: a reference whose live target matches the chained criterion."""
    if parameter.type != "reference":
        raise InvalidRequest(f"Only reference parameters can be chained; {parameter.code!r} is a {parameter.type}",
                             expression=criterion.raw_name)
    inner = criterion_from(criterion.chain or "", _join(criterion.values))
    if inner is None or not criterion.chain:
        raise InvalidRequest(f"Chained parameter {criterion.raw_name!r} names no parameter",
                             expression=criterion.raw_name)
    if criterion.modifier is not None:
        if not is_supported(criterion.modifier):
            raise _unsupported(criterion.modifier, parameter)
        targets = [criterion.modifier]
    else:
        targets = [t for t in parameter.targets if is_supported(t)]
    usable = [t for t in targets if _knows(t, inner)]
    if not usable:
        raise UnknownParameter(criterion.raw_name, f"No target type of {parameter.code!r} has a search parameter "
                                                   f"{inner.name!r}")
    deeper = _deeper(scope, criterion.raw_name)
    target = alias(Resource)
    link = alias(SearchReference)
    per_type = [and_(target.res_type == t, condition(t, inner, entity=target, scope=deeper)) for t in usable]
    return exists().where(
        link.resource_pk == entity.pk, link.param == parameter.code, link.target_type.in_(usable),
        target.res_type == link.target_type, target.res_id == link.target_id, target.deleted.is_(False),
        or_(*per_type), *_visible(scope, target),
    )


def _join(values: tuple[str, ...]) -> str:
    # hand the values on to the inner criterion exactly as split_commas will read them again
    return ",".join(v.replace(",", "\\,") for v in values)


def _knows(resource_type: str, criterion: Criterion) -> bool:
    if criterion.name in ("_id", "_lastUpdated", "_has"):
        return True
    parameter = load_registry().get(resource_type, criterion.name)
    return parameter is not None and is_searchable(parameter)


def _has(resource_type: str, criterion: Criterion, entity, scope: Scope):
    """`_has:Observation:patient:code=x`: some live Observation whose `patient` points here matches code=x."""
    parts = (criterion.modifier or "").split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise InvalidRequest(f"_has needs the form _has:Type:reference:parameter, got {criterion.raw_name!r}",
                             expression=criterion.raw_name)
    source_type, reference_name, inner_name = parts
    if not is_supported(source_type):
        raise InvalidRequest(f"_has names an unsupported resource type {source_type!r}", code="not-supported",
                             expression=criterion.raw_name)
    reference = parameter_for(source_type, reference_name)
    if reference.type != "reference":
        raise InvalidRequest(f"{source_type}.{reference_name} is not a reference parameter",
                             expression=criterion.raw_name)
    if resource_type is not None and reference.targets and resource_type not in reference.targets:
        raise InvalidRequest(f"{source_type}.{reference_name} never points to {resource_type}",
                             expression=criterion.raw_name)
    inner = criterion_from(inner_name, _join(criterion.values))
    if inner is None:
        raise InvalidRequest(f"_has must end in a search parameter, got {criterion.raw_name!r}",
                             expression=criterion.raw_name)
    deeper = _deeper(scope, criterion.raw_name)
    source = alias(Resource)
    link = alias(SearchReference)
    return exists().where(
        link.res_type == source_type, link.param == reference_name, link.target_id == entity.res_id,
        link.target_type == entity.res_type, source.pk == link.resource_pk, source.deleted.is_(False),
        condition(source_type, inner, entity=source, scope=deeper), *_visible(scope, source),
    )


# --- value conditions, one builder per parameter type --------------------------------------------


class PrefixMatch(sql_expression.ColumnElement):
    """`column starts with prefix`, written so each database can use a B-tree index.

    PostgreSQL uses LIKE (its index on this column uses text_pattern_ops, so any collation works); SQLite's LIKE
    is case-insensitive and cannot use a plain index, so there it is a half-open range on the binary collation.
    """

    type = Boolean()

    inherit_cache = False  # holds plain Python values: statements using it are compiled afresh

    def __init__(self, column, prefix: str):
        self.column = column
        self.prefix = prefix


@compiles(PrefixMatch)
def _prefix_default(element: PrefixMatch, compiler, **kw):
    return compiler.process(element.column.startswith(element.prefix, autoescape=True), **kw)


@compiles(PrefixMatch, "sqlite")
def _prefix_sqlite(element: PrefixMatch, compiler, **kw):
    upper = element.prefix + "\U0010ffff"
    return compiler.process(and_(element.column >= element.prefix, element.column < upper), **kw)


def _token(row, modifier: str | None, value: str, parameter: SearchParameter, scope: Scope):
    if modifier == "text":
        # the display or text starts with the value, or has a word that does (case-insensitive)
        text = _like_escape(unescape(value))
        return or_(row.text.ilike(f"{text}%", escape="\\"), row.text.ilike(f"% {text}%", escape="\\"))
    pair = split_pipe(value)
    if pair is None:
        return row.code == unescape(value)
    system, code = pair
    if not system:
        return and_(row.code == code, row.system.is_(None))
    if not code:
        return row.system == system
    return and_(row.system == system, row.code == code)


def _token_any(row, values: list[str]):
    """Match any of several token values, with the codes of one system in one IN list.

    `identifier=s|a,s|b,...` as an OR of (system, code) pairs leaves the planner only the system as an index
    condition, and with misleading statistics it filtered every token of the system for every candidate resource
    (a 200-value lookup took 69 s at 3,000 rows). An IN list keeps the code an index condition (ANY on the btree).
    """
    codes_by_system: dict[str | None, list[str]] = {}
    alone: list = []
    for value in values:
        pair = split_pipe(value)
        if pair is None:
            codes_by_system.setdefault(None, []).append(unescape(value))
            continue
        system, code = pair
        if not code:
            alone.append(row.system == system)
        else:
            codes_by_system.setdefault(system or "", []).append(code)
    conditions = []
    for system, codes in codes_by_system.items():
        code_matches = row.code == codes[0] if len(codes) == 1 else row.code.in_(codes)
        if system is None:
            conditions.append(code_matches)
        elif system == "":
            conditions.append(and_(code_matches, row.system.is_(None)))
        else:
            conditions.append(and_(row.system == system, code_matches))
    return or_(*conditions, *alone)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string(row, modifier: str | None, value: str, parameter: SearchParameter, scope: Scope):
    from careplan.search.extract import normalize  # the same folding indexing applied

    text = unescape(value)
    if modifier == "exact":
        return row.value == text
    if modifier == "contains":
        return row.normalized.contains(normalize(text), autoescape=True)
    return PrefixMatch(row.normalized, normalize(text))


def _reference(row, modifier: str | None, value: str, parameter: SearchParameter, scope: Scope):
    text = unescape(value)
    if "://" in text or text.startswith("urn:"):
        # canonical references match with or without their |version
        by_url = or_(row.url == text, row.url.startswith(text + "|", autoescape=True))
        match = _REFERENCE_VALUE.match(text)
        if match and match["base"] and match["base"].rstrip("/") in scope.local_bases:
            return or_(by_url, and_(row.target_type == match["type"], row.target_id == match["id"]))
        return by_url
    match = _REFERENCE_VALUE.match(text)
    if match:
        if modifier is not None and modifier != match["type"]:
            return false()
        return and_(row.target_type == match["type"], row.target_id == match["id"])
    if "/" in text:
        raise InvalidRequest(f"{text!r} is not a reference (Type/id, id or an absolute URL)", code="value",
                             expression=parameter.code)
    if modifier is not None:
        return and_(row.target_type == modifier, row.target_id == text)
    return row.target_id == text


def _uri(row, modifier: str | None, value: str, parameter: SearchParameter, scope: Scope):
    text = unescape(value)
    if modifier == "below":
        return row.uri.startswith(text, autoescape=True)
    if modifier == "above":
        # the stored uri is a prefix of the value: list the value's prefixes at path boundaries
        prefixes = [text[:i] for i in range(len(text), 0, -1) if i == len(text) or text[i] == "/"]
        return row.uri.in_(prefixes)
    return row.uri == text


def _date(row, modifier: str | None, value: str, parameter: SearchParameter, scope: Scope):
    return date_condition(row.low, row.high, value)


def split_prefix(value: str) -> tuple[str, str]:
    """Split a comparison prefix off a date, number or quantity value ('ge2024' -> ('ge', '2024'))."""
    if value[:2] in PREFIXES:
        return value[:2], value[2:]
    if value[:2].isalpha():
        raise InvalidRequest(f"Unknown comparison prefix {value[:2]!r} in {value!r}", code="value")
    return "eq", value


def date_condition(low_column, high_column, value: str, *, now: datetime | None = None):
    """Return the condition for one date value with its prefix, comparing the ranges both sides imply."""
    prefix, text = split_prefix(value)
    try:
        low, high = parse_range(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="value") from None
    contained = and_(low_column >= low, high_column <= high)
    if prefix == "ap":
        # "approximately": widen by 10% of the distance from now (at least a day), as search.html suggests
        now = now or datetime.now(timezone.utc)
        slack = max(abs(now - low) / 10, timedelta(days=1))
        low, high = _shift(low, -slack), _shift(high, slack)
        return and_(low_column <= high, high_column >= low)
    return {
        "eq": contained,
        "ne": not_(contained),
        "gt": high_column > high,
        "lt": low_column < low,
        "ge": or_(high_column > high, contained),
        "le": or_(low_column < low, contained),
        "sa": low_column > high,
        "eb": high_column < low,
    }[prefix]


def _shift(moment: datetime, delta: timedelta) -> datetime:
    try:
        return moment + delta
    except OverflowError:
        return datetime.min.replace(tzinfo=timezone.utc) if delta < timedelta(0) else MAX_UTC


def _number(row, modifier: str | None, value: str, parameter: SearchParameter, scope: Scope):
    prefix, text = split_prefix(value)
    number_text, unit = text, None
    if (pair := split_pipe(text)) is not None:
        number_text, unit = pair
    try:
        number = Decimal(number_text)
    except InvalidOperation:
        raise InvalidRequest(f"{text!r} is not a number", code="value", expression=parameter.code) from None
    if not number.is_finite():
        raise InvalidRequest(f"{text!r} is not a finite number", code="value", expression=parameter.code)
    # eq means "within the precision the value was written with": 1.5 matches 1.45 up to 1.55.
    half = Decimal(1).scaleb(number.as_tuple().exponent) / 2
    column = row.value
    spread = abs(number) * Decimal("0.1")
    conditions = [{
        "eq": and_(column >= number - half, column < number + half),
        "ne": or_(column < number - half, column >= number + half),
        "gt": column > number, "lt": column < number, "ge": column >= number, "le": column <= number,
        "sa": column > number, "eb": column < number,
        "ap": and_(column >= number - spread, column <= number + spread),
    }[prefix]]
    if parameter.type == "quantity" and unit:
        system, code = split_pipe(unit) or ("", unit)
        if code:
            conditions.append(or_(row.code == code, row.unit == code))
        if system:
            conditions.append(row.system == system)
    elif unit is not None and parameter.type == "number":
        raise InvalidRequest(f"{value!r}: a number parameter takes no unit", code="value", expression=parameter.code)
    return and_(*conditions)


_TABLES = {
    "token": SearchToken,
    "string": SearchString,
    "reference": SearchReference,
    "uri": SearchUri,
    "date": SearchDate,
    "number": SearchNumber,
    "quantity": SearchQuantity,
}
_BUILDERS = {
    "token": _token,
    "string": _string,
    "reference": _reference,
    "uri": _uri,
    "date": _date,
    "number": _number,
    "quantity": _number,
}

