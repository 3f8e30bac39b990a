"""Run each protected request as its caller, and audit every access to patient data and every denied attempt.

Authentication (api.auth) has put the caller in ``g.principal``; this module turns it into the request context
that the store, search and bundle code consult (careplan.security.context), handles the documented break-glass
purpose of use, and after the response writes the AuditEvent of reads and refusals (writes are audited inside
their own transaction by the store).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request

from api.auth import current_principal, is_protected
from api.database import get_db
from careplan.errors import Forbidden
from careplan.models import utcnow
from careplan.security import audit, context, policy
from careplan.security.policy import DIRECTORY_TYPES

log = logging.getLogger(__name__)

PURPOSE_HEADER = "X-Careplan-Purpose-Of-Use"
BREAK_GLASS_REASON_HEADER = "X-Careplan-Break-Glass-Reason"
REDISCLOSURE_HEADER = "X-Careplan-Redisclosure-Notice"
# 42 CFR 2.32(a)(2), the short form of the notice that must accompany a disclosure of substance-use records.
REDISCLOSURE_NOTICE = "42 CFR part 2 prohibits unauthorized disclosure of these records."
ALLOWED_PURPOSES = frozenset({"TREAT", "HOPERAT", "HPAYMT", "ETREAT", audit.BREAK_GLASS})
ANONYMOUS = audit.Actor(subject="anonymous", issuer="none", role="anonymous")
_CONTEXT_TOKEN = "careplan_context_token"


def init_app(app: Flask) -> None:
    """Register the hooks; call after api.auth.init_app so authentication runs first."""
    app.before_request(enter_context)
    app.after_request(audit_response)
    app.teardown_request(leave_context)


def enter_context() -> None:
    """Set the request context for an authenticated caller."""
    principal = current_principal()
    if principal is None:
        return
    purpose = request.headers.get(PURPOSE_HEADER, "TREAT").strip().upper()
    reason = (request.headers.get(BREAK_GLASS_REASON_HEADER) or "").strip() or None
    actor = audit.Actor(subject=principal.subject, issuer=principal.issuer, role=principal.role,
                        organization=principal.organization, address=request.remote_addr)
    references = frozenset({f"Practitioner/{principal.subject}"} if principal.kind == "user" else ())
    caller = policy.Caller(principal.role, principal.organization, references,
                           break_glass=purpose == audit.BREAK_GLASS)
    current = context.RequestContext(caller=caller, actor=actor, purpose_of_use=(purpose,),
                                     break_glass_reason=reason)
    g.setdefault(_CONTEXT_TOKEN, context.enter(current))
    if purpose not in ALLOWED_PURPOSES:
        raise Forbidden(f"Unknown purpose of use {purpose!r}; use one of {', '.join(sorted(ALLOWED_PURPOSES))}")
    if purpose == audit.BREAK_GLASS:
        if principal.role != "coordinator":
            raise Forbidden("Only care coordinators may break the glass")
        if reason is None:
            raise Forbidden(f"Breaking the glass needs a justification in {BREAK_GLASS_REASON_HEADER}")
        log.warning("break-glass access by a coordinator of %s", principal.organization or "no organization")


def leave_context(_error=None) -> None:
    """Clear the request context."""
    token = g.pop(_CONTEXT_TOKEN, None)
    if token is not None:
        context.leave(token)


def audit_response(response: Response) -> Response:
    """Write the AuditEvent of a read, a search or a refusal, and attach the redisclosure notice."""
    if not is_protected(request.path, request.method):
        return response
    current = context.current()
    if current is not None and current.redisclosure_notice:
        response.headers[REDISCLOSURE_HEADER] = REDISCLOSURE_NOTICE
    write = request.method in ("POST", "PUT", "PATCH", "DELETE") and not request.path.endswith("/_search")
    if write and response.status_code < 400 and current is not None and current.audited_writes \
            and not current.touched_by_reads():
        return response  # audited with the write, in its transaction
    if response.status_code < 400 and not _touches_patient_data(current):
        return response
    try:
        _record(current, response.status_code)
    except Exception as exc:  # noqa: BLE001 - a failing audit write must be visible, not a silent gap
        log.error("could not write the AuditEvent of %s %s: %s", request.method, request.url_rule,
                  type(exc).__name__)
        return Response(status=503)
    return response


def _touches_patient_data(current: context.RequestContext | None) -> bool:
    if current is None:
        return True
    resource_type = (request.view_args or {}).get("resource_type")
    if resource_type is not None and resource_type not in DIRECTORY_TYPES:
        return True
    if resource_type is None and request.url_rule is not None and request.url_rule.endpoint != "fhir.capabilities":
        return True  # system-level history, search, transaction and batch can reach anything
    return any(ref.split("/", 1)[0] not in DIRECTORY_TYPES for ref in current.touched)


def _record(current: context.RequestContext | None, status: int) -> None:
    endpoint = request.url_rule.endpoint.rsplit(".", 1)[-1] if request.url_rule is not None else "unknown"
    outcome = audit.OUTCOME_SUCCESS if status < 400 else (
        audit.OUTCOME_MINOR_FAILURE if status < 500 else audit.OUTCOME_SERIOUS_FAILURE)
    query = request.query_string.decode("utf-8", "replace") if request.query_string else None
    resources, patients = (), ()
    if current is not None:
        resources = tuple(r for r in current.touched if r not in current.audited_writes)[:200]
        patients = tuple(current.patients)[:200]
    event = audit.audit_event(audit.Access(
        interaction=endpoint, actor=current.actor if current else _anonymous(), recorded=utcnow(),
        outcome=outcome, outcome_description=None if status < 400 else f"HTTP {status}",
        resources=resources, patients=patients, query=f"{request.path}?{query}" if query else request.path,
        purpose_of_use=current.purpose_of_use if current else (),
        break_glass_reason=current.break_glass_reason if current else None))
    from careplan.store import repository

    with get_db().writing() as session:
        repository.insert(session, event, resource_id=repository.new_id(),
                          now=repository.transaction_time(session), method="POST")


def _anonymous() -> audit.Actor:
    return audit.Actor(subject="anonymous", issuer="none", role="anonymous", address=request.remote_addr)
