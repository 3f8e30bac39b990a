"""FHIR history interactions: instance, type and system level, paged newest first.

https://hl7.org/fhir/R4/http.html#history
"""

from __future__ import annotations

from flask import request

from api.database import get_db, get_settings
from api.fhir.http import base_url, fhir_json, instant, page_url
from careplan.errors import InvalidRequest
from careplan.search.dates import parse_range
from careplan.store import service
from careplan.store.records import HistoryPage, StoredResource


def instance_history(resource_type: str, resource_id: str):
    """Return every version of one resource."""
    return _history(f"/{resource_type}/{resource_id}/_history", resource_type=resource_type, resource_id=resource_id)


def type_history(resource_type: str):
    """Return every version of every resource of one type."""
    return _history(f"/{resource_type}/_history", resource_type=resource_type)


def system_history():
    """Return every version of every resource."""
    return _history("/_history")


def _history(path: str, **scope):
    settings = get_settings()
    count = _count(settings.default_page_size, settings.max_page_size)
    since_text = request.args.get("_since")
    since = None
    if since_text:
        try:
            since = parse_range(since_text)[0]
        except ValueError:
            raise InvalidRequest(f"_since must be a FHIR instant, got {since_text!r}", code="value",
                                 expression="_since") from None
    cursor_text = request.args.get("_cursor")
    if cursor_text is not None and not cursor_text.isdigit():
        raise InvalidRequest("_cursor is not one this server issued", code="value")
    cursor = int(cursor_text) if cursor_text else None
    page = service.history(get_db(), since=since, count=count, cursor=cursor, **scope)
    return fhir_json(_bundle(page, path, count, since_text, cursor))


def _count(default: int, maximum: int) -> int:
    text = request.args.get("_count")
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest(f"_count must be a positive integer, got {text!r}", code="value", expression="_count")
    return min(int(text), maximum)


def _bundle(page: HistoryPage, path: str, count: int, since: str | None, cursor: int | None) -> dict:
    links = [{"relation": "self", "url": page_url(path, {"_since": since, "_count": count, "_cursor": cursor})}]
    if page.next_cursor is not None:
        links.append({"relation": "next",
                      "url": page_url(path, {"_since": since, "_count": count, "_cursor": page.next_cursor})})
    bundle = {"resourceType": "Bundle", "type": "history"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    bundle["entry"] = [_entry(version) for version in page.entries]
    return bundle


def _entry(version: StoredResource) -> dict:
    url = f"{version.resource_type}/{version.id}"
    entry: dict = {"fullUrl": f"{base_url()}/{url}"}
    if version.content is not None:
        entry["resource"] = version.content
    method = version.method or "PUT"
    status = "201 Created" if version.version_id == 1 and method in ("POST", "PUT") else (
        "204 No Content" if version.deleted else "200 OK")
    entry["request"] = {"method": method, "url": version.resource_type if method == "POST" else url}
    entry["response"] = {"status": status, "etag": version.etag, "lastModified": instant(version.last_updated)}
    return entry
