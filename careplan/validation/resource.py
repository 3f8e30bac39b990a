"""Validate a FHIR R4 resource given as parsed JSON, reporting every problem with its FHIRPath location."""

from __future__ import annotations

import re
from functools import lru_cache

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from careplan.errors import InvalidResource, Issue, UnknownResourceType
from careplan.resources import is_supported
from careplan.validation.bindings import check_required_bindings

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# The FHIR JSON rules pydantic does not check: no nulls, no empty objects, arrays or strings.
_PYDANTIC_CODES = {
    "missing": "required",
    "model_field_validation.missing": "required",
    "extra_forbidden": "structure",
}


@lru_cache(maxsize=None)
def _model_class(resource_type: str):
    return get_fhir_model_class(resource_type)


def validate_resource(resource: object, *, expected_type: str | None = None) -> str:
    """Check resource is a valid FHIR R4 resource of a supported type and return its type; raise InvalidResource."""
    if not isinstance(resource, dict):
        raise InvalidResource("The body must be a JSON object holding a FHIR resource", code="structure")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource("The resource has no resourceType", code="required", expression="resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise InvalidResource(
            f"resourceType {resource_type!r} does not match the {expected_type!r} in the URL",
            expression="resourceType",
        )
    if not is_supported(resource_type):
        raise UnknownResourceType(f"Resource type {resource_type!r} is not supported by this server")
    issues = list(_json_rule_issues(resource, resource_type))
    if "id" in resource and (not isinstance(resource["id"], str) or not ID_PATTERN.match(resource["id"])):
        issues.append(Issue("value", "id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'", f"{resource_type}.id"))
    if not issues:
        issues.extend(_model_issues(resource, resource_type))
    if not issues:
        issues.extend(
            Issue("code-invalid", b.message, b.expression) for b in check_required_bindings(resource)
        )
    if issues:
        raise InvalidResource(issues=issues)
    return resource_type


def _model_issues(resource: dict, resource_type: str) -> list[Issue]:
    try:
        _model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        return [
            Issue(
                _PYDANTIC_CODES.get(error["type"], "value" if error["loc"] else "structure"),
                _message(error),
                fhirpath(resource_type, error["loc"]),
            )
            for error in exc.errors(include_url=False)
        ]
    except (TypeError, ValueError) as exc:  # a few fhir.resources validators raise plain errors
        return [Issue("structure", str(exc), resource_type)]
    return []


def _message(error: dict) -> str:
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"Unknown element {error['loc'][-1]!r}"
    return message.removeprefix("Value error, ")


def fhirpath(resource_type: str, loc: tuple) -> str:
    """Turn a pydantic error location into a FHIRPath expression such as CarePlan.activity[0].detail."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


def _json_rule_issues(value, path: str):
    if isinstance(value, dict):
        if not value:
            yield Issue("structure", "Empty objects are not allowed in FHIR JSON", path)
        for key, item in value.items():
            yield from _json_rule_issues(item, f"{path}.{key}")
    elif isinstance(value, list):
        if not value:
            yield Issue("structure", "Empty arrays are not allowed in FHIR JSON", path)
        for index, item in enumerate(value):
            # In a primitive's "_x" extension array null is a legal placeholder.
            if item is None and not path.rsplit(".", 1)[-1].startswith("_"):
                yield Issue("structure", "null is not allowed in FHIR JSON", f"{path}[{index}]")
            else:
                yield from _json_rule_issues(item, f"{path}[{index}]")
    elif value is None:
        yield Issue("structure", "null is not allowed in FHIR JSON", path)
    elif isinstance(value, str) and not value.strip():
        yield Issue("value", "Empty or whitespace-only strings are not allowed in FHIR JSON", path)
