"""Check the required terminology bindings that fhir.resources does not enforce (status, intent...)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_FHIR_DIR = Path(__file__).resolve().parents[2] / "fhir"
BINDINGS_FILE = Path("definitions") / "required-bindings.json"
MAX_LISTED = 20  # allowed codes quoted in a message; resource-types has 148


@dataclass(frozen=True)
class BindingIssue:
    """A value outside its element's required value set, located by a FHIRPath expression."""

    expression: str
    message: str


@dataclass(frozen=True)
class Binding:
    """The required value set of one element."""

    value_set: str  # without its |version
    types: tuple[str, ...]
    codes: frozenset[str]
    systems: frozenset[str]
    allowed: str  # the codes as quoted in messages


@dataclass
class _Node:
    """A step of the element tree that leads to bound elements."""

    children: dict[str, _Node] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)


def check_required_bindings(resource: dict, fhir_dir: Path | None = None) -> list[BindingIssue]:
    """Return an issue for every code in resource, contained resources included, outside its required value set."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return []
    return list(_check(resource, resource_type, load_bindings(fhir_dir)))


def _check(resource: dict, location: str, trees: dict[str, _Node]) -> Iterator[BindingIssue]:
    tree = trees.get(resource.get("resourceType"))  # type: ignore[arg-type]
    if tree is not None:
        yield from _walk(tree, resource, location)
    contained = resource.get("contained")
    if isinstance(contained, list):
        for i, inner in enumerate(contained):
            if isinstance(inner, dict):
                yield from _check(inner, f"{location}.contained[{i}]", trees)


def _walk(node: _Node, data: dict, location: str) -> Iterator[BindingIssue]:
    for name, child in node.children.items():
        for key, step in _present(data, name):
            value = data[key]
            if isinstance(value, list):
                items = [(item, f"{location}.{step}[{i}]") for i, item in enumerate(value)]
            else:
                items = [(value, f"{location}.{step}")]
            for item, item_location in items:
                for binding in child.bindings:
                    yield from _check_value(binding, item, item_location)
                if child.children and isinstance(item, dict):
                    yield from _walk(child, item, item_location)


def _present(data: dict, name: str) -> Iterator[tuple[str, str]]:
    """Yield (JSON key, FHIRPath step) for element name in data; value[x] matches valueCode and the like."""
    if not name.endswith("[x]"):
        if name in data:
            yield name, name
        return
    prefix = name[:-3]
    for key in data:
        if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
            type_name = key[len(prefix):]
            primitive = type_name[0].lower() + type_name[1:]  # valueDateTime holds a dateTime
            yield key, f"{prefix}.ofType({primitive if primitive in _PRIMITIVE_TYPES else type_name})"


def _check_value(binding: Binding, value: Any, location: str) -> Iterator[BindingIssue]:
    if isinstance(value, str):
        if value not in binding.codes and _accepts_code(binding):
            yield BindingIssue(location, _message(binding, f"Value '{value}'"))
    elif isinstance(value, dict):
        if "coding" in value and isinstance(value["coding"], list):
            for i, coding in enumerate(value["coding"]):
                if isinstance(coding, dict):
                    yield from _check_coding(binding, coding, f"{location}.coding[{i}]")
        elif "code" in value or "system" in value:
            yield from _check_coding(binding, value, location)


def _check_coding(binding: Binding, coding: dict, location: str) -> Iterator[BindingIssue]:
    # a coding from another system may be a translation; only the value set's systems are judged
    system, code = coding.get("system"), coding.get("code")
    if system in binding.systems and isinstance(code, str) and code not in binding.codes:
        yield BindingIssue(f"{location}.code", _message(binding, f"Code '{code}' of system {system}"))


def _accepts_code(binding: Binding) -> bool:
    return not binding.types or bool(set(binding.types) & _STRING_TYPES)


def _message(binding: Binding, what: str) -> str:
    return f"{what} is not in the required value set {binding.value_set} (allowed: {binding.allowed})"


_STRING_TYPES = {"code", "string", "uri"}
_PRIMITIVE_TYPES = {
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid",
}


@lru_cache(maxsize=None)
def load_bindings(fhir_dir: Path | None = None) -> dict[str, _Node]:
    """Load required-bindings.json into one element tree per resource type, once per directory."""
    path = (fhir_dir or DEFAULT_FHIR_DIR) / BINDINGS_FILE
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    recursive: dict[str, str] = data.get("recursive", {})
    shared: dict[tuple[str, tuple[str, ...]], Binding] = {}
    trees: dict[str, _Node] = {}
    for resource_type, entries in data.items():
        if resource_type in ("recursive", "skipped"):
            continue
        tree = trees[resource_type] = _Node()
        for entry in entries:
            key = (entry["valueSet"], tuple(entry["types"]))
            if key not in shared:
                shared[key] = _binding(entry)
            _node_at(tree, entry["path"]).bindings.append(shared[key])
    for alias, target in recursive.items():
        # Questionnaire.item.item repeats Questionnaire.item: link the nodes so checks recurse with the data
        resource_type = alias.split(".", 1)[0]
        tree = trees.get(resource_type)
        if tree is None or _find(tree, target) is None:
            continue
        parent_path, _, name = alias.rpartition(".")
        _node_at(tree, parent_path).children[name] = _find(tree, target)  # type: ignore[assignment]
    return trees


def _binding(entry: dict) -> Binding:
    codes = entry["codes"]
    listed = ", ".join(codes[:MAX_LISTED])
    if len(codes) > MAX_LISTED:
        listed += f", ... ({len(codes) - MAX_LISTED} more)"
    return Binding(
        value_set=entry["valueSet"].split("|", 1)[0],
        types=tuple(entry["types"]),
        codes=frozenset(codes),
        systems=frozenset(entry["systems"]),
        allowed=listed,
    )


def _node_at(tree: _Node, path: str) -> _Node:
    """Return the node for a dotted element path (its first step is the resource type), creating it."""
    node = tree
    for step in path.split(".")[1:]:
        node = node.children.setdefault(step, _Node())
    return node


def _find(tree: _Node, path: str) -> _Node | None:
    node: _Node | None = tree
    for step in path.split(".")[1:]:
        node = node.children.get(step) if node else None
    return node
