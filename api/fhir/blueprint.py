"""The /fhir blueprint: every FHIR interaction this server implements, registered in one table.

The CapabilityStatement is generated from INTERACTIONS, so it never promises what is not routed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import Blueprint

from api.fhir import capabilities, create, delete, history, patch, read, update, vread
from api.fhir import evaluate_measure, everything, search
from api.fhir import transaction
from api.fhir.http import check_acceptable


@dataclass(frozen=True)
class Interaction:
    """One routed FHIR interaction: its CapabilityStatement code, level, URL rule, method and view."""

    code: str
    level: str  # "instance", "type" or "system"
    rule: str
    method: str
    view: Callable


INTERACTIONS: tuple[Interaction, ...] = (
    # One route serves both: the view dispatches on Bundle.type; both codes are listed for the CapabilityStatement.
    Interaction("transaction", "system", "", "POST", transaction.transaction),
    Interaction("batch", "system", "", "POST", transaction.transaction),
    Interaction("read", "instance", "/<resource_type>/<resource_id>", "GET", read.read),
    Interaction("vread", "instance", "/<resource_type>/<resource_id>/_history/<version_id>", "GET", vread.vread),
    Interaction("update", "instance", "/<resource_type>/<resource_id>", "PUT", update.update),
    Interaction("patch", "instance", "/<resource_type>/<resource_id>", "PATCH", patch.patch),
    Interaction("delete", "instance", "/<resource_type>/<resource_id>", "DELETE", delete.delete),
    Interaction("history-instance", "instance", "/<resource_type>/<resource_id>/_history", "GET",
                history.instance_history),
    Interaction("create", "type", "/<resource_type>", "POST", create.create),
    Interaction("conditional-update", "type", "/<resource_type>", "PUT", update.conditional_update),
    Interaction("conditional-delete", "type", "/<resource_type>", "DELETE", delete.conditional_delete),
    Interaction("history-type", "type", "/<resource_type>/_history", "GET", history.type_history),
    Interaction("history-system", "system", "/_history", "GET", history.system_history),
    Interaction("capabilities", "system", "/metadata", "GET", capabilities.metadata),
    Interaction("search-type", "type", "/<resource_type>", "GET", search.search_type),
    Interaction("search-type-post", "type", "/<resource_type>/_search", "POST", search.search_type_post),
    Interaction("search-system", "system", "", "GET", search.search_system),
    Interaction("search-system-get", "system", "/_search", "GET", search.search_system),
    Interaction("search-system-post", "system", "/_search", "POST", search.search_system_post),
    Interaction("search-compartment", "instance", "/<resource_type>/<resource_id>/<compartment_type>", "GET",
                search.search_compartment),
    Interaction("everything", "instance", "/<resource_type>/<resource_id>/$everything", "GET",
                everything.everything),
    Interaction("evaluate-measure", "instance", "/<resource_type>/<resource_id>/$evaluate-measure", "GET",
                evaluate_measure.evaluate_measure),
)

bp = Blueprint("fhir", __name__, url_prefix="/fhir")
bp.before_request(check_acceptable)

_routed: set[tuple[str, str]] = set()
for interaction in INTERACTIONS:
    if (interaction.rule, interaction.method) in _routed:
        continue  # a second code for a route already served (batch shares transaction's POST /fhir)
    _routed.add((interaction.rule, interaction.method))
    bp.add_url_rule(interaction.rule, endpoint=interaction.code, view_func=interaction.view,
                    methods=[interaction.method])

capabilities.INTERACTIONS = INTERACTIONS
