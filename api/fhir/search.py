"""FHIR search interactions: type level, system level and patient compartment, by GET or POST `_search`.

https://hl7.org/fhir/R4/http.html#search
https://hl7.org/fhir/R4/search.html
https://hl7.org/fhir/R4/compartmentdefinition.html
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlencode

from flask import request

from api.database import get_db, get_settings
from api.fhir.http import base_url, fhir_json
from careplan.errors import NotFound, UnsupportedMediaType
from careplan.resources import WIDE_SEARCH_TYPES, is_supported
from careplan.search import engine
from careplan.search.compartment import member_types
from careplan.search.request import Compartment, SearchRequest, parse_request
from careplan.security import context
from careplan.store import service, sync
from careplan.store.records import StoredResource, format_instant

FORM = "application/x-www-form-urlencoded"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def caller_visibility():
    """Return the access policy of the caller as a condition on Resource of any type (None: no restriction)."""
    return context.visibility(None)


def search_type(resource_type: str):
    """Search the resources of one type (GET /{type}?params)."""
    service.require_type(resource_type)
    return _search(f"/{resource_type}", _query_pairs(), types=(resource_type,))


def search_type_post(resource_type: str):
    """Search the resources of one type with the parameters in a form body (POST /{type}/_search)."""
    service.require_type(resource_type)
    return _search(f"/{resource_type}", _query_pairs() + _form_pairs(), types=(resource_type,))


def search_system():
    """Search every type, or those `_type` names (GET /?params or GET /_search?params)."""
    return _search("", _query_pairs(), types=None)


def search_system_post():
    """Search every type with the parameters in a form body (POST /_search)."""
    return _search("", _query_pairs() + _form_pairs(), types=None)


def search_compartment(resource_type: str, resource_id: str, compartment_type: str):
    """Search one type, or every type (`*`), inside a patient's compartment (GET /Patient/{id}/{type})."""
    if resource_type != "Patient":
        raise NotFound(f"Only the Patient compartment is searchable; nothing is served at {request.path}")
    if compartment_type != "*":
        service.require_type(compartment_type)
    types = tuple(t for t in member_types() if t in WIDE_SEARCH_TYPES) if compartment_type == "*" \
        else (compartment_type,)
    pairs = _query_pairs()
    with get_db().reading() as session:
        if engine.compartment_owner(session, resource_id, visibility=caller_visibility()) is None:
            raise NotFound(f"Patient/{resource_id} is not known")
    return _search(f"/Patient/{resource_id}/{compartment_type}", pairs, types=types,
                   compartment=Compartment(resource_id))


def _query_pairs() -> list[tuple[str, str]]:
    return list(request.args.items(multi=True))


def _form_pairs() -> list[tuple[str, str]]:
    if not request.get_data(cache=True).strip():
        return []
    if request.mimetype != FORM:
        raise UnsupportedMediaType(f"POST _search takes a {FORM} body, not {request.mimetype or 'no Content-Type'}")
    return list(request.form.items(multi=True))


def strict_handling() -> bool:
    """Tell whether the client sent `Prefer: handling=strict`."""
    for part in request.headers.get("Prefer", "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == "handling" and value.strip().strip('"') == "strict":
            return True
    return False


def _search(path: str, pairs: list[tuple[str, str]], *, types: tuple[str, ...] | None,
            compartment: Compartment | None = None):
    settings = get_settings()
    parsed = parse_request(pairs, types=types, strict=strict_handling(), default_count=settings.default_page_size,
                           max_count=settings.max_page_size, compartment=compartment)
    return run(path, parsed)


def run(path: str, parsed: SearchRequest):
    """Execute parsed and answer it as a searchset Bundle whose links lead back to path.

    Bundle.meta.lastUpdated is the sync horizon (careplan.store.sync): an EHR polling with
    ``_lastUpdated=gt<that>`` misses no write. On SQLite the horizon needs the write lock, so it is only computed for
    searches that filter on _lastUpdated.
    """
    db = get_db()
    syncing = db.is_postgresql or any(c.name == "_lastUpdated" for c in parsed.criteria)
    with (db.polling() if syncing else db.reading()) as session:
        horizon = sync.horizon(session) if syncing else None
        result = engine.search(session, parsed, visibility=caller_visibility(), local_bases=(base_url(),))
    bundle = searchset(path, parsed, result)
    if horizon is not None:
        bundle = {"resourceType": "Bundle", "meta": {"lastUpdated": format_instant(horizon)},
                  **{k: v for k, v in bundle.items() if k != "resourceType"}}
    return fhir_json(bundle)


def searchset(path: str, parsed: SearchRequest, result: engine.SearchResult) -> dict:
    """Build the searchset Bundle of one page."""
    bundle: dict = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    shown = [(k, str(parsed.count) if k == "_count" else v) for k, v in parsed.used]
    if not any(k == "_count" for k, _ in shown):
        shown.append(("_count", str(parsed.count)))
    links = [{"relation": "self", "url": _link(path, shown + ([("_cursor", parsed.cursor)] if parsed.cursor
                                                             else []))}]
    links.append({"relation": "first", "url": _link(path, shown)})
    if result.next_cursor is not None:
        links.append({"relation": "next", "url": _link(path, shown + [("_cursor", result.next_cursor)])})
    bundle["link"] = links
    entries = [_entry(r, "match", parsed, elements=True) for r in result.matches]
    entries += [_entry(r, "include", parsed, elements=False) for r in result.included]
    if result.warnings:
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "too-costly", "diagnostics": w} for w in result.warnings]},
            "search": {"mode": "outcome"}})
    if entries or not parsed.total_only:
        bundle["entry"] = entries
    if not bundle.get("entry"):
        bundle.pop("entry", None)
    return bundle


def _link(path: str, pairs: list[tuple[str, str]]) -> str:
    query = urlencode(pairs)
    return f"{base_url()}{path}" + (f"?{query}" if query else "")


def _entry(stored: StoredResource, mode: str, parsed: SearchRequest, *, elements: bool) -> dict:
    resource = stored.content or {}
    if parsed.summary is not None:
        resource = summarize(resource, parsed.summary)
    if elements and parsed.elements is not None:
        resource = only_elements(resource, parsed.elements)
    return {"fullUrl": f"{base_url()}/{stored.resource_type}/{stored.id}", "resource": resource,
            "search": {"mode": mode}}


# --- _summary and _elements (https://hl7.org/fhir/R4/search.html#summary) ---------------------------


def summarize(resource: dict, mode: str) -> dict:
    """Return resource reduced as `_summary=mode` asks (true, text or data), tagged SUBSETTED."""
    if mode == "data":
        return _subsetted({k: v for k, v in resource.items() if k != "text"})
    summary, required = _element_flags(resource["resourceType"])
    keep = summary if mode == "true" else required | {"text"}
    return _subsetted(_keep(resource, keep))


def only_elements(resource: dict, elements: tuple[str, ...]) -> dict:
    """Return resource with only the listed top-level elements (plus id and meta), tagged SUBSETTED."""
    _, required = _element_flags(resource["resourceType"])
    return _subsetted(_keep(resource, set(elements) | required))


def _keep(resource: dict, names: set[str]) -> dict:
    always = {"resourceType", "id", "meta"}
    # a primitive's extensions travel in `_name` next to it
    return {k: v for k, v in resource.items() if k in always or k in names or (k[:1] == "_" and k[1:] in names)}


def _subsetted(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == SUBSETTED["code"] and t.get("system") == SUBSETTED["system"] for t in tags):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    return {**resource, "meta": meta}


@lru_cache(maxsize=None)
def _element_flags(resource_type: str) -> tuple[frozenset[str], frozenset[str]]:
    """Return the top-level elements of resource_type marked isSummary, and those that are mandatory."""
    from fhir.resources.R4B import get_fhir_model_class

    if not is_supported(resource_type):
        return frozenset(), frozenset()
    fields = get_fhir_model_class(resource_type).model_fields
    summary, required = set(), set()
    for name, info in fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        key = info.alias or name
        if extra.get("summary_element_property"):
            summary.add(key)
        if extra.get("element_required"):
            required.add(key)
    return frozenset(summary | required), frozenset(required)

