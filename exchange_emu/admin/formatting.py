"""Exchange Management Shell output: ``Format-Table`` (the cmdlets' default columns) and
``Format-List`` (every property, ``Name : Value``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_WIDTH = 60
"""A column is cut to this many characters, ending in ``...`` as the shell does."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a table: a header, a dashed rule, one line per row; "" when there is none."""
    if not rows:
        return ""
    cells = [[_cut(_text(row.get(c)), MAX_WIDTH) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return " ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(columns), line(["-" * len(c) for c in columns])]
    out.extend(line(values) for values in cells)
    return "\n".join(out) + "\n"


def format_list(rows: Sequence[Mapping[str, Any]]) -> str:
    """Each row as ``Name : Value`` lines, rows separated by a blank line."""
    blocks = []
    for row in rows:
        width = max((len(k) for k in row), default=0)
        blocks.append("\n".join(f"{k.ljust(width)} : {_text(v)}" for k, v in row.items()))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
