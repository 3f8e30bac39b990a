"""Index values extracted from a resource for one search parameter; the store maps each to a table."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class TokenIndex:
    """A code-like value: Coding, CodeableConcept coding, Identifier, ContactPoint, code or boolean."""

    param: str
    system: str | None
    code: str | None
    text: str | None


@dataclass(frozen=True)
class StringIndex:
    """A string, or one part of a HumanName or Address, with its accent- and case-free form."""

    param: str
    value: str
    normalized: str


@dataclass(frozen=True)
class DateIndex:
    """The UTC range covered by a date, dateTime, instant, Period or Timing."""

    param: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class ReferenceIndex:
    """A reference to a resource, by type and id when they can be read, and by url when absolute."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass(frozen=True)
class NumberIndex:
    """A decimal or integer value, exactly as written in the resource."""

    param: str
    value: Decimal


@dataclass(frozen=True)
class QuantityIndex:
    """A Quantity (or Age, Duration...) value, exactly as written, with its unit."""

    param: str
    value: Decimal
    system: str | None
    code: str | None
    unit: str | None


@dataclass(frozen=True)
class UriIndex:
    """A uri, url or canonical value."""

    param: str
    uri: str


IndexValue = TokenIndex | StringIndex | DateIndex | ReferenceIndex | NumberIndex | QuantityIndex | UriIndex
