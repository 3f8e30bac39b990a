"""SMART on FHIR scopes (v2 syntax, v1 accepted) and what each FHIR interaction needs of them.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

A scope such as ``system/CarePlan.rs`` grants permissions (c create, r read, u update, d delete, s search) on one
resource type, or on every type with ``*``. v1 suffixes map to v2 letters: ``.read`` = ``rs``, ``.write`` = ``cud``,
``.*`` = ``cruds``. ``system/`` (backend clients) and ``user/`` (people) scopes grant access; ``patient/`` scopes
are understood but grant nothing until requests carry a patient context to confine them to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

PERMISSIONS = "cruds"
CONTEXTS = ("patient", "user", "system")
GRANTING_CONTEXTS = frozenset({"system", "user"})
ALL_TYPES = "*"
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]+)$")
_LOOKS_LIKE_RESOURCE_SCOPE = re.compile(r"^(patient|user|system)/")
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{0,63}$")


class ScopeError(ValueError):
    """A scope string is malformed."""


@dataclass(frozen=True, order=True)
class Scope:
    """One SMART resource scope with its permissions in canonical ``cruds`` order."""

    context: str
    resource_type: str
    permissions: str

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{self.permissions}"

    def grants(self, resource_type: str, permission: str) -> bool:
        """Tell whether this scope grants one permission letter on resource_type (``*`` means every type)."""
        if self.context not in GRANTING_CONTEXTS or permission not in self.permissions:
            return False
        return self.resource_type == ALL_TYPES or self.resource_type == resource_type


def _canonical(letters: Iterable[str]) -> str:
    chosen = set(letters)
    return "".join(p for p in PERMISSIONS if p in chosen)


def parse_scope(text: str) -> Scope | None:
    """Parse one scope; None for scopes that are not resource scopes (openid, launch, granular ``?`` scopes)."""
    if "?" in text and _LOOKS_LIKE_RESOURCE_SCOPE.match(text):
        # v2 granular scopes (e.g. Observation.rs?category=...) are not enforced yet: never grant more than asked.
        return None
    match = _RESOURCE_SCOPE.match(text)
    if not match:
        if _LOOKS_LIKE_RESOURCE_SCOPE.match(text):
            raise ScopeError(f"malformed scope {text!r}; expected e.g. system/CarePlan.rs or user/*.cruds")
        return None
    context, resource_type, suffix = match.groups()
    if suffix in _V1_PERMISSIONS:
        return Scope(context, resource_type, _V1_PERMISSIONS[suffix])
    if set(suffix) - set(PERMISSIONS) or len(set(suffix)) != len(suffix):
        raise ScopeError(f"malformed scope {text!r}; permissions are letters of 'cruds' or read, write, *")
    return Scope(context, resource_type, _canonical(suffix))


@dataclass(frozen=True)
class ScopeSet:
    """A normalised set of resource scopes: one entry per (context, type), sorted."""

    scopes: tuple[Scope, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> ScopeSet:
        """Parse space-separated scopes (or a list of them), ignoring non-resource scopes."""
        if text is None:
            return cls()
        items = text.split() if isinstance(text, str) else list(text)
        return cls.of(scope for scope in (parse_scope(item) for item in items) if scope is not None)

    @classmethod
    def of(cls, scopes: Iterable[Scope]) -> ScopeSet:
        """Merge scopes on the same context and type and drop those a wildcard scope already covers."""
        merged: dict[tuple[str, str], set[str]] = {}
        for scope in scopes:
            merged.setdefault((scope.context, scope.resource_type), set()).update(scope.permissions)
        result = []
        for (context, resource_type), letters in merged.items():
            wildcard = merged.get((context, ALL_TYPES), set())
            if resource_type != ALL_TYPES and letters <= wildcard:
                continue
            result.append(Scope(context, resource_type, _canonical(letters)))
        return cls(tuple(sorted(result, key=lambda s: (CONTEXTS.index(s.context), s.resource_type != ALL_TYPES,
                                                      s.resource_type))))

    def __str__(self) -> str:
        return " ".join(str(scope) for scope in self.scopes)

    def __bool__(self) -> bool:
        return bool(self.scopes)

    def __iter__(self):
        return iter(self.scopes)

    def grants(self, resource_type: str, permission: str) -> bool:
        """Tell whether any scope grants the permission letter on resource_type."""
        return any(scope.grants(resource_type, permission) for scope in self.scopes)

    def intersect(self, other: ScopeSet) -> ScopeSet:
        """Return what both sets grant: ``system/*.rs`` and ``system/CarePlan.cruds`` give ``system/CarePlan.rs``."""
        granted = []
        for mine in self.scopes:
            for theirs in other.scopes:
                if mine.context != theirs.context:
                    continue
                if mine.resource_type == ALL_TYPES:
                    resource_type = theirs.resource_type
                elif theirs.resource_type in (ALL_TYPES, mine.resource_type):
                    resource_type = mine.resource_type
                else:
                    continue
                letters = set(mine.permissions) & set(theirs.permissions)
                if letters:
                    granted.append(Scope(mine.context, resource_type, _canonical(letters)))
        return ScopeSet.of(granted)


def grant(requested: str | None, registered: ScopeSet) -> ScopeSet:
    """Return the scopes to grant a client: what it asks for within what it is registered for (all when it asks none).

    Raises ScopeError when a requested scope is malformed. The result may be empty; the caller answers invalid_scope.
    """
    if requested is None or not requested.strip():
        return registered
    return ScopeSet.parse(requested).intersect(registered)


# -- what each interaction needs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """Permission letters a request needs on one resource type (``*``: on every type, i.e. a wildcard scope)."""

    resource_type: str
    permissions: str

    def __str__(self) -> str:
        return f"{self.resource_type}.{self.permissions}"


@dataclass(frozen=True)
class Rule:
    """How an endpoint's needs are worked out.

    target: ``type`` the resource type in the URL; ``all`` a wildcard scope; ``_type`` each type named in the _type
    parameter (a wildcard scope without it); ``compartment`` the type searched in a compartment (``*``: all);
    ``everything`` read on the resource plus the permissions on each _type (or all types); ``bundle`` each entry of
    a transaction or batch Bundle; ``none`` no scope (any valid token will do); ``method`` the fixed needs listed
    for the request's HTTP method in ``methods`` (a method not listed needs everything; see ``per_method``).
    """

    permissions: str
    target: str = "type"
    methods: tuple[tuple[str, tuple[Need, ...]], ...] = ()


def per_method(**needs: str) -> Rule:
    """Return the rule of an /api/v1 endpoint from the FHIR types each HTTP method reads or writes.

    ``per_method(GET="Patient.rs", POST="Patient.c EpisodeOfCare.c")``: each value is space-separated
    ``Type.letters``; HEAD needs what GET needs; a method not named needs every permission (fail closed).
    """
    methods = []
    for method, text in needs.items():
        merged: dict[str, set[str]] = {}
        for item in text.split():
            resource_type, _, letters = item.partition(".")
            if not (resource_type == ALL_TYPES or _RESOURCE_TYPE.match(resource_type)) or not letters \
                    or set(letters) - set(PERMISSIONS):
                raise ScopeError(f"malformed need {item!r}; expected e.g. CarePlan.rs")
            merged.setdefault(resource_type, set()).update(letters)
        methods.append((method.upper(), tuple(Need(t, _canonical(p)) for t, p in merged.items())))
    return Rule("", "method", tuple(methods))


# Keyed by the FHIR interaction code, which api/fhir/blueprint.py also uses as the endpoint name.
FHIR_RULES: Mapping[str, Rule] = {
    "read": Rule("r"),
    "vread": Rule("r"),
    "history-instance": Rule("r"),
    "search-type": Rule("s"),
    "search-type-post": Rule("s"),
    "history-type": Rule("s"),
    "create": Rule("c"),
    "update": Rule("u"),
    "patch": Rule("u"),
    "delete": Rule("d"),
    # A conditional update creates when nothing matches, and which happens is only known inside the transaction.
    "conditional-update": Rule("cu"),
    "conditional-patch": Rule("u"),
    "conditional-delete": Rule("d"),
    "history-system": Rule("s", "all"),
    "search-system": Rule("s", "_type"),
    "search-system-get": Rule("s", "_type"),
    "search-system-post": Rule("s", "_type"),
    "search-compartment": Rule("s", "compartment"),
    "everything": Rule("s", "everything"),
    "evaluate-measure": Rule("r"),  # Measure/{id}/$evaluate-measure (issue 8)
    "transaction": Rule("", "bundle"),
    "batch": Rule("", "bundle"),
    "capabilities": Rule("", "none"),
}

# The coordination API (/api/v1) adds its endpoints here as it is built: endpoint name -> Rule.
API_V1_RULES: dict[str, Rule] = {
    # Issue 5 blueprints (patients, care plans, worklist, partners, practices): the FHIR types each method reads
    # (r by id, s by search) or writes, including what the service checks on the way (e.g. the patient it reads).
    "v1_patients.Patients": per_method(GET="Patient.s", POST="Patient.c EpisodeOfCare.c"),
    "v1_patients.PatientById": per_method(GET="Patient.r"),
    "v1_patients.PatientSummary": per_method(GET="Patient.r CarePlan.s Goal.s CareTeam.r Task.s EpisodeOfCare.s"),
    "v1_care_plans.PatientCarePlans": per_method(
        GET="Patient.r CarePlan.s",
        POST="Patient.r PlanDefinition.rs CarePlan.cs CareTeam.c Goal.c Condition.c"),
    "v1_care_plans.CarePlanById": per_method(GET="CarePlan.r"),
    "v1_care_plans.CarePlanStatus": per_method(POST="CarePlan.rsu"),
    "v1_care_plans.Activities": per_method(POST="CarePlan.ru PlanDefinition.rs"),
    "v1_care_plans.ActivityById": per_method(PATCH="CarePlan.ru", DELETE="CarePlan.ru"),
    "v1_care_plans.Goals": per_method(POST="CarePlan.ru Goal.c"),
    "v1_care_plans.GoalById": per_method(PATCH="CarePlan.r Goal.ru", DELETE="CarePlan.ru Goal.ru"),
    "v1_care_plans.TeamMembers": per_method(POST="CarePlan.r CareTeam.ru"),
    "v1_care_plans.TeamMemberById": per_method(DELETE="CarePlan.r CareTeam.ru"),
    "v1_care_plans.Concerns": per_method(POST="CarePlan.ru Condition.c"),
    "v1_care_plans.ConcernById": per_method(DELETE="CarePlan.ru"),
    "v1_worklist.Worklist": per_method(GET="CarePlan.s CareTeam.r Goal.s Task.s PlanDefinition.s"),
    "v1_partners.Partners": per_method(GET="HealthcareService.s Organization.r Location.r"),
    "v1_practices.Practices": per_method(GET="PlanDefinition.s"),
    "v1_practices.PracticeById": per_method(GET="PlanDefinition.r", PATCH="PlanDefinition.ru"),
    # End of the issue 5 block.
    # Issue 6 referrals, coordinator side (api/v1/referrals.py).
    "v1_referrals.Referrals": per_method(
        GET="Task.rs ServiceRequest.r Organization.r",
        POST="CarePlan.ru Patient.r Consent.r HealthcareService.s Organization.r Location.r ServiceRequest.c Task.c"),
    "v1_referrals.ReferralById": per_method(GET="Task.r ServiceRequest.r Organization.r"),
    "v1_referrals.ReferralCancel": per_method(POST="Task.ru ServiceRequest.ru Organization.r"),
    "v1_referrals.ReferralReRefer": per_method(
        POST="Task.rc ServiceRequest.rcu CarePlan.ru Patient.r HealthcareService.s Organization.r Location.r"),
    "v1_referrals.ReferralMessages": per_method(GET="Task.r Communication.s", POST="Task.r Communication.c"),
    # Issue 6 referrals, partner side (api/v1/partner.py): within the partner's default scopes.
    "v1_partner.Inbox": per_method(GET="Task.rs ServiceRequest.r Patient.r"),
    "v1_partner.PartnerReferralById": per_method(GET="Task.r ServiceRequest.r Patient.r"),
    **{f"v1_partner.Partner{action}": per_method(POST="Task.ru ServiceRequest.r Patient.r") for action in (
        "Accept", "Decline", "Start", "Hold", "Resume", "Complete", "Fail", "Cancel", "BusinessStatus")},
    "v1_partner.PartnerMessages": per_method(GET="Task.r Communication.s", POST="Task.r Communication.c"),
    # End of the issue 6 block.
    # Issue 7 reminders (api/v1/reminders.py, inbox.py, notifications.py). Reminder rows and settings are no FHIR
    # type, but reminders reach people as Communications: reading them needs Communication search, changing how they
    # are delivered needs Communication update. The services also filter by caller (deliveries: admins only).
    "v1_reminders.Reminders": per_method(GET="Communication.s"),
    "v1_reminders.Deliveries": per_method(GET="*.s"),
    "v1_reminders.Requeue": per_method(POST="*.u"),
    "v1_inbox.Inbox": per_method(GET="Communication.s"),
    "v1_inbox.MarkRead": per_method(POST="Communication.ru"),
    "v1_inbox.MarkDone": per_method(POST="Communication.ru"),
    "v1_notifications.Settings": per_method(GET="Communication.r", PUT="Communication.u"),
    "v1_notifications.Channels": per_method(POST="Communication.u"),
    "v1_notifications.ChannelById": per_method(DELETE="Communication.u"),
    # End of the issue 7 reminders block.
    # Issue 8 measures (api/v1/measures.py): aggregates need read on Measure; the drill-down reads each member.
    "v1_measures.Measures": per_method(GET="Measure.rs"),
    "v1_measures.MeasureById": per_method(GET="Measure.r"),
    "v1_measures.MeasureChartPng": per_method(GET="Measure.r"),
    "v1_measures.MeasureChartSvg": per_method(GET="Measure.r"),
    "v1_measures.MeasureMembers": per_method(GET="Measure.r Patient.r Task.r CarePlan.r Encounter.r Goal.r"),
    "dashboard.show": per_method(GET="Measure.rs"),  # api/dashboard.py: every measure's aggregates, like Measures
    # End of the issue 8 measures block.
}

# Anything routed but not in a table needs every permission on every type: a new route is never left open.
FAIL_CLOSED = Rule(PERMISSIONS, "all")


def needs_for(rule: Rule, *, view_args: Mapping[str, str] | None = None, type_parameter: str | None = None,
              bundle: object = None, base_url: str | None = None, method: str | None = None) -> list[Need]:
    """Return what a request to an endpoint with this rule needs (view_args: the URL's variables)."""
    view_args = view_args or {}
    if rule.target == "none":
        return []
    if rule.target == "method":
        listed = dict(rule.methods)
        method = (method or "").upper()
        found = listed.get("GET" if method == "HEAD" and "HEAD" not in listed else method)
        return list(found) if found is not None else [Need(ALL_TYPES, PERMISSIONS)]
    if rule.target == "type":
        return [Need(_type_or_all(view_args.get("resource_type")), rule.permissions)]
    if rule.target == "_type":
        return _each_type(type_parameter, rule.permissions)
    if rule.target == "compartment":
        return [Need(_type_or_all(view_args.get("compartment_type")), rule.permissions)]
    if rule.target == "everything":
        return _merge([Need(_type_or_all(view_args.get("resource_type")), "r"),
                       *_each_type(type_parameter, rule.permissions)])
    if rule.target == "bundle":
        return bundle_needs(bundle, base_url=base_url)
    return [Need(ALL_TYPES, rule.permissions)]


def _type_or_all(resource_type: str | None) -> str:
    return resource_type if resource_type and _RESOURCE_TYPE.match(resource_type) else ALL_TYPES


def _each_type(type_parameter: str | None, permissions: str) -> list[Need]:
    types = [t.strip() for t in (type_parameter or "").split(",") if t.strip()]
    if not types or not all(_RESOURCE_TYPE.match(t) for t in types):
        return [Need(ALL_TYPES, permissions)]
    return [Need(t, permissions) for t in dict.fromkeys(types)]


def bundle_needs(bundle: object, *, base_url: str | None = None) -> list[Need]:
    """Return what each entry of a transaction or batch Bundle needs; an entry not understood needs everything.

    base_url: this server's FHIR base, which entries may use as the prefix of an absolute request URL.
    """
    everything = [Need(ALL_TYPES, PERMISSIONS)]
    if not isinstance(bundle, dict) or not isinstance(bundle.get("entry", []), list):
        return everything
    needs: list[Need] = []
    for entry in bundle.get("entry", []):
        entry_needs = _entry_needs(entry, base_url)
        if entry_needs is None:
            return everything
        needs.extend(entry_needs)
    return _merge(needs)


def _entry_needs(entry: object, base_url: str | None) -> list[Need] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        return None
    method = entry["request"].get("method")
    url = entry["request"].get("url")
    if not isinstance(method, str) or not isinstance(url, str):
        return None
    if base_url and url.startswith(base_url.rstrip("/") + "/"):
        url = url[len(base_url.rstrip("/")) + 1:]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return None  # an absolute URL may name another server's base: not worth guessing
    segments = [s for s in parts.path.split("/") if s]
    conditional = bool(parts.query)
    letters = _entry_permissions(method.upper(), segments, conditional, parse_qs(parts.query))
    if letters is None:
        return None
    resource_type, permissions = letters
    needs = [Need(resource_type, permissions)]
    resource = entry.get("resource")
    if isinstance(resource, dict) and resource.get("resourceType") != resource_type:
        # The body's type is what gets written, whatever the URL says.
        body_type = resource.get("resourceType")
        if not isinstance(body_type, str) or not _RESOURCE_TYPE.match(body_type):
            return None
        needs.append(Need(body_type, permissions))
    return needs


def _entry_permissions(method: str, segments: list[str], conditional: bool,
                       query: dict[str, list[str]]) -> tuple[str, str] | None:
    if not segments:
        if method == "GET" and conditional:  # system search: GET ?_type=...
            types = query.get("_type", [""])[0]
            return (types, "s") if _RESOURCE_TYPE.match(types) else (ALL_TYPES, "s")
        return None
    if segments == ["_history"] and method == "GET":
        return ALL_TYPES, "s"
    resource_type = segments[0]
    if not _RESOURCE_TYPE.match(resource_type):
        return None
    rest = segments[1:]
    if method == "GET":
        if not rest or rest in (["_history"], ["_search"]):
            return resource_type, "s"
        if len(rest) == 1 or (len(rest) in (2, 3) and rest[1] == "_history"):
            return resource_type, "r"
        return None
    if method == "POST":
        if not rest:
            return resource_type, "c"
        if rest == ["_search"]:
            return resource_type, "s"
        return None
    if method in ("PUT", "PATCH", "DELETE"):
        if len(rest) == 1 and not conditional:
            return resource_type, {"PUT": "u", "PATCH": "u", "DELETE": "d"}[method]
        if not rest and conditional:
            return resource_type, {"PUT": "cu", "PATCH": "u", "DELETE": "d"}[method]
        return None
    return None


def _merge(needs: list[Need]) -> list[Need]:
    merged: dict[str, set[str]] = {}
    for need in needs:
        merged.setdefault(need.resource_type, set()).update(need.permissions)
    return [Need(t, _canonical(p)) for t, p in merged.items()]


def missing(scopes: ScopeSet, needs: Iterable[Need]) -> list[Need]:
    """Return the needs the scopes do not meet (empty when the request is allowed)."""
    result = []
    for need in needs:
        lacking = "".join(p for p in need.permissions if not scopes.grants(need.resource_type, p))
        if lacking:
            result.append(Need(need.resource_type, lacking))
    return result


def grants_everything(scopes: ScopeSet) -> bool:
    """Tell whether the scopes grant every permission on every type (``system/*.cruds`` or ``user/*.cruds``)."""
    return not missing(scopes, [Need(ALL_TYPES, PERMISSIONS)])
