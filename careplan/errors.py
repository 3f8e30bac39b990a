"""FHIR-facing domain errors: each carries an HTTP status and OperationOutcome issues."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome issue: what went wrong, and where (a FHIRPath expression) when it applies."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: str = "error"

    def to_fhir(self) -> dict:
        issue = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


class FhirError(Exception):
    """An error answered to the client as an OperationOutcome."""

    status = 400
    code = "processing"

    def __init__(self, diagnostics: str | None = None, *, issues: list[Issue] | None = None,
                 expression: str | None = None, code: str | None = None):
        if issues is None:
            issues = [Issue(code or self.code, diagnostics or self.__class__.__doc__ or "", expression)]
        self.issues = issues
        super().__init__("; ".join(i.diagnostics for i in issues))

    def operation_outcome(self) -> dict:
        """Return this error as an OperationOutcome resource."""
        return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in self.issues]}


class InvalidRequest(FhirError):
    """The request is malformed."""

    status, code = 400, "invalid"


class InvalidResource(FhirError):
    """The resource does not conform to FHIR R4."""

    status, code = 400, "invalid"


class NotFound(FhirError):
    """The resource does not exist."""

    status, code = 404, "not-found"


class UnknownResourceType(FhirError):
    """The resource type is not supported by this server."""

    status, code = 404, "not-supported"


class MethodNotAllowed(FhirError):
    """The interaction is not supported on this path."""

    status, code = 405, "not-supported"


class Gone(FhirError):
    """The resource was deleted."""

    status, code = 410, "deleted"


class VersionConflict(FhirError):
    """The resource changed since the version the client based its change on."""

    status, code = 409, "conflict"


class PreconditionFailed(FhirError):
    """A conditional request's precondition does not hold."""

    status, code = 412, "conflict"


class MultipleMatches(FhirError):
    """The conditional criteria match more than one resource."""

    status, code = 412, "multiple-matches"


class Forbidden(FhirError):
    """The caller may not do this."""

    status, code = 403, "forbidden"


class UnprocessableEntity(FhirError):
    """The resource is valid FHIR but breaks a business rule."""

    status, code = 422, "business-rule"


class UnsupportedMediaType(FhirError):
    """The request body is in a format this server does not read."""

    status, code = 415, "not-supported"


class NotAcceptable(FhirError):
    """No representation the client accepts can be produced."""

    status, code = 406, "not-supported"


class PayloadTooLarge(FhirError):
    """The request body is larger than this server accepts."""

    status, code = 413, "too-long"
