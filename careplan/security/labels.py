"""Security labels: read a resource's confidentiality and sensitivity, and label sensitive resources on write.

Labels follow the HL7 Healthcare Privacy and Security Classification System (DS4P): one confidentiality code from
v3-Confidentiality (U < L < M < N < R < V) and sensitivity codes from v3-ActCode (ETH, SUD, PSY, BH, ...). The
rules that add them live in fhir/security/labeling-rules.json so a programme can curate them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from careplan.config import PROJECT_ROOT

CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SENSITIVITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY_ORDER = ("U", "L", "M", "N", "R", "V")
# Sensitivity codes whose disclosure must carry the 42 CFR Part 2 redisclosure notice.
SUBSTANCE_USE = frozenset({"ETH", "SUD"})
RULES_FILE = Path("security") / "labeling-rules.json"


@dataclass(frozen=True)
class LabelRule:
    """Codes that make a resource sensitive, and the labels they bring."""

    id: str
    systems: frozenset[str]
    codes: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    confidentiality: str
    sensitivity: tuple[str, ...]

    def matches(self, system: str | None, code: str | None) -> bool:
        if system not in self.systems or not code:
            return False
        code = code.strip().upper()
        return code in self.codes or any(low <= code <= high for low, high in self.ranges)


@dataclass(frozen=True)
class Labels:
    """The security labels of a resource: its confidentiality (N when unlabelled) and sensitivity codes."""

    confidentiality: str = "N"
    sensitivity: frozenset[str] = frozenset()

    @property
    def sensitive(self) -> bool:
        """Tell whether these labels need more than normal (N) clearance or carry a sensitivity."""
        return rank(self.confidentiality) > rank("N") or bool(self.sensitivity)

    @property
    def substance_use(self) -> bool:
        return bool(self.sensitivity & SUBSTANCE_USE)

    def codes(self) -> frozenset[str]:
        """Return every label code, confidentiality included, for matching Consent securityLabel provisions."""
        return self.sensitivity | {self.confidentiality}


def rank(confidentiality: str) -> int:
    """Order confidentiality codes from least (U) to most (V) protective; unknown codes count as V."""
    try:
        return CONFIDENTIALITY_ORDER.index(confidentiality)
    except ValueError:
        return len(CONFIDENTIALITY_ORDER) - 1


@lru_cache(maxsize=None)
def load_rules(fhir_dir: Path | None = None) -> tuple[LabelRule, ...]:
    """Load the labelling rules from fhir/security/labeling-rules.json."""
    document = json.loads(((fhir_dir or PROJECT_ROOT / "fhir") / RULES_FILE).read_text(encoding="utf-8"))
    return tuple(
        LabelRule(
            id=rule["id"],
            systems=frozenset(rule["systems"]),
            codes=frozenset(c.upper() for c in rule.get("codes", ())),
            ranges=tuple((low.upper(), high.upper()) for low, high in rule.get("codeRanges", ())),
            confidentiality=rule["confidentiality"],
            sensitivity=tuple(rule["sensitivity"]),
        )
        for rule in document["rules"]
    )


def labels_of(resource: dict | None) -> Labels:
    """Read the labels a stored resource carries in meta.security."""
    if not resource:
        return Labels()
    confidentiality, sensitivity = "N", set()
    for coding in (resource.get("meta") or {}).get("security", ()):
        if coding.get("system") == CONFIDENTIALITY_SYSTEM and coding.get("code"):
            if rank(coding["code"]) > rank(confidentiality):
                confidentiality = coding["code"]
        elif coding.get("system") == SENSITIVITY_SYSTEM and coding.get("code"):
            sensitivity.add(coding["code"])
    return Labels(confidentiality, frozenset(sensitivity))


def derive(resource: dict | None, rules: tuple[LabelRule, ...] | None = None) -> Labels:
    """Return the labels the rules give a resource from every coding it holds."""
    if not resource:
        return Labels()
    rules = load_rules() if rules is None else rules
    confidentiality, sensitivity = "N", set()
    for system, code in _codings(resource):
        for rule in rules:
            if rule.matches(system, code):
                if rank(rule.confidentiality) > rank(confidentiality):
                    confidentiality = rule.confidentiality
                sensitivity.update(rule.sensitivity)
    return Labels(confidentiality, frozenset(sensitivity))


def apply(resource: dict, *, previous: dict | None = None, rules: tuple[LabelRule, ...] | None = None) -> dict:
    """Return resource with the labels the rules require added to meta.security; never lower a server label.

    Labels derived from the previous version stay, so re-coding a diagnosis cannot quietly declassify the record;
    labels a client set are the client's to change. A resource that needs no label is returned unchanged, so ordinary data round-trips byte for byte.
    """
    wanted = _union(derive(resource, rules), derive(previous, rules))
    if not wanted.sensitive:
        return resource
    present = labels_of(resource)
    confidentiality = max(present.confidentiality, wanted.confidentiality, key=rank)
    missing = sorted(wanted.sensitivity - present.sensitivity)
    if confidentiality == present.confidentiality and not missing and _has_confidentiality(resource):
        return resource
    security = [c for c in (resource.get("meta") or {}).get("security", ())
                if c.get("system") != CONFIDENTIALITY_SYSTEM]
    security.insert(0, {"system": CONFIDENTIALITY_SYSTEM, "code": confidentiality})
    security.extend({"system": SENSITIVITY_SYSTEM, "code": code} for code in missing)
    return {**resource, "meta": {**(resource.get("meta") or {}), "security": security}}


def _has_confidentiality(resource: dict) -> bool:
    return any(c.get("system") == CONFIDENTIALITY_SYSTEM for c in (resource.get("meta") or {}).get("security", ()))


def _union(*labels: Labels) -> Labels:
    return Labels(max((label.confidentiality for label in labels), key=rank),
                  frozenset().union(*(label.sensitivity for label in labels)))


def _codings(value):
    """Yield (system, code) of every Coding in a resource, skipping meta (labels are not clinical codes)."""
    if isinstance(value, dict):
        if "code" in value and "system" in value and isinstance(value.get("code"), str):
            yield value.get("system"), value["code"]
        for key, item in value.items():
            if key != "meta":
                yield from _codings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _codings(item)
