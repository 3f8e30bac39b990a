"""Extract the search index values of a resource by evaluating its search parameters' FHIRPath."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import FP_Type, ResourceNode
from fhirpathpy.models import models as fhirpath_models

from careplan.search.dates import MAX_UTC, parse_range
from careplan.search.parameters import SearchParameter, SearchRegistry, load_registry, split_union
from careplan.search.values import (
    DateIndex,
    IndexValue,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TokenIndex,
    UriIndex,
)

log = logging.getLogger(__name__)

MIN_UTC = datetime.min.replace(tzinfo=timezone.utc)
MAX_STRING = 255
# _id and _lastUpdated are columns of the resource table; composite and special need their own code.
NOT_INDEXED_CODES = frozenset({"_id", "_lastUpdated"})
NOT_INDEXED_TYPES = frozenset({"composite", "special"})

_R4 = fhirpath_models["r4"]
_RESOLVE_IS = re.compile(r"^(?P<path>.+)\.where\(resolve\(\) is (?P<type>[A-Z][A-Za-z]+)\)$")
_REFERENCE = re.compile(
    r"^(?:(?P<base>[A-Za-z][A-Za-z0-9+.-]*://.+?)/)?"
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_STEP = re.compile(r"\.([a-z][A-Za-z]*)(?:\.where\(([a-z][A-Za-z]*)='([^']*)'\))?")
_SIMPLE_PATH = re.compile(
    r"^(?P<root>[A-Z][A-Za-z]*)(?P<steps>(?:\.[a-z][A-Za-z]*(?:\.where\([a-z][A-Za-z]*='[^']*'\))?)+)"
    r"(?:\.(?:as|ofType)\((?P<cast>[A-Za-z]+)\))?$"
)
_PAREN_CAST = re.compile(r"^\((?P<path>[^()]+) as (?P<type>[A-Za-z]+)\)$")
_PATH_TYPE: dict[str, str] = _R4["path2Type"]
_CHOICES: dict[str, list[str]] = _R4["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
_HUMAN_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_DATE_TYPES = frozenset({"date", "dateTime", "instant"})

Typed = tuple[Any, str | None]  # an element's value and its FHIR type name
Converter = Callable[[str, Any, str | None], Iterator[IndexValue]]


@dataclass(frozen=True)
class _Part:
    """One compiled union member of a parameter's expression."""

    evaluate: Callable[[dict], list[Typed]]
    expression: str
    target_type: str | None  # set when the official expression filtered with `resolve() is T`


@dataclass(frozen=True)
class _Plan:
    """What extraction does for one parameter of one resource type."""

    code: str
    convert: Converter
    parts: tuple[_Part, ...]


def extract(resource: dict, registry: SearchRegistry | None = None) -> list[IndexValue]:
    """Return the deduplicated index values of resource for every search parameter of its type."""
    values: list[IndexValue] = []
    for plan in _plans(registry or load_registry(), resource["resourceType"]):
        for part in plan.parts:
            try:
                nodes = part.evaluate(resource)
            except Exception:  # fhirpathpy raises bare Exceptions; one odd element must not block a write
                log.warning("cannot evaluate %r for %s", part.expression, plan.code, exc_info=True)
                continue
            for data, fhir_type in nodes:
                if data is None:
                    continue
                found = plan.convert(plan.code, data, fhir_type)
                if part.target_type is not None:
                    found = (v for v in found if getattr(v, "target_type", None) == part.target_type)
                values.extend(found)
    return list(dict.fromkeys(values))


def normalize(value: str) -> str:
    """Fold value for string matching: compatibility-decompose, drop accents, casefold."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# --- plans ---------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _plans(registry: SearchRegistry, resource_type: str) -> tuple[_Plan, ...]:
    """Compile, once per type, the expressions of every parameter extraction indexes."""
    plans = []
    for parameter in registry.for_type(resource_type).values():
        convert = _CONVERTERS.get(parameter.type)
        if (
            convert is None
            or parameter.code in NOT_INDEXED_CODES
            or parameter.type in NOT_INDEXED_TYPES
            or not parameter.expression
        ):
            continue
        parts = tuple(_compile_parts(parameter, resource_type))
        if parts:
            plans.append(_Plan(parameter.code, convert, parts))
    return tuple(plans)


def _compile_parts(parameter: SearchParameter, resource_type: str) -> Iterator[_Part]:
    """Compile each union member of parameter's expression that can be evaluated."""
    for text in split_union(parameter.expression or ""):
        # fhirpathpy only starts a path at the resource's own type name
        expression = re.sub(r"^(\(*)(?:Domain)?Resource\.", rf"\g<1>{resource_type}.", text)
        target_type = None
        if match := _RESOLVE_IS.match(expression):
            # fhirpathpy has no resolve(): keep the references and filter on their target type instead
            expression, target_type = match["path"], match["type"]
        if "resolve()" in expression:
            log.warning("skipping %r of %s.%s: resolve() is not supported", text, resource_type, parameter.code)
            continue
        yield _Part(_compile_path(expression, resource_type), text, target_type)


def _compile_path(expression: str, resource_type: str) -> Callable[[dict], list[Typed]]:
    """Compile a FHIRPath expression into a function returning (value, FHIR type) pairs."""
    simple = _compile_simple(expression, resource_type)
    if simple is not None:
        return simple
    evaluate = fhirpathpy.compile(expression, model=_R4, options={"returnRawData": True})
    return lambda resource: [_unwrap(node) for node in evaluate(resource)]


def _compile_simple(expression: str, resource_type: str) -> Callable[[dict], list[Typed]] | None:
    """Compile a plain member path without fhirpathpy, or return None when it is not one.

    A plain path is members, each optionally filtered with `.where(element='literal')`, optionally
    ending in a type cast: most official expressions are. fhirpathpy costs about 20 µs per expression
    even for `Patient.gender`; walking the dicts costs about 1 µs. Types come from fhirpathpy's own R4
    model, found the way its member invocation finds them, and tests check both give the same results.
    """
    if paren := _PAREN_CAST.match(expression):
        expression = f"{paren['path']}.as({paren['type']})"
    match = _SIMPLE_PATH.match(expression)
    if match is None or match["root"] != resource_type:
        return None
    steps = _STEP.findall(match["steps"])
    cast = match["cast"]
    walked: list[tuple[str, tuple[str, str] | None]] = []
    parent = resource_type
    for name, filter_key, filter_value in steps[:-1]:
        child = _ELSEWHERE.get(f"{parent}.{name}", f"{parent}.{name}")
        if child in _CHOICES:
            return None  # a choice before the last step: leave it to fhirpathpy
        walked.append((name, (filter_key, filter_value) if filter_key else None))
        parent = _PATH_TYPE.get(child, child)
    last, filter_key, filter_value = steps[-1]
    child = _ELSEWHERE.get(f"{parent}.{last}", f"{parent}.{last}")
    if child in _CHOICES:
        options = tuple((last + c, _PATH_TYPE.get(child + c, child + c)) for c in _CHOICES[child])
    else:
        options = ((last, _PATH_TYPE.get(child, child)),)
    if cast is not None:
        options = tuple(o for o in options if _is_a(o[1], cast))
    last_filter = (filter_key, filter_value) if filter_key else None
    return partial(_walk, tuple(walked), options, last_filter)


def _walk(
    steps: tuple[tuple[str, tuple[str, str] | None], ...],
    options: tuple[tuple[str, str], ...],
    last_filter: tuple[str, str] | None,
    resource: dict,
) -> list[Typed]:
    """Follow steps through resource, then collect the first present key of options with its type."""
    current = [resource]
    for key, condition in steps:
        following = []
        for data in current:
            value = data.get(key)
            for item in value if isinstance(value, list) else (value,):
                if isinstance(item, dict) and (condition is None or item.get(condition[0]) == condition[1]):
                    following.append(item)
        if not following:
            return []
        current = following
    found: list[Typed] = []
    for data in current:
        for key, fhir_type in options:
            value = data.get(key)
            if value is None:
                continue
            for item in value if isinstance(value, list) else (value,):
                if item is not None and (
                    last_filter is None or (isinstance(item, dict) and item.get(last_filter[0]) == last_filter[1])
                ):
                    found.append((item, fhir_type))
            break  # a choice element has one of its keys at most
    return found


def _is_a(fhir_type: str, name: str) -> bool:
    """Tell whether fhir_type is name or derives from it (Age is a Quantity)."""
    while fhir_type:
        if fhir_type == name:
            return True
        fhir_type = _R4["type2Parent"].get(fhir_type)
    return False


def _unwrap(node: Any) -> tuple[Any, str | None]:
    """Return (data, FHIR type name or None) of one fhirpathpy result."""
    if isinstance(node, ResourceNode):
        # with the R4 model, path is the element's type ('Coding', 'dateTime'), or 'Type.element' for
        # backbone elements
        return node.data, node.path
    if isinstance(node, FP_Type):
        return str(node), None
    return node, None


# --- converters: one FHIRPath result to index values --------------------------------------------


def _token(code: str, data: Any, fhir_type: str | None) -> Iterator[TokenIndex]:
    if isinstance(data, bool):
        yield TokenIndex(code, None, "true" if data else "false", None)
    elif isinstance(data, str):
        yield TokenIndex(code, None, data, None)
    elif isinstance(data, dict):
        kind = fhir_type if fhir_type in _TOKEN_DICTS else _token_shape(data)
        yield from _TOKEN_DICTS[kind](code, data)


def _token_shape(data: dict) -> str:
    if "coding" in data or set(data) == {"text"}:
        return "CodeableConcept"
    if "code" in data:
        return "Coding"
    return "Identifier"


def _codeable_concept(code: str, data: dict) -> Iterator[TokenIndex]:
    text = _str(data.get("text"))
    texts = set()
    for coding in data.get("coding") or ():
        if isinstance(coding, dict) and (coding.get("code") or coding.get("system")):
            row_text = _str(coding.get("display")) or text
            texts.add(row_text)
            yield TokenIndex(code, _str(coding.get("system")), _str(coding.get("code")), row_text)
    # a text no coding carries still has to be findable with :text
    if text and text not in texts:
        yield TokenIndex(code, None, None, text)


def _coding(code: str, data: dict) -> Iterator[TokenIndex]:
    if data.get("code") or data.get("system"):
        yield TokenIndex(code, _str(data.get("system")), _str(data.get("code")), _str(data.get("display")))


def _identifier(code: str, data: dict) -> Iterator[TokenIndex]:
    if data.get("value") or data.get("system"):
        type_text = (data.get("type") or {}).get("text") if isinstance(data.get("type"), dict) else None
        yield TokenIndex(code, _str(data.get("system")), _str(data.get("value")), _str(type_text))


def _contact_point(code: str, data: dict) -> Iterator[TokenIndex]:
    # system is phone/email/...: `telecom=email|a@b.org` then works as it does on HAPI
    if data.get("value"):
        yield TokenIndex(code, _str(data.get("system")), _str(data.get("value")), None)


_TOKEN_DICTS: dict[str, Callable[[str, dict], Iterator[TokenIndex]]] = {
    "CodeableConcept": _codeable_concept,
    "Coding": _coding,
    "Identifier": _identifier,
    "ContactPoint": _contact_point,
}


def _string(code: str, data: Any, fhir_type: str | None) -> Iterator[StringIndex]:
    if isinstance(data, str):
        yield from _string_value(code, data)
    elif isinstance(data, dict):
        is_name = fhir_type == "HumanName" or (fhir_type is None and ("family" in data or "given" in data))
        for part in _HUMAN_NAME_PARTS if is_name else _ADDRESS_PARTS:
            value = data.get(part)
            for item in value if isinstance(value, list) else (value,):
                if isinstance(item, str):
                    yield from _string_value(code, item)


def _string_value(code: str, value: str) -> Iterator[StringIndex]:
    if value.strip():
        yield StringIndex(code, value[:MAX_STRING], normalize(value)[:MAX_STRING])


def _date(code: str, data: Any, fhir_type: str | None) -> Iterator[DateIndex]:
    if isinstance(data, str):
        if fhir_type is None or fhir_type in _DATE_TYPES:
            if (bounds := _range(data)) is not None:
                yield DateIndex(code, *bounds)
    elif isinstance(data, dict):
        if fhir_type == "Timing" or (fhir_type is None and ("event" in data or "repeat" in data)):
            for event in data.get("event") or ():
                if isinstance(event, str) and (bounds := _range(event)) is not None:
                    yield DateIndex(code, *bounds)
            repeat = data.get("repeat")
            bounds_period = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
            if isinstance(bounds_period, dict):
                yield from _period(code, bounds_period)
        elif fhir_type in (None, "Period"):
            yield from _period(code, data)


def _period(code: str, data: dict) -> Iterator[DateIndex]:
    start, end = data.get("start"), data.get("end")
    if start is None and end is None:
        return
    start_range = (MIN_UTC, MIN_UTC) if start is None else _range(start)
    end_range = (MAX_UTC, MAX_UTC) if end is None else _range(end)
    # a malformed bound would turn into an open end and match far too much
    if start_range is not None and end_range is not None:
        yield DateIndex(code, start_range[0], end_range[1])


def _range(value: Any) -> tuple[datetime, datetime] | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_range(value)
    except ValueError:
        return None


def _reference(code: str, data: Any, fhir_type: str | None) -> Iterator[ReferenceIndex]:
    if isinstance(data, str):
        # canonical and uri elements: no type/id to read, only the url
        yield ReferenceIndex(code, None, None, data)
        return
    if not isinstance(data, dict):
        return
    reference = data.get("reference")
    if not isinstance(reference, str) or not reference or reference.startswith("#"):
        return  # logical (identifier-only) and contained references are not indexed
    if match := _REFERENCE.match(reference):
        yield ReferenceIndex(code, match["type"], match["id"], reference if match["base"] else None)
    else:
        # urn:uuid:, urn:oid: and other absolute forms; Reference.type may still name the target
        yield ReferenceIndex(code, _str(data.get("type")), None, reference)


def _number(code: str, data: Any, fhir_type: str | None) -> Iterator[NumberIndex]:
    if (number := _decimal(data)) is not None:
        yield NumberIndex(code, number)


def _quantity(code: str, data: Any, fhir_type: str | None) -> Iterator[QuantityIndex]:
    # Range and SampledData have no single value and are not indexed
    if not isinstance(data, dict) or (value := _decimal(data.get("value"))) is None:
        return
    if "currency" in data:  # Money
        yield QuantityIndex(code, value, "urn:iso:std:iso:4217", _str(data.get("currency")), None)
    else:
        yield QuantityIndex(code, value, _str(data.get("system")), _str(data.get("code")), _str(data.get("unit")))


def _uri(code: str, data: Any, fhir_type: str | None) -> Iterator[UriIndex]:
    if isinstance(data, str) and data:
        yield UriIndex(code, data)


def _decimal(value: Any) -> Decimal | None:
    # the resource was parsed with use_decimal=True: the Decimal is the one written in the JSON
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_CONVERTERS: dict[str, Converter] = {
    "token": _token,
    "string": _string,
    "date": _date,
    "reference": _reference,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
}
