"""Parse and write FHIR JSON without losing decimal precision or accepting ambiguous input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson


class JSONSyntaxError(ValueError):
    """The body is not strict, unambiguous JSON."""


def _reject_constant(name: str) -> Any:
    raise JSONSyntaxError(f"{name} is not valid JSON")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            # Which of two values would win is undefined; refusing is the only safe answer for health data.
            raise JSONSyntaxError(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def loads(text: str | bytes) -> Any:
    """Parse strict JSON, keeping numbers with a fraction or exponent as Decimal."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONSyntaxError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return simplejson.loads(
            text,
            use_decimal=True,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except simplejson.JSONDecodeError as exc:
        raise JSONSyntaxError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JSONSyntaxError("JSON nested too deeply") from None


def dumps(value: Any, *, pretty: bool = False) -> str:
    """Write JSON, emitting Decimal values exactly as they were parsed."""
    if pretty:
        return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, indent=2)
    return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, separators=(",", ":"))


def loads_stored(text: str) -> Any:
    """Parse JSON the database gave back (trusted: no duplicate-key checks)."""
    return simplejson.loads(text, use_decimal=True)


__all__ = ["JSONSyntaxError", "loads", "dumps", "loads_stored", "Decimal"]
