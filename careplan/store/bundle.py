"""Process transaction and batch Bundles: ordering, identities, reference resolution, one database transaction.

https://hl7.org/fhir/R4/http.html#transaction
https://hl7.org/fhir/R4/bundle.html#transaction

A transaction runs every entry in one database transaction, in the order the specification sets (DELETE, POST,
PUT/PATCH, GET/HEAD), after working out every entry's identity so that ``urn:uuid:`` and ``urn:oid:`` fullUrls can
be replaced wherever a resource points at another entry. Any failing entry rolls the whole Bundle back and raises
an EntryError naming it. A batch runs each entry as a transaction of its own: a failing entry gets its own status
and OperationOutcome and does not affect the others.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jsonpatch
from fhirpathpy.models import models as fhirpath_models
from sqlalchemy.orm import Session

from careplan import jsonutil
from careplan.db import Database
from careplan.errors import (
    FhirError,
    InvalidRequest,
    InvalidResource,
    Issue,
    MultipleMatches,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    UnknownResourceType,
)
from careplan.resources import is_supported
from careplan.store import repository, service
from careplan.store.records import StoredResource
from careplan.validation import validate_resource

BUNDLE_TYPES = ("transaction", "batch")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# https://hl7.org/fhir/R4/http.html#trules: deletes, then creates, then updates and patches, then reads.
PROCESSING_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
LOCAL_URN = ("urn:uuid:", "urn:oid:")
JSON_PATCH = "application/json-patch+json"

_TYPE = r"[A-Z][A-Za-z]+"
_ID = r"[A-Za-z0-9\-.]{1,64}"
_CONDITIONAL_REFERENCE = re.compile(rf"^(?P<type>{_TYPE})\?(?P<query>.+)$")
_RESTFUL_URL = re.compile(rf"^(?P<base>.+)/(?P<type>{_TYPE})/(?P<id>{_ID})(?:/_history/{_ID})?$")
_RELATIVE_REFERENCE = re.compile(rf"^(?P<type>{_TYPE})/(?P<id>{_ID})$")
_ETAG = re.compile(r'^\s*(?:W/)?"(\d+)"\s*$')
_RESOURCE_ROOT = re.compile(rf"^{_TYPE}(?=[.\[]|$)")
_NARRATIVE_LINK = re.compile(r'(?P<attr>\b(?:href|src)=")(?P<url>[^"]+)(?=")')


# -- results -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryOutcome:
    """What one entry did: its HTTP status and the version it wrote or read, or the error (batch only)."""

    status: int
    stored: StoredResource | None = None
    created: bool = False
    unchanged: bool = False
    searchset: dict | None = None  # the Bundle a search entry answered
    error: FhirError | None = None
    skipped: bool = False  # left out on request (an unsupported type while importing)

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class BundleResult:
    """The outcome of a transaction or batch Bundle, one EntryOutcome per request entry, in request order."""

    type: str  # "transaction-response" or "batch-response"
    entries: list[EntryOutcome]


class EntryError(FhirError):
    """One entry of a Bundle failed: the error names the entry (index and fullUrl) and keeps the entry's status."""

    def __init__(self, index: int, full_url: str | None, error: FhirError, *, default_expression: str = "request"):
        where = f"Bundle.entry[{index}]" + (f" (fullUrl {full_url})" if full_url else "")
        issues = [Issue(i.code, f"{where}: {i.diagnostics}", _entry_expression(index, i.expression, default_expression),
                        i.severity) for i in error.issues]
        super().__init__(issues=issues)
        self.status = error.status
        self.index = index
        self.full_url = full_url
        self.cause = error


def _entry_expression(index: int, expression: str | None, default: str) -> str:
    prefix = f"Bundle.entry[{index}]"
    if expression is None:
        return f"{prefix}.{default}"
    if expression.startswith("Bundle."):
        return expression
    # Validation names elements from the resource type (Patient.gender): point into the entry instead.
    rooted, count = _RESOURCE_ROOT.subn(f"{prefix}.resource", expression, count=1)
    return rooted if count else f"{prefix}.{expression}"


# -- parsing -----------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One request entry of a Bundle, checked and parsed (no database work yet)."""

    index: int
    full_url: str | None
    method: str
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None
    query: str | None = None  # criteria of a conditional update/delete/patch, or search parameters
    criteria: list[tuple[str, str]] | None = None
    resource: dict | None = None
    if_match: int | None = None
    if_none_match: int | None = None
    patch: jsonpatch.JsonPatch | None = None

    @property
    def is_search(self) -> bool:
        return self.method in ("GET", "HEAD") and self.resource_id is None

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


@contextmanager
def _about(index: int, full_url: str | None, default_expression: str, *, if_match: bool = False) -> Iterator[None]:
    """Turn a FhirError raised while handling one entry into an EntryError naming that entry."""
    try:
        yield
    except EntryError:
        raise
    except FhirError as error:
        if if_match and isinstance(error, PreconditionFailed):
            default_expression = "request.ifMatch"
        raise EntryError(index, full_url, error, default_expression=default_expression) from None


def _about_entry(entry: Entry):
    return _about(entry.index, entry.full_url, "resource" if entry.resource is not None else "request",
                  if_match=entry.if_match is not None)


def check_bundle(document: object, *, max_entries: int | None = None) -> tuple[str, list]:
    """Check document is a transaction or batch Bundle within the entry limit; return its type and entries."""
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base URL takes a Bundle of type transaction or batch",
                             expression="Bundle.resourceType")
    kind = document.get("type")
    if kind not in BUNDLE_TYPES:
        raise InvalidRequest(f"Bundle.type must be transaction or batch, got {kind!r}", code="value",
                             expression="Bundle.type")
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be an array", code="structure", expression="Bundle.entry")
    if max_entries is not None and len(entries) > max_entries:
        raise PayloadTooLarge(f"The Bundle has {len(entries)} entries; this server accepts at most {max_entries}",
                              expression="Bundle.entry")
    return kind, entries


def parse_entry(index: int, raw: object, *, base_url: str | None = None) -> Entry:
    """Check one request entry and parse its request; raise EntryError naming it."""
    full_url = raw.get("fullUrl") if isinstance(raw, dict) else None
    full_url = full_url if isinstance(full_url, str) else None
    with _about(index, full_url, "request"):
        return _parse_entry(index, raw, full_url, base_url)


def _parse_entry(index: int, raw: object, full_url: str | None, base_url: str | None) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest("A Bundle entry must be a JSON object", code="structure", expression=where)
    if "fullUrl" in raw and full_url is None:
        raise InvalidRequest("fullUrl must be a string", code="value", expression=f"{where}.fullUrl")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest("Every entry of a transaction or batch needs a request (method and url)",
                             code="required", expression=f"{where}.request")
    method, url = request.get("method"), request.get("url")
    if method not in METHODS:
        raise InvalidRequest(f"request.method must be one of {', '.join(METHODS)}, got {method!r}", code="value",
                             expression=f"{where}.request.method")
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("request.url is required", code="required", expression=f"{where}.request.url")
    entry = Entry(index=index, full_url=full_url, method=method)
    _parse_url(entry, url, base_url, f"{where}.request.url")
    _parse_conditions(entry, request, f"{where}.request")
    _parse_body(entry, raw.get("resource"), f"{where}.resource")
    return entry


def _parse_url(entry: Entry, url: str, base_url: str | None, expression: str) -> None:
    url = url.strip()
    if base_url and url.startswith(base_url.rstrip("/") + "/"):
        url = url[len(base_url.rstrip("/")) + 1:]
    path, question, query = url.lstrip("/").partition("?")
    if "://" in path:
        raise InvalidRequest("request.url must be relative to this server's base URL", code="value",
                             expression=expression)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise InvalidRequest("request.url must start with a resource type; system-level requests are not "
                             "supported in a Bundle", code="not-supported", expression=expression)
    entry.resource_type = parts[0]
    if not re.fullmatch(_TYPE, entry.resource_type):
        raise InvalidRequest(f"request.url does not start with a resource type: {url!r}", code="value",
                             expression=expression)
    service.require_type(entry.resource_type)
    entry.query = query if question else None
    method = entry.method
    if len(parts) == 1:
        if method == "PATCH" and not entry.query:
            raise InvalidRequest("PATCH needs a resource id or search criteria in request.url", expression=expression)
        if method in ("PUT", "DELETE") and not entry.query:
            raise InvalidRequest(f"{method} on a resource type needs search criteria, e.g. ?identifier=system|value",
                                 expression=expression)
        if method in ("PUT", "DELETE", "PATCH"):
            entry.criteria = service.parse_criteria(entry.query)
        return
    if entry.query is not None and method != "GET":
        raise InvalidRequest("request.url of an instance interaction takes no query", expression=expression)
    if not re.fullmatch(_ID, parts[1]):
        raise InvalidRequest(f"{parts[1]!r} is not a valid resource id", code="value", expression=expression)
    entry.resource_id = parts[1]
    if len(parts) == 2:
        if method == "POST":
            raise InvalidRequest("POST creates a resource at a resource type, not at an id; use PUT to write an id",
                                 expression=expression)
        return
    if len(parts) == 4 and parts[2] == "_history" and method in ("GET", "HEAD"):
        entry.version_id = parts[3]
        return
    raise InvalidRequest(f"{method} {url} is not supported inside a Bundle (read, vread, search, create, update, "
                         "patch and delete are)", code="not-supported", expression=expression)


def _parse_conditions(entry: Entry, request: dict, where: str) -> None:
    if_match = request.get("ifMatch")
    if if_match is not None:
        if entry.method not in ("PUT", "PATCH", "DELETE"):
            raise InvalidRequest("ifMatch applies to PUT, PATCH and DELETE only", expression=f"{where}.ifMatch")
        entry.if_match = _version_etag(if_match, f"{where}.ifMatch")
    if_none_match = request.get("ifNoneMatch")
    if if_none_match is not None:
        if entry.method not in ("GET", "HEAD") or entry.resource_id is None:
            raise InvalidRequest("ifNoneMatch applies to read entries only", expression=f"{where}.ifNoneMatch")
        entry.if_none_match = _version_etag(if_none_match, f"{where}.ifNoneMatch")
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        if entry.method != "POST":
            raise InvalidRequest("ifNoneExist applies to POST only", expression=f"{where}.ifNoneExist")
        if not isinstance(if_none_exist, str):
            raise InvalidRequest("ifNoneExist must be a string", code="value", expression=f"{where}.ifNoneExist")
        entry.criteria = service.parse_criteria(if_none_exist)


def _version_etag(value: object, expression: str) -> int:
    match = _ETAG.match(value) if isinstance(value, str) else None
    if not match:
        raise PreconditionFailed(f'A version ETag such as W/"3" is required, got {value!r}', code="invalid",
                                 expression=expression)
    return int(match.group(1))


def _parse_body(entry: Entry, resource: object, where: str) -> None:
    if entry.method in ("GET", "HEAD", "DELETE"):
        if resource is not None:
            raise InvalidRequest(f"A {entry.method} entry carries no resource", expression=where)
        return
    if resource is None:
        raise InvalidRequest(f"A {entry.method} entry needs a resource", code="required", expression=where)
    if entry.method == "PATCH":
        entry.patch = service.parse_patch(_json_patch_operations(resource, where))
        return
    if not isinstance(resource, dict):
        raise InvalidResource("entry.resource must be a JSON object", code="structure", expression=where)
    if resource.get("resourceType") != entry.resource_type:
        raise InvalidResource(f"resourceType {resource.get('resourceType')!r} does not match the "
                              f"{entry.resource_type!r} in request.url", expression=f"{where}.resourceType")
    service.require_client_writable(entry.resource_type)
    validate_resource(resource, expected_type=entry.resource_type)
    if entry.method == "PUT" and entry.resource_id is not None:
        if "id" not in resource:
            raise InvalidResource("The resource in an update must have an id", code="required",
                                  expression=f"{where}.id")
        if resource["id"] != entry.resource_id:
            raise InvalidResource(f"The id in the resource ({resource['id']!r}) does not match request.url "
                                  f"({entry.resource_id!r})", expression=f"{where}.id")
    entry.resource = resource


def _json_patch_operations(resource: object, where: str) -> object:
    """Return the JSON Patch a PATCH entry carries as a Binary (https://hl7.org/fhir/R4/http.html#patch)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if kind == "Parameters":
            raise InvalidRequest("FHIRPath Patch is not supported; send a JSON Patch as a Binary "
                                 f"with contentType {JSON_PATCH}", code="not-supported", expression=where)
        raise InvalidRequest(f"A PATCH entry carries its JSON Patch as a Binary resource with contentType "
                             f"{JSON_PATCH}", code="structure", expression=where)
    if resource.get("contentType") != JSON_PATCH:
        raise InvalidRequest(f"Only JSON Patch ({JSON_PATCH}) is supported", code="not-supported",
                             expression=f"{where}.contentType")
    data = resource.get("data")
    if not isinstance(data, str):
        raise InvalidRequest("The Binary holding the patch needs data (base64)", code="required",
                             expression=f"{where}.data")
    try:
        return jsonutil.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"Binary.data is not base64-encoded JSON: {exc}", code="structure",
                             expression=f"{where}.data") from None


def entry_type(raw: object) -> str | None:
    """Return the resource type an entry is about (its resource, else its request.url), without checking it."""
    if not isinstance(raw, dict):
        return None
    resource = raw.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str) and \
            resource.get("resourceType") != "Binary":
        return resource["resourceType"]
    request = raw.get("request")
    url = request.get("url") if isinstance(request, dict) else None
    if isinstance(url, str):
        return url.lstrip("/").split("?", 1)[0].split("/", 1)[0] or None
    return None


# -- the plan: identities and references --------------------------------------------------------------------


@dataclass
class _Plan:
    """What one transaction attempt decided: every entry's target, and how fullUrls map to references."""

    targets: dict[int, tuple[str, str]] = field(default_factory=dict)  # entry index -> (type, id)
    aliases: dict[int, int] = field(default_factory=dict)  # identical conditional create -> first entry
    existing: dict[int, StoredResource] = field(default_factory=dict)  # conditional creates that matched
    deleted: dict[int, StoredResource | None] = field(default_factory=dict)  # what each DELETE did
    resources: dict[int, dict] = field(default_factory=dict)  # entry index -> resource with references resolved
    references: dict[str, str] = field(default_factory=dict)  # fullUrl -> Type/id
    conditional: dict[tuple[str, tuple], int] = field(default_factory=dict)  # (type, criteria) -> entry index
    resolved: dict[str, str] = field(default_factory=dict)  # conditional reference -> Type/id (cache)


def _criteria_key(resource_type: str, criteria: list[tuple[str, str]]) -> tuple[str, tuple]:
    return resource_type, tuple(sorted(criteria))


def _plan(session: Session, entries: Sequence[Entry], *, base_url: str | None, unresolved_ok: frozenset[str],
          keep_unsupported: bool) -> _Plan:
    """Run the deletes, give every other write its target, and resolve every reference, before any other write.

    References are resolved against the database as the deletes left it, so what a conditional reference finds
    does not depend on where its entry sits in the Bundle.
    """
    plan = _Plan()
    writers: dict[tuple[str, str], int] = {}

    def claim(entry: Entry, target: tuple[str, str]) -> None:
        other = writers.get(target)
        if other is not None:
            raise EntryError(entry.index, entry.full_url, InvalidRequest(
                f"Bundle.entry[{other}] and Bundle.entry[{entry.index}] both change {target[0]}/{target[1]}; "
                "a transaction may change each resource once", code="invariant"))
        writers[target] = entry.index
        plan.targets[entry.index] = target

    for entry in _ordered(entries):
        if entry.method not in ("POST", "PUT", "PATCH", "DELETE"):
            continue
        with _about(entry.index, entry.full_url, "request", if_match=entry.if_match is not None):
            if entry.method == "DELETE":
                target = _match_target(session, entry, missing_ok=True)
                if target is None:
                    plan.deleted[entry.index] = None
                    continue
                claim(entry, target)
                plan.deleted[entry.index] = service.delete_in(session, resource_type=target[0], resource_id=target[1],
                                                              if_match=entry.if_match)
            elif entry.method == "POST":
                _plan_create(session, entry, plan, claim)
            elif entry.method == "PUT":
                claim(entry, _put_target(session, entry, plan))
            else:
                claim(entry, _match_target(session, entry, missing_ok=False))
    for entry in entries:
        target = plan.targets.get(entry.index)
        if target is None and entry.index in plan.aliases:
            target = plan.targets[plan.aliases[entry.index]]
        if target is not None and entry.full_url:
            plan.references[entry.full_url] = f"{target[0]}/{target[1]}"
    for entry in entries:
        if entry.resource is None or entry.index in plan.existing or entry.index in plan.aliases:
            continue
        with _about(entry.index, entry.full_url, "resource"):
            resolver = _Resolver(session, plan, entry, base_url=base_url, unresolved_ok=unresolved_ok,
                                 keep_unsupported=keep_unsupported)
            plan.resources[entry.index] = resolver.resource(entry.resource)
    return plan


def _ordered(entries: Sequence[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (PROCESSING_ORDER[e.method], e.index))


def _plan_create(session: Session, entry: Entry, plan: _Plan, claim: Callable) -> None:
    if entry.criteria:
        key = _criteria_key(entry.resource_type, entry.criteria)
        first = plan.conditional.get(key)
        if first is not None:
            # Identical conditional creates in one Bundle name one resource: the first entry decides which.
            plan.aliases[entry.index] = first
            return
        plan.conditional[key] = entry.index
        found = _matches(session, entry.resource_type, entry.criteria, "ifNoneExist", "request.ifNoneExist")
        if found:
            plan.existing[entry.index] = found
            plan.targets[entry.index] = (found.resource_type, found.id)
            return
    claim(entry, (entry.resource_type, repository.new_id()))


def _put_target(session: Session, entry: Entry, plan: _Plan) -> tuple[str, str]:
    if entry.resource_id is not None:
        return entry.resource_type, entry.resource_id
    key = _criteria_key(entry.resource_type, entry.criteria)
    first = plan.conditional.get(key)
    if first is not None and first in plan.targets:
        return plan.targets[first]
    plan.conditional.setdefault(key, entry.index)
    found = _matches(session, entry.resource_type, entry.criteria, "criteria", "request.url")
    body_id = entry.resource.get("id")
    if found:
        if body_id is not None and body_id != found.id:
            raise InvalidResource(f"The id in the resource ({body_id!r}) is not the id of the matching resource "
                                  f"({found.id!r})", expression=f"{entry.resource_type}.id")
        return found.resource_type, found.id
    if entry.if_match is not None:
        raise PreconditionFailed("ifMatch given, but no resource matches the criteria")
    if body_id is not None:
        if repository.head(session, entry.resource_type, body_id) is not None:
            raise InvalidResource(f"{entry.resource_type}/{body_id} exists but does not match the criteria",
                                  expression=f"{entry.resource_type}.id")
        return entry.resource_type, body_id
    return entry.resource_type, repository.new_id()


def _match_target(session: Session, entry: Entry, *, missing_ok: bool) -> tuple[str, str] | None:
    if entry.resource_id is not None:
        return entry.resource_type, entry.resource_id
    found = _matches(session, entry.resource_type, entry.criteria, "criteria", "request.url")
    if found is None:
        if missing_ok:
            return None
        raise NotFound(f"No {entry.resource_type} matches the criteria {entry.query!r}", expression="request.url")
    return found.resource_type, found.id


def _matches(session: Session, resource_type: str, criteria: list[tuple[str, str]], what: str,
             expression: str) -> StoredResource | None:
    found = service.matches_in(session, resource_type=resource_type, criteria=criteria)
    if len(found) > 1:
        raise MultipleMatches(f"The {what} match more than one {resource_type}; they must select one resource",
                              expression=expression)
    return found[0] if found else None


# -- reference resolution ----------------------------------------------------------------------------------

_R4 = fhirpath_models["r4"]
_PATH_TYPE: dict[str, str | None] = _R4["path2Type"]
_CHOICES: dict[str, list[str]] = _R4["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
# Elements of these types hold URLs; the specification has the server replace those naming a Bundle entry.
_URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid"})
_PRIMITIVES = frozenset({
    "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary", "instant", "date",
    "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt", "positiveInt", "uuid", "xhtml",
})
_UNKNOWN = ""  # a path the model does not describe: only Reference.reference-shaped keys are resolved there
# The model lists backbone elements only through their children (Communication.payload.contentAttachment).
_BACKBONES = frozenset(path.rsplit(".", n)[0] for path in (*_PATH_TYPE, *_CHOICES) for n in range(1, path.count(".")))


@lru_cache(maxsize=8192)
def _child(parent: str, key: str) -> tuple[str, str]:
    """Return (kind, path) of key under the element path parent: kind is a type name, "" when unknown."""
    if parent == _UNKNOWN:
        return _UNKNOWN, _UNKNOWN
    if key.startswith("_"):
        return "Element", "Element"
    path = f"{parent}.{key}"
    path = _ELSEWHERE.get(path, path)
    if path in _PATH_TYPE:
        kind = _PATH_TYPE[path]
        if kind is None:  # a backbone element: its children are named from its own path
            return "Backbone", path
        return kind, kind
    if path in _BACKBONES:
        return "Backbone", path
    for split in range(1, len(key)):
        if key[split].isupper() and f"{parent}.{key[:split]}" in _CHOICES:
            kind = key[split:]
            primitive = kind[0].lower() + kind[1:]
            if primitive in _PRIMITIVES:
                return primitive, primitive
            return kind, kind
    return _UNKNOWN, _UNKNOWN


class _Resolver:
    """Rewrite the references of one resource: fullUrls to the ids assigned, conditional references to matches."""

    def __init__(self, session: Session, plan: _Plan, entry: Entry, *, base_url: str | None,
                 unresolved_ok: frozenset[str], keep_unsupported: bool):
        self.session, self.plan, self.entry = session, plan, entry
        self.base_url = base_url.rstrip("/") if base_url else None
        self.unresolved_ok = unresolved_ok
        self.keep_unsupported = keep_unsupported
        own = _RESTFUL_URL.match(entry.full_url or "")
        self.own_base = own.group("base") if own else None

    def resource(self, resource: dict) -> dict:
        return self._walk(resource, resource["resourceType"], "Resource", f"Bundle.entry[{self.entry.index}].resource")

    def _walk(self, value: Any, parent: str, kind: str, expression: str) -> Any:
        if isinstance(value, list):
            return [self._walk(item, parent, kind, f"{expression}[{n}]") for n, item in enumerate(value)]
        if isinstance(value, dict):
            if kind == "Resource" and isinstance(value.get("resourceType"), str):
                parent = value["resourceType"]
            elif kind not in ("Backbone", _UNKNOWN):
                parent = kind
            result = {}
            for key, item in value.items():
                child_kind, child_path = _child(parent, key) if kind != _UNKNOWN else (_UNKNOWN, _UNKNOWN)
                child_expression = f"{expression}.{key}"
                if isinstance(item, str):
                    result[key] = self._string(item, parent, key, child_kind, child_expression)
                elif isinstance(item, list) and child_kind in _URI_TYPES:
                    result[key] = [self._uri(v) if isinstance(v, str) else v for v in item]
                else:
                    result[key] = self._walk(item, child_path, child_kind, child_expression)
            return result
        return value

    def _string(self, value: str, parent: str, key: str, kind: str, expression: str) -> str:
        if key == "reference" and (parent == "Reference" or kind == _UNKNOWN):
            return self.reference(value, expression)
        if kind in _URI_TYPES:
            return self._uri(value)
        if kind == "xhtml":
            return _NARRATIVE_LINK.sub(lambda m: m.group("attr") + self._uri(m.group("url")), value)
        return value

    def _uri(self, value: str) -> str:
        return self.plan.references.get(value, value)

    def reference(self, value: str, expression: str) -> str:
        """Return what a Reference.reference should say once this Bundle is stored."""
        mapped = self.plan.references.get(value)
        if mapped is not None:
            return mapped
        if value.startswith(LOCAL_URN):
            if value in self.unresolved_ok:
                return value
            raise InvalidRequest(f"Reference {value} names no entry of this Bundle (no entry has that fullUrl)",
                                 code="not-found", expression=expression)
        conditional = _CONDITIONAL_REFERENCE.match(value)
        if conditional:
            return self._conditional(value, conditional.group("type"), conditional.group("query"), expression)
        relative = _RELATIVE_REFERENCE.match(value)
        if relative:
            # A relative reference resolves against the base of the referring entry's fullUrl.
            for base in {self.own_base, self.base_url} - {None}:
                mapped = self.plan.references.get(f"{base}/{value}")
                if mapped is not None:
                    return mapped
        return value

    def _conditional(self, value: str, resource_type: str, query: str, expression: str) -> str:
        cached = self.plan.resolved.get(value)
        if cached is not None:
            return cached
        if not is_supported(resource_type):
            if self.keep_unsupported:
                return value
            raise UnknownResourceType(f"Conditional reference to {resource_type}, a type this server does not "
                                      "store", expression=expression)
        try:
            criteria = service.parse_criteria(query)
        except FhirError as error:
            raise InvalidRequest(error.issues[0].diagnostics, expression=expression) from None
        first = self.plan.conditional.get(_criteria_key(resource_type, criteria))
        if first is not None and first in self.plan.targets:
            target = self.plan.targets[first]
            resolved = f"{target[0]}/{target[1]}"
        else:
            found = service.matches_in(self.session, resource_type=resource_type, criteria=criteria)
            if len(found) > 1:
                raise MultipleMatches(f"Conditional reference {value} matches more than one {resource_type}",
                                      expression=expression)
            if not found:
                raise PreconditionFailed(f"Conditional reference {value} matches no {resource_type}",
                                         code="not-found", expression=expression)
            resolved = found[0].reference
        self.plan.resolved[value] = resolved
        return resolved


# -- running -----------------------------------------------------------------------------------------------


def process(db: Database, document: object, *, max_entries: int, base_url: str | None = None,
            search: Callable | None = None) -> BundleResult:
    """Process a transaction or batch Bundle posted to the base URL."""
    kind, raw_entries = check_bundle(document, max_entries=max_entries)
    if kind == "transaction":
        return BundleResult("transaction-response",
                            transaction(db, raw_entries, base_url=base_url, search=search))
    return BundleResult("batch-response", batch(db, raw_entries, base_url=base_url, search=search))


def transaction(db: Database, raw_entries: Sequence[object], *, base_url: str | None = None,
                skip_unsupported: bool = False, search: Callable | None = None) -> list[EntryOutcome]:
    """Run every entry in one database transaction; raise EntryError (nothing written) when any entry fails.

    With skip_unsupported, entries of types this server does not store are left out (their outcome says skipped)
    and references to them stay as they are.
    """
    entries, skipped = _prepare(raw_entries, base_url=base_url, skip_unsupported=skipped_types(skip_unsupported))
    _check_full_urls(entries)
    unresolved_ok = frozenset(u for u in skipped.values() if u)
    lock_names = sorted({service.conditional_lock_key(e.resource_type, e.criteria)
                         for e in entries if e.criteria and e.method in ("POST", "PUT", "DELETE", "PATCH")})

    def work(session: Session) -> dict[int, EntryOutcome]:
        for name in lock_names:
            # One order for every transaction, so two Bundles waiting on each other's criteria cannot deadlock.
            service.lock_in(session, name)
        return _run(session, entries, base_url=base_url, unresolved_ok=unresolved_ok,
                    keep_unsupported=skip_unsupported, search=search)

    outcomes = service.write_retrying(db, work) if entries else {}
    return [EntryOutcome(0, skipped=True) if n in skipped else outcomes[n] for n in range(len(raw_entries))]


def batch(db: Database, raw_entries: Sequence[object], *, base_url: str | None = None,
          indices: Iterable[int] | None = None, skip_unsupported: bool = False, search: Callable | None = None,
          on_entry: Callable[[int, EntryOutcome], None] | None = None) -> list[EntryOutcome]:
    """Run each entry (or those at indices) in a transaction of its own; a failing entry gets its status and outcome."""
    outcomes = []
    skip = skipped_types(skip_unsupported)
    for index in range(len(raw_entries)) if indices is None else indices:
        raw = raw_entries[index]
        if skip and skip(entry_type(raw)):
            outcome = EntryOutcome(0, skipped=True)
        else:
            outcome = _batch_entry(db, index, raw, base_url=base_url, search=search)
        outcomes.append(outcome)
        if on_entry is not None:
            on_entry(index, outcome)
    return outcomes


def skipped_types(skip_unsupported: bool) -> Callable[[str | None], bool] | None:
    """Return the test that leaves an entry out, or None when nothing is left out."""
    if not skip_unsupported:
        return None
    return lambda resource_type: resource_type is not None and not is_supported(resource_type) \
        and re.fullmatch(_TYPE, resource_type) is not None


def _batch_entry(db: Database, index: int, raw: object, *, base_url: str | None,
                 search: Callable | None) -> EntryOutcome:
    try:
        entry = parse_entry(index, raw, base_url=base_url)
        if not entry.is_write:
            with db.reading() as session:
                return _run(session, [entry], base_url=base_url, unresolved_ok=frozenset(),
                            keep_unsupported=False, search=search)[index]
        lock = service.conditional_lock_key(entry.resource_type, entry.criteria) if entry.criteria else None
        return service.write_retrying(
            db, lambda session: _run(session, [entry], base_url=base_url, unresolved_ok=frozenset(),
                                     keep_unsupported=False, search=search)[index], lock_key=lock)
    except EntryError as error:
        return EntryOutcome(error.status, error=error)


def _prepare(raw_entries: Sequence[object], *, base_url: str | None,
             skip_unsupported: Callable[[str | None], bool] | None) -> tuple[list[Entry], dict[int, str | None]]:
    entries, skipped = [], {}
    for index, raw in enumerate(raw_entries):
        if skip_unsupported and skip_unsupported(entry_type(raw)):
            full_url = raw.get("fullUrl") if isinstance(raw, dict) else None
            skipped[index] = full_url if isinstance(full_url, str) else None
            continue
        entries.append(parse_entry(index, raw, base_url=base_url))
    return entries, skipped


def _check_full_urls(entries: Sequence[Entry]) -> None:
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        if entry.full_url in seen:
            raise EntryError(entry.index, entry.full_url, InvalidRequest(
                f"fullUrl {entry.full_url} is also the fullUrl of Bundle.entry[{seen[entry.full_url]}]; "
                "fullUrls must be unique", code="invariant", expression=f"Bundle.entry[{entry.index}].fullUrl"))
        seen[entry.full_url] = entry.index


def _run(session: Session, entries: Sequence[Entry], *, base_url: str | None, unresolved_ok: frozenset[str],
         keep_unsupported: bool, search: Callable | None) -> dict[int, EntryOutcome]:
    """Run entries inside session in processing order; every failure raises EntryError."""
    plan = _plan(session, entries, base_url=base_url, unresolved_ok=unresolved_ok, keep_unsupported=keep_unsupported)
    outcomes: dict[int, EntryOutcome] = {}
    for entry in _ordered(entries):
        with _about_entry(entry):
            outcomes[entry.index] = _perform(session, entry, plan, search=search)
    # Identical conditional creates answer with the resource the first one created or found.
    for index, first in plan.aliases.items():
        outcomes[index] = EntryOutcome(200, stored=outcomes[first].stored, unchanged=True)
    return outcomes


def _perform(session: Session, entry: Entry, plan: _Plan, *, search: Callable | None) -> EntryOutcome:
    method = entry.method
    if method == "DELETE":
        return EntryOutcome(204, stored=plan.deleted[entry.index])
    if method in ("GET", "HEAD"):
        return _read(session, entry, search=search)
    if entry.index in plan.aliases:
        return EntryOutcome(200)  # filled in from the first identical create
    if method == "PATCH":
        resource_type, resource_id = plan.targets[entry.index]
        result = service.patch_in(session, resource_type=resource_type, resource_id=resource_id,
                                  patch_document=entry.patch, if_match=entry.if_match)
        return EntryOutcome(200, stored=result.stored, unchanged=result.unchanged)
    if entry.index in plan.existing:
        return EntryOutcome(200, stored=plan.existing[entry.index], unchanged=True)
    resource_type, resource_id = plan.targets[entry.index]
    resource = plan.resources[entry.index]
    if method == "POST":
        result = service.create_in(session, resource=resource, resource_id=resource_id)
        return EntryOutcome(201, stored=result.stored, created=True)
    result = service.update_in(session, resource={**resource, "id": resource_id}, resource_id=resource_id,
                               if_match=entry.if_match)
    return EntryOutcome(201 if result.created else 200, stored=result.stored, created=result.created,
                        unchanged=result.unchanged)


def _read(session: Session, entry: Entry, *, search: Callable | None) -> EntryOutcome:
    if entry.is_search:
        if search is None:
            raise InvalidRequest("Search entries are not supported in a Bundle by this server yet",
                                 code="not-supported")
        return EntryOutcome(200, searchset=search(session, entry.resource_type, entry.query or ""))
    if entry.version_id is not None:
        stored = service.vread_in(session, resource_type=entry.resource_type, resource_id=entry.resource_id,
                                  version_id=entry.version_id)
    else:
        stored = service.read_in(session, resource_type=entry.resource_type, resource_id=entry.resource_id)
        if entry.if_none_match is not None and entry.if_none_match == stored.version_id:
            return EntryOutcome(304, stored=stored)
    return EntryOutcome(200, stored=stored)
