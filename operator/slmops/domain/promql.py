"""PromQL templates: `{{variable}}` placeholders filled with rollout facts.

Rendering is plain substitution of a fixed set of names. An unknown name is an error (not
an empty string), because a query that silently lost a label matcher measures the whole
fleet and passes for the wrong reason. Values are escaped for PromQL string literals, so
a value can never close the literal and inject a matcher.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

VARIABLES = frozenset(
    {"rollout", "namespace", "revision", "stableRevision", "variant", "hardwareClass", "wave"}
)

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)?\s*\}\}")


class TemplateError(ValueError):
    """A template that cannot be rendered; the message names the problem and position."""


def variables_in(template: str) -> set[str]:
    """Names used in the template; raises TemplateError for malformed placeholders."""
    return {name for name, _ in _scan(template)}


def validate(template: str) -> None:
    """Raise TemplateError unless every placeholder names a known variable."""
    for name, position in _scan(template):
        if name not in VARIABLES:
            raise TemplateError(
                f"unknown template variable {{{{{name}}}}} at character {position};"
                f" known: {', '.join(sorted(VARIABLES))}"
            )


def render(template: str, variables: Mapping[str, str]) -> str:
    """The query with every placeholder replaced by its escaped value."""
    validate(template)
    for name, position in _scan(template):
        if name not in variables:
            raise TemplateError(
                f"template variable {{{{{name}}}}} at character {position} has no value here"
            )
    return _PLACEHOLDER.sub(lambda m: escape(variables[m.group(1)]), template)


def escape(value: str) -> str:
    """value as the inside of a PromQL string literal ("…" or '…')."""
    return (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )


def _scan(template: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    position = 0
    while (start := template.find("{{", position)) != -1:
        match = _PLACEHOLDER.match(template, start)
        if match is None:
            end = template.find("}}", start)
            if end == -1:
                raise TemplateError(f"unclosed '{{{{' at character {start}")
            raise TemplateError(
                f"malformed placeholder {template[start : end + 2]!r} at character {start};"
                " write {{name}} with a variable name"
            )
        if match.group(1) is None:
            raise TemplateError(f"empty placeholder at character {start}")
        found.append((match.group(1), start))
        position = match.end()
    return found
