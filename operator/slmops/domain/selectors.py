"""Kubernetes LabelSelector matching, so the operator decides fleet and wave membership
from node labels it already holds instead of asking the apiserver per selector."""

from __future__ import annotations

from collections.abc import Mapping

from slmops.api.v1alpha1.common import LabelSelector, LabelSelectorRequirement


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy every term of the selector (an empty selector matches all)."""
    # A subset test of item views runs in C for dicts; placement calls this for every
    # node and variant on every reconcile.
    if not selector.match_labels.items() <= labels.items():
        return False
    if not selector.match_expressions:
        return True
    return all(_requirement_holds(term, labels) for term in selector.match_expressions)


def _requirement_holds(term: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    if term.operator == "Exists":
        return term.key in labels
    if term.operator == "DoesNotExist":
        return term.key not in labels
    if term.operator == "In":
        return term.key in labels and labels[term.key] in term.values
    # NotIn also matches nodes without the key, as in Kubernetes.
    return labels.get(term.key) not in term.values if term.key in labels else True


def describe(selector: LabelSelector) -> str:
    """The selector in kubectl's `-l` syntax, for messages people can paste."""
    parts = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for term in selector.match_expressions:
        if term.operator == "Exists":
            parts.append(term.key)
        elif term.operator == "DoesNotExist":
            parts.append(f"!{term.key}")
        else:
            verb = "in" if term.operator == "In" else "notin"
            parts.append(f"{term.key} {verb} ({','.join(term.values)})")
    return ",".join(parts) if parts else "<all nodes>"
