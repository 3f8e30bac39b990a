"""FHIR capabilities interaction: a CapabilityStatement generated from the routed interactions.

https://hl7.org/fhir/R4/http.html#capabilities
https://hl7.org/fhir/R4/capabilitystatement.html
"""

from __future__ import annotations

from functools import lru_cache

from api.fhir.http import base_url, fhir_json
from careplan.resources import SERVER_WRITTEN_TYPES, SUPPORTED_TYPES
from careplan.search.parameters import load_registry
from careplan.search.query import is_searchable

INTERACTIONS: tuple = ()  # filled in by api.fhir.blueprint
SOFTWARE_VERSION = "0.1.0"
CLIENT_WRITES = {"create", "update", "patch", "delete"}
# The codes CapabilityStatement.rest.resource.interaction allows.
TYPE_RESTFUL = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                "search-type")


def metadata():
    """Return the server's CapabilityStatement."""
    from api.auth import public_root
    from api.database import get_settings

    return fhir_json(capability_statement(base_url(), public_root(), cors=bool(get_settings().cors_origins)))


def capability_statement(url: str, root: str, *, cors: bool = False) -> dict:
    """Build the CapabilityStatement for the interactions that are routed, with where to get a token."""
    statement = {**_statement_body(), "implementation": {"description": "careplan FHIR R4 server", "url": url}}
    rest = dict(statement["rest"][0])
    rest["security"] = {
        # SMART App Launch: the OAuth endpoints clients discover here or at .well-known/smart-configuration.
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                       "extension": [{"url": "token", "valueUri": f"{root}/oauth/token"}]}],
        "cors": cors,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}]}],
        "description": "OAuth 2.0 bearer tokens: SMART Backend Services (client credentials) or an access token from "
                       "a configured OpenID Connect issuer. See .well-known/smart-configuration.",
    }
    statement["rest"] = [rest]
    return statement


@lru_cache(maxsize=1)
def _statement_body() -> dict:
    codes = {i.code for i in INTERACTIONS}
    registry = load_registry()
    resources = []
    for resource_type in SUPPORTED_TYPES:
        allowed = [c for c in TYPE_RESTFUL if c in codes]
        if resource_type in SERVER_WRITTEN_TYPES:
            allowed = [c for c in allowed if c not in CLIENT_WRITES]
        entry = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": c} for c in allowed],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": resource_type not in SERVER_WRITTEN_TYPES,
            "conditionalCreate": "create" in allowed,
            "conditionalRead": "not-supported",
            "conditionalUpdate": "conditional-update" in codes and resource_type not in SERVER_WRITTEN_TYPES,
            "conditionalDelete": "single" if "conditional-delete" in codes and resource_type not in
            SERVER_WRITTEN_TYPES else "not-supported",
        }
        if "search-type" in codes:
            # only what the engine evaluates: composite and special parameters (_text, _content...) are left out
            searchable = [p for p in registry.for_type(resource_type).values() if is_searchable(p)]
            entry["searchParam"] = [
                {"name": p.code, "definition": p.url, "type": p.type}
                for p in sorted(searchable, key=lambda p: p.code)
            ]
            entry["searchInclude"] = ["*"] + sorted(f"{resource_type}:{p.code}" for p in searchable
                                                    if p.type == "reference")
            entry["searchRevInclude"] = ["*"]
        if "everything" in codes and resource_type == "Patient":
            entry["operation"] = [{"name": "everything",
                                   "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]
        if "evaluate-measure" in codes and resource_type == "Measure":
            entry["operation"] = [{"name": "evaluate-measure",
                                   "definition": "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure"}]
        resources.append(entry)
    system = [{"code": c} for c in ("transaction", "batch", "search-system", "history-system") if c in codes]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "careplan",
        "kind": "instance",
        "software": {"name": "careplan", "version": SOFTWARE_VERSION},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": "FHIR R4 REST over JSON. XML is not supported. JSON Patch is supported for patch.",
            "resource": resources,
            "interaction": system,
        }],
    }
