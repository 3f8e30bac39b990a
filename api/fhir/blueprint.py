"""The /fhir blueprint: every FHIR interaction this server implements, registered in one table.

The CapabilityStatement is generated from INTERACTIONS, so it never promises what is not routed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import Blueprint

from api.fhir import capabilities, create, delete, history, patch, read, update, vread
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
)

bp = Blueprint("fhir", __name__, url_prefix="/fhir")
bp.before_request(check_acceptable)

for interaction in INTERACTIONS:
    bp.add_url_rule(interaction.rule, endpoint=interaction.code, view_func=interaction.view,
                    methods=[interaction.method])

capabilities.INTERACTIONS = INTERACTIONS
