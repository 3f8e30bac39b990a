"""FHIR history interactions: instance, type and system level, paged newest first.

https://hl7.org/fhir/R4/http.html#history
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import request

from api.database import get_db, get_settings
from api.fhir.http import base_url, fhir_json, instant, page_url
from careplan.errors import InvalidRequest
from careplan.search.dates import parse_range
from careplan.store import service
from careplan.store.records import HistoryPage, StoredResource

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
    cursor, horizon = _parse_cursor(request.args.get("_cursor"))
    page = service.history(get_db(), since=since, count=count, cursor=cursor, horizon=horizon, **scope)
    return fhir_json(_bundle(page, path, count, since_text, cursor))


def _parse_cursor(text: str | None) -> tuple[int | None, datetime | None]:
    # The cursor carries the first page's sync horizon so every page of one walk reports the same one.
    if text is None:
        return None, None
    pk, _, micros = text.partition(".")
    if not (pk.isdigit() and micros.isdigit()):
        raise InvalidRequest("_cursor is not one this server issued", code="value", expression="_cursor")
    try:
        return int(pk), EPOCH + timedelta(microseconds=int(micros))
    except OverflowError:
        raise InvalidRequest("_cursor is not one this server issued", code="value", expression="_cursor") from None


def _cursor(pk: int | None, horizon: datetime) -> str | None:
    if pk is None:
        return None
    return f"{pk}.{(horizon - EPOCH) // timedelta(microseconds=1)}"


def _count(default: int, maximum: int) -> int:
    text = request.args.get("_count")
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest(f"_count must be a positive integer, got {text!r}", code="value", expression="_count")
    return min(int(text), maximum)


def _bundle(page: HistoryPage, path: str, count: int, since: str | None, cursor: int | None) -> dict:
    here = _cursor(cursor, page.horizon)
    links = [{"relation": "self", "url": page_url(path, {"_since": since, "_count": count, "_cursor": here})}]
    if page.next_cursor is not None:
        links.append({"relation": "next", "url": page_url(
            path, {"_since": since, "_count": count, "_cursor": _cursor(page.next_cursor, page.horizon)})})
    # Clients continue their next _since poll from here: every write stamped before it is already visible.
    bundle = {"resourceType": "Bundle", "meta": {"lastUpdated": instant(page.horizon)}, "type": "history"}
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
