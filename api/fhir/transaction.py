"""FHIR transaction and batch interactions: a Bundle POSTed to the base URL, dispatched on Bundle.type.

https://hl7.org/fhir/R4/http.html#transaction
https://hl7.org/fhir/R4/bundle.html#transaction
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from urllib.parse import parse_qsl

from flask import request

from api.database import get_db, get_settings
from api.fhir import search as search_view
from api.fhir.http import base_url, fhir_json, instant, json_body, prefer_return
from careplan.errors import InvalidRequest
from careplan.search import engine
from careplan.search.request import parse_request
from careplan.store import bundle
from careplan.store.bundle import BundleResult, EntryOutcome

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def transaction():
    """Process a transaction (all or nothing) or batch (each entry on its own) Bundle."""
    settings = get_settings()
    # A Bundle of a few thousand resources is far larger than one resource: it has its own body limit.
    request.max_content_length = settings.max_bundle_bytes
    document = json_body()
    base = base_url()
    result = bundle.process(get_db(), document, max_entries=settings.max_bundle_entries, base_url=base,
                            search=_search())
    return fhir_json(response_bundle(result, document["entry"] if result.entries else [], base, prefer_return()))


def response_bundle(result: BundleResult, raw_entries: list, base: str, choice: str) -> dict:
    """Build the transaction-response or batch-response Bundle, one entry per request entry, in order."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": result.type,
        "link": [{"relation": "self", "url": base}],
        "entry": [_entry(outcome, _method(raw), base, choice) for outcome, raw in zip(result.entries, raw_entries)],
    }


def _method(raw: object) -> str | None:
    request_part = raw.get("request") if isinstance(raw, dict) else None
    return request_part.get("method") if isinstance(request_part, dict) else None


def status_line(status: int) -> str:
    """Return an HTTP status line such as "201 Created"."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _entry(outcome: EntryOutcome, method: str | None, base: str, choice: str) -> dict:
    response: dict = {"status": status_line(outcome.status)}
    entry: dict = {}
    if outcome.error is not None:
        response["outcome"] = outcome.error.operation_outcome()
        return {"response": response}
    stored = outcome.stored
    if stored is not None:
        entry["fullUrl"] = f"{base}/{stored.resource_type}/{stored.id}"
        if method in WRITE_METHODS and method != "DELETE":
            response["location"] = f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
        response["etag"] = stored.etag
        response["lastModified"] = instant(stored.last_updated)
        if method in WRITE_METHODS:
            if choice == "representation" and stored.content is not None:
                entry["resource"] = stored.content
            elif choice == "OperationOutcome":
                response["outcome"] = {"resourceType": "OperationOutcome", "issue": [{
                    "severity": "information", "code": "informational",
                    "diagnostics": f"{stored.resource_type}/{stored.id} is at version {stored.version_id}"}]}
        elif method == "GET" and outcome.status == 200 and stored.content is not None:
            entry["resource"] = stored.content
    elif outcome.searchset is not None and method == "GET":
        entry["resource"] = outcome.searchset
    entry["response"] = response
    return entry


def _search():
    """Return the search that GET entries with a query run, inside the Bundle's database transaction."""
    settings = get_settings()
    strict = search_view.strict_handling()

    def run(session, resource_type: str, query: str) -> dict:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise InvalidRequest(f"Malformed search parameters {query!r}", code="value") from None
        parsed = parse_request(pairs, types=(resource_type,), strict=strict, default_count=settings.default_page_size,
                               max_count=settings.max_page_size)
        result = engine.search(session, parsed, visibility=search_view.caller_visibility(),
                               local_bases=(base_url(),))
        return search_view.searchset(f"/{resource_type}", parsed, result)

    return run
