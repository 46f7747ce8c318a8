"""Prompt templates: `Summarize: {text}` filled from one row's columns.

The `{column}` syntax is Python's own format-string syntax, parsed by the standard library
(`string.Formatter().parse`), chosen over Jinja2 because it is what people already write
("Summarize: {text}"), needs no dependency, and can only place values, never run code:
each field is looked up as a column name verbatim, so `{x.__class__}` or `{x[0]}` names a
column (that no row has) instead of reaching into Python objects. A format spec formats
the value (`{price:>8}`); `{{` and `}}` are literal braces. Conditionals are left to the
data: a column can hold a whole sentence or nothing.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchline.errors import JobRefused

CONVERSIONS = {None: None, "s": str, "r": repr, "a": ascii}


class RowRefused(Exception):
    """Raised when a row cannot fill a template: the reason names the column."""


@dataclass(frozen=True)
class Field:
    """One `{column:spec}` of a template."""

    column: str
    spec: str
    conversion: str | None


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and fields, in order."""

    text: str
    parts: tuple[str | Field, ...]

    @classmethod
    def parse(cls, text: str, what: str = "template") -> Template:
        """Parse once per job; a template that cannot be used refuses the job."""
        if not isinstance(text, str) or not text:
            raise JobRefused(f"{what} must be a non-empty string")
        parts: list[str | Field] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            why = f"{what} is not valid: {exc} (write {{{{ and }}}} for a brace)"
            raise JobRefused(why) from None
        for literal, name, spec, conversion in parsed:
            if literal:
                parts.append(literal)
            if name is None:
                continue
            if name == "":
                raise JobRefused(f"{what} has an empty field {{}}: name a column, as in {{text}}")
            if spec and ("{" in spec or "}" in spec):
                raise JobRefused(f"{what}: the format of {{{name}}} cannot hold another field")
            if conversion not in CONVERSIONS:
                raise JobRefused(f"{what}: unknown conversion !{conversion} in {{{name}}}")
            parts.append(Field(name, spec or "", conversion))
        if not any(isinstance(p, Field) for p in parts):
            raise JobRefused(f"{what} names no column: write one as {{column}}")
        return cls(text, tuple(parts))

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the template names, each once, in order."""
        seen = dict.fromkeys(p.column for p in self.parts if isinstance(p, Field))
        return tuple(seen)

    def render(self, row: Mapping[str, Any]) -> str:
        """The text for one row; RowRefused names a column the row lacks or cannot format."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.column not in row:
                raise RowRefused(f"missing column {part.column!r} (named in the template)")
            value = row[part.column]
            if value is None:
                raise RowRefused(f"column {part.column!r} is empty (null)")
            convert = CONVERSIONS[part.conversion]
            if convert is not None:
                value = convert(value)
            try:
                out.append(format(value, part.spec))
            except (ValueError, TypeError) as exc:
                raise RowRefused(
                    f"column {part.column!r}: {value!r} cannot be formatted as "
                    f"{{{part.column}:{part.spec}}} ({exc})"
                ) from None
        return "".join(out)
