"""Parse and check the parameters of a FHIR search into a SearchRequest the engine executes.

https://hl7.org/fhir/R4/search.html

Unknown parameters (and those the engine cannot evaluate: composite, special, _contained) are ignored and left out
of the self link, or answered 400 when the client sent `Prefer: handling=strict`. Malformed values of known
parameters, and unsupported modifiers, are always 400.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from careplan.errors import InvalidRequest
from careplan.resources import SUPPORTED_TYPES, WIDE_SEARCH_TYPES, is_supported
from careplan.search import compartment as compartments
from careplan.search.dates import parse_range
from careplan.search.parameters import load_registry
from careplan.search.query import (
    Criterion,
    UnknownParameter,
    condition,
    criterion_from,
    is_resource_level,
    is_searchable,
)

TOTAL_MODES = ("none", "estimate", "accurate")
DEFAULT_TOTAL = "accurate"
SUMMARY_MODES = ("true", "false", "count", "text", "data")
# Result parameters this server reads; other `_x` names are unknown parameters.
KNOWN_RESULT = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
                          "_format", "_pretty", "_cursor"})
PASS_THROUGH = frozenset({"_format", "_pretty"})


@dataclass(frozen=True)
class SortKey:
    """One `_sort` key: a parameter (or _id, _lastUpdated), its type, and the direction."""

    name: str
    type: str
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """One `_include` or `_revinclude`: source type and reference parameter (None for `*`), optional target."""

    source_type: str | None
    parameter: str | None
    target_type: str | None
    iterate: bool


@dataclass(frozen=True)
class Compartment:
    """A search inside one patient's compartment (`Patient/1/CarePlan`), or all of it (`$everything`)."""

    patient_id: str
    everything: bool = False


@dataclass(frozen=True)
class SearchRequest:
    """A checked search: what to match, how to sort, shape and page it, and what the self link shows."""

    types: tuple[str, ...]
    criteria: tuple[Criterion, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    total: str = DEFAULT_TOTAL
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    cursor: str | None = None
    compartment: Compartment | None = None
    since: datetime | None = None
    used: tuple[tuple[str, str], ...] = ()  # the pairs the self link shows, as sent
    ignored: tuple[str, ...] = ()
    all_types: bool = field(default=False)

    @property
    def total_only(self) -> bool:
        """Tell whether the client asked for the count alone (`_summary=count` or `_count=0`)."""
        return self.summary == "count" or self.count == 0

    def digest(self) -> str:
        """Return a fingerprint of what selects and orders the rows, which a paging cursor must match."""
        selecting = [pair for pair in self.used if pair[0] not in _NOT_SELECTING]
        state = [list(self.types), selecting, [[k.name, k.descending] for k in self.sort],
                 self.compartment and [self.compartment.patient_id, self.compartment.everything],
                 self.since and self.since.isoformat()]
        return hashlib.blake2b(json.dumps(state).encode(), digest_size=8).hexdigest()


_NOT_SELECTING = frozenset({"_count", "_include", "_revinclude", "_include:iterate", "_revinclude:iterate",
                            "_include:recurse", "_revinclude:recurse", "_summary", "_elements", "_total",
                            "_format", "_pretty", "_cursor"})


def parse_request(pairs: Iterable[tuple[str, str]], *, types: tuple[str, ...] | None, strict: bool,
                  default_count: int, max_count: int, compartment: Compartment | None = None) -> SearchRequest:
    """Check the query pairs of a search over types (None: a system search, `_type` picks them)."""
    pairs = list(pairs)
    system = types is None
    ignored: list[str] = []
    used: list[tuple[str, str]] = []

    def unknown(name: str, message: str) -> None:
        if strict:
            raise InvalidRequest(f"{message} (Prefer: handling=strict)", code="not-supported", expression=name)
        ignored.append(name)

    type_values = [v for k, v in pairs if k == "_type"]
    if compartment is not None and compartment.everything:
        types = _everything_types(type_values, used)
    elif system:
        types = _system_types(type_values, used)
    elif type_values:
        unknown("_type", "_type is only read by a system-level search")
    all_types = system and not type_values
    if compartment is not None and not compartment.everything:
        outside = [t for t in types if t not in compartments.member_types()]
        if outside:
            raise InvalidRequest(f"{', '.join(outside)} resources are not in a patient compartment",
                                 code="not-supported")

    options: dict = {"count": default_count, "total": DEFAULT_TOTAL}
    criteria: list[Criterion] = []
    includes: list[Include] = []
    revincludes: list[Include] = []
    seen_single: set[str] = set()
    for name, value in pairs:
        base_name = name.partition(":")[0]
        if name == "_type":
            continue
        if compartment is not None and compartment.everything:
            if name == "_since":
                options["since"] = _instant(value, "_since")
                used.append((name, value))
                continue
            if name not in ("_count", "_cursor", "_format", "_pretty", "_total"):
                unknown(name, f"$everything does not take the parameter {name!r}")
                continue
        if base_name in KNOWN_RESULT or name.startswith(("_include", "_revinclude")):
            if base_name in ("_include", "_revinclude"):
                include = _include(name, value, types)
                (includes if base_name == "_include" else revincludes).append(include)
                used.append((name, value))
                continue
            if name != base_name:
                raise InvalidRequest(f"{base_name} takes no modifier, got {name!r}", code="not-supported",
                                     expression=name)
            if name in seen_single:
                raise InvalidRequest(f"{name} may be given once", expression=name)
            seen_single.add(name)
            _result_option(name, value, options, types, default_count, max_count)
            if name != "_cursor":
                used.append((name, value))
            continue
        if value == "":
            continue  # an empty value selects nothing in particular: the parameter is ignored
        criterion = criterion_from(name, value)
        if criterion is None:
            unknown(name, f"Unknown parameter {name!r}")
            continue
        try:
            for resource_type in _criterion_types(criterion, types, all_types):
                condition(resource_type, criterion)
        except UnknownParameter as exc:
            unknown(name, str(exc))
            continue
        criteria.append(criterion)
        used.append((name, value))
    return SearchRequest(
        types=types, criteria=tuple(criteria), sort=options.get("sort", ()), count=options["count"],
        total=options["total"], summary=options.get("summary"), elements=options.get("elements"),
        includes=tuple(includes), revincludes=tuple(revincludes), cursor=options.get("cursor"),
        compartment=compartment, since=options.get("since"), used=tuple(used), ignored=tuple(ignored),
        all_types=all_types,
    )


def _criterion_types(criterion: Criterion, types: tuple[str, ...], all_types: bool) -> tuple[str | None, ...]:
    """Return the types to build criterion for: None alone when it is a Resource-level one of a wide search."""
    if len(types) > 1 and resource_level(criterion):
        return (None,)
    return types


def resource_level(criterion: Criterion) -> bool:
    """Tell whether criterion reads the same on every resource type (_id, _lastUpdated, _tag...)."""
    if criterion.name in ("_id", "_lastUpdated"):
        return True
    parameter = load_registry().get(SUPPORTED_TYPES[0], criterion.name)
    return parameter is not None and is_resource_level(parameter) and criterion.chain is None


def _system_types(values: list[str], used: list) -> tuple[str, ...]:
    if not values:
        return WIDE_SEARCH_TYPES
    types: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not is_supported(name):
                raise InvalidRequest(f"_type names an unsupported resource type {name!r}", code="not-supported",
                                     expression="_type")
            if name not in types:
                types.append(name)
        used.append(("_type", value))
    return tuple(types)


def _everything_types(values: list[str], used: list) -> tuple[str, ...]:
    members = compartments.member_types()
    if not values:
        return tuple(t for t in members if t in WIDE_SEARCH_TYPES)
    chosen = _system_types(values, used)
    outside = [t for t in chosen if t not in members]
    if outside:
        raise InvalidRequest(f"{', '.join(outside)} cannot be in a patient compartment", code="not-supported",
                             expression="_type")
    return chosen


def _instant(value: str, name: str) -> datetime:
    try:
        return parse_range(value)[0]
    except ValueError:
        raise InvalidRequest(f"{name} must be a FHIR instant, got {value!r}", code="value", expression=name) from None


def _result_option(name: str, value: str, options: dict, types: tuple[str, ...], default_count: int,
                   max_count: int) -> None:
    if name == "_count":
        if not value.isdigit():
            raise InvalidRequest(f"_count must be a non-negative integer, got {value!r}", code="value",
                                 expression="_count")
        options["count"] = min(int(value), max_count)
    elif name == "_total":
        if value not in TOTAL_MODES:
            raise InvalidRequest(f"_total must be one of {', '.join(TOTAL_MODES)}, got {value!r}", code="value",
                                 expression="_total")
        options["total"] = value
    elif name == "_summary":
        if value not in SUMMARY_MODES:
            raise InvalidRequest(f"_summary must be one of {', '.join(SUMMARY_MODES)}, got {value!r}",
                                 code="value", expression="_summary")
        options["summary"] = None if value == "false" else value
    elif name == "_elements":
        elements = tuple(e.strip() for e in value.split(",") if e.strip())
        if not all(e.replace("-", "").isalnum() for e in elements):
            raise InvalidRequest(f"_elements lists element names, got {value!r}", code="value",
                                 expression="_elements")
        options["elements"] = elements
    elif name == "_sort":
        options["sort"] = tuple(_sort_key(key.strip(), types) for key in value.split(","))
    elif name == "_cursor":
        options["cursor"] = value


def _sort_key(text: str, types: tuple[str, ...]) -> SortKey:
    descending = text.startswith("-")
    name = text[1:] if descending else text
    if name == "_id":
        return SortKey("_id", "id", descending)
    if name == "_lastUpdated":
        return SortKey("_lastUpdated", "date", descending)
    kinds = set()
    for resource_type in types:
        parameter = load_registry().get(resource_type, name)
        if parameter is None or not is_searchable(parameter):
            raise InvalidRequest(f"Cannot sort {resource_type} by {name!r}: no such search parameter",
                                 code="not-supported", expression="_sort")
        kinds.add(parameter.type)
    if len(kinds) != 1:
        raise InvalidRequest(f"{name!r} is not of one type across {', '.join(types)}", code="not-supported",
                             expression="_sort")
    return SortKey(name, kinds.pop(), descending)


def _include(name: str, value: str, types: tuple[str, ...]) -> Include:
    base_name, _, modifier = name.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise InvalidRequest(f"{base_name} takes :iterate only, got {name!r}", code="not-supported",
                             expression=name)
    iterate = bool(modifier)
    if value == "*":
        return Include(None, None, None, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidRequest(f"{base_name} takes Type:parameter[:targetType] or *, got {value!r}", code="value",
                             expression=name)
    source_type, parameter_name = parts[0], parts[1]
    target_type = parts[2] if len(parts) == 3 else None
    if not is_supported(source_type):
        raise InvalidRequest(f"{base_name} names an unsupported resource type {source_type!r}",
                             code="not-supported", expression=name)
    parameter = load_registry().get(source_type, parameter_name)
    if parameter is None or parameter.type != "reference":
        raise InvalidRequest(f"{source_type} has no reference search parameter {parameter_name!r}",
                             code="not-supported", expression=name)
    if target_type is not None and (not is_supported(target_type) or
                                    (parameter.targets and target_type not in parameter.targets)):
        raise InvalidRequest(f"{source_type}:{parameter_name} never points to {target_type!r}",
                             code="not-supported", expression=name)
    return Include(source_type, parameter_name, target_type, iterate)
