"""Every careplan extension the code writes or reads is defined by a StructureDefinition in fhir/catalogue."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fhir.resources.R4B.structuredefinition import StructureDefinition

ROOT = Path(__file__).resolve().parents[2]
BASE = "https://careplan.example.org/fhir/StructureDefinition/"
# Written out in full, or built from the canonical base constant (f"{BASE}/StructureDefinition/...").
_USED = re.compile(r"(?:https://careplan\.example\.org/fhir|BASE\})/StructureDefinition/([a-z0-9-]+)")


def _definitions() -> dict[str, dict]:
    found = {}
    for path in sorted((ROOT / "fhir").rglob("structuredefinition-*.json")):
        content = json.loads(path.read_text(encoding="utf-8"))
        found[content["url"]] = content
    return found


def _used_in_code() -> set[str]:
    used = set()
    for folder in ("careplan", "api", "scheduler"):
        for path in (ROOT / folder).rglob("*.py"):
            used.update(BASE + name for name in _USED.findall(path.read_text(encoding="utf-8")))
    from careplan.measures.strata import EQUITY_EXTENSIONS

    return used | set(EQUITY_EXTENSIONS.values())


def test_every_extension_the_code_uses_is_defined():
    missing = sorted(_used_in_code() - set(_definitions()))
    assert not missing, f"add a StructureDefinition to fhir/catalogue for: {missing}"


def test_the_definitions_are_valid_r4_and_fix_their_own_url():
    for url, content in _definitions().items():
        StructureDefinition.model_validate(content)
        assert content["url"] == BASE + content["id"]
        if content["type"] == "Extension":
            fixed = [e for e in content["differential"]["element"] if e["id"] == "Extension.url"]
            assert fixed and fixed[0]["fixedUri"] == url
