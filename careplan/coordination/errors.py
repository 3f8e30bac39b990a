"""Domain errors of the coordination services; the web layer turns each into its HTTP status."""

from __future__ import annotations


class CoordinationError(Exception):
    """A request the coordination services cannot carry out."""

    status = 400

    def __init__(self, message: str, *, errors: dict | None = None, location: str = "json"):
        super().__init__(message)
        self.message = message
        self.errors = errors or {}  # field-level messages, by field
        self.location = location  # where the fields are: json (the body) or query


class NotFound(CoordinationError):
    """What the request names does not exist or is not visible to the caller."""

    status = 404


class RuleViolation(CoordinationError):
    """The request is well formed but breaks a care-coordination rule (e.g. a status transition)."""

    status = 422


class Conflict(CoordinationError):
    """The request conflicts with the current state of what it changes (a broken business rule is a RuleViolation)."""

    status = 409
