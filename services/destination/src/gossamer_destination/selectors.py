"""Kubernetes label selectors (``matchLabels`` + ``matchExpressions``), evaluated in memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class InvalidSelectorError(ValueError):
    """A selector with an unknown operator or malformed expression."""


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """An empty selector matches everything, as in the Kubernetes API."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key = expr.get("key")
        op = expr.get("operator")
        values = expr.get("values") or []
        if not key:
            raise InvalidSelectorError("matchExpressions entry without key")
        if op == "In":
            if labels.get(key) not in values:
                return False
        elif op == "NotIn":
            if key in labels and labels[key] in values:
                return False
        elif op == "Exists":
            if key not in labels:
                return False
        elif op == "DoesNotExist":
            if key in labels:
                return False
        else:
            raise InvalidSelectorError(f"unknown selector operator {op!r}")
    return True
