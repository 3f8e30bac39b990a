"""The official R4 search parameters of the supported resource types, from fhir/definitions/."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from careplan.resources import SUPPORTED_TYPES

DEFAULT_FHIR_DIR = Path(__file__).resolve().parents[2] / "fhir"
SEARCH_PARAMETERS_FILE = Path("definitions") / "search-parameters.json"
RESOURCE_LEVEL = ("Resource", "DomainResource")

# The official R4 SearchParameters carry no `modifier` list; these are the modifiers the
# specification (search.html) defines for each parameter type.
DEFAULT_MODIFIERS: dict[str, tuple[str, ...]] = {
    "string": ("missing", "exact", "contains"),
    "token": ("missing", "text", "not", "above", "below", "in", "not-in", "of-type"),
    "reference": ("missing", "type", "identifier", "above", "below"),
    "uri": ("missing", "above", "below"),
    "date": ("missing",),
    "number": ("missing",),
    "quantity": ("missing",),
    "composite": ("missing",),
    "special": (),
}


@dataclass(frozen=True)
class SearchParameter:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str
    base: str
    expression: str | None  # FHIRPath restricted to this base type; None for _text, _content, _query
    targets: tuple[str, ...]
    modifiers: tuple[str, ...]
    url: str


class SearchRegistry:
    """Look up the search parameters of each resource type, Resource-level ones included."""

    def __init__(self, parameters: Iterable[SearchParameter]) -> None:
        self._by_type: dict[str, dict[str, SearchParameter]] = {}
        for parameter in parameters:
            self._by_type.setdefault(parameter.base, {})[parameter.code] = parameter

    def for_type(self, resource_type: str) -> dict[str, SearchParameter]:
        """Return the parameters of resource_type by code (empty for an unknown type)."""
        return dict(self._by_type.get(resource_type, {}))

    def get(self, resource_type: str, code: str) -> SearchParameter | None:
        """Return one parameter of resource_type, or None if it has no such parameter."""
        return self._by_type.get(resource_type, {}).get(code)

    def resource_types(self) -> tuple[str, ...]:
        """Return the resource types that have parameters."""
        return tuple(self._by_type)


@lru_cache(maxsize=None)
def load_registry(fhir_dir: Path | None = None) -> SearchRegistry:
    """Load the registry from fhir_dir (default: the repository's fhir/), once per directory."""
    path = (fhir_dir or DEFAULT_FHIR_DIR) / SEARCH_PARAMETERS_FILE
    with path.open(encoding="utf-8") as f:
        bundle = json.load(f)
    return SearchRegistry(_parameters([e["resource"] for e in bundle.get("entry", [])], SUPPORTED_TYPES))


def _parameters(definitions: list[dict], supported: Iterable[str]) -> list[SearchParameter]:
    supported = tuple(supported)
    specific: list[SearchParameter] = []
    general: list[SearchParameter] = []
    for sp in definitions:
        for base in sp["base"]:
            if base in RESOURCE_LEVEL:
                general.extend(_one(sp, base, resource_type) for resource_type in supported)
            elif base in supported:
                specific.append(_one(sp, base, base))
    # a type's own definition wins should it reuse a Resource-level code
    return general + specific


def _one(sp: dict, root: str, resource_type: str) -> SearchParameter:
    expression = sp.get("expression")
    if expression is not None:
        expression = " | ".join(p for p in split_union(expression) if expression_root(p) == root) or None
    return SearchParameter(
        code=sp["code"],
        type=sp["type"],
        base=resource_type,
        expression=expression,
        targets=tuple(sp.get("target", ())),
        modifiers=tuple(sp.get("modifier") or DEFAULT_MODIFIERS.get(sp["type"], ())),
        url=sp["url"],
    )


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level '|' operators."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(expression):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def expression_root(part: str) -> str:
    """Return the type a union part starts from: '(Observation.value as Quantity)' -> 'Observation'."""
    match = re.match(r"\(*\s*([A-Za-z]+)", part)
    return match.group(1) if match else ""
