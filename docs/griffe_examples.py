"""Griffe extension for the API reference: camoe's docstrings head their doctests ``Example:`` (one example, Google
style); griffe reads only ``Examples:`` as an examples section and would render the doctest lines as Markdown prose.
This renames the heading before the docstring is parsed, keeping a parenthesised title as the section's first line:
``Example (the README's Python API):`` becomes ``Examples:`` followed by ``The README's Python API:``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example(?: \((?P<title>[^)\n]*(?:\([^)\n]*\)[^)\n]*)*)\))?:[ \t]*$",
                      re.MULTILINE)


def _rename(match: re.Match[str]) -> str:
    indent, title = match["indent"], match["title"]
    if not title:
        return f"{indent}Examples:"
    return f"{indent}Examples:\n{indent}    {title[0].upper()}{title[1:]}:"


class ExampleSections(griffe.Extension):
    """Read ``Example:`` like ``Examples:`` (doctests rendered as code)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(_rename, obj.docstring.value)
