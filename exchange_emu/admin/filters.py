"""The ``-Filter`` of Get-Queue and Get-Message: the subset of Exchange's OPath syntax the
emulator understands.

    {MessageCount -gt 5}
    {Status -eq "Retry" -and NextHopDomain -like "*.fabrikam.test"}

A filter is one or more comparisons ``Property -op Value`` joined by ``-and``, optionally in
braces. Operators: ``-eq -ne -gt -ge -lt -le -like -notlike`` (``-like`` takes ``*``
wildcards). Values are quoted strings, numbers, or bare words; string comparisons ignore case,
as Exchange's do. Anything else is a :class:`FilterError` whose text says what to write.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|(-[A-Za-z]+)|([^\s"']+))""")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "-eq": operator.eq, "-ne": operator.ne, "-gt": operator.gt, "-ge": operator.ge,
    "-lt": operator.lt, "-le": operator.le,
}
OPERATORS = (*_COMPARE, "-like", "-notlike")
EXAMPLE = '{Status -eq "Retry" -and MessageCount -gt 5}'


class FilterError(ValueError):
    """A filter the emulator cannot read; str() is one line saying what to do."""


@dataclass(frozen=True)
class Comparison:
    """``Property -op Value``; ``value`` is already of the property's type."""

    prop: str
    op: str
    value: Any

    def matches(self, row: Mapping[str, Any]) -> bool:
        actual = row.get(self.prop)
        if self.op in ("-like", "-notlike"):
            hit = fnmatch.fnmatchcase(str(actual or "").lower(), str(self.value).lower())
            return hit if self.op == "-like" else not hit
        if actual is None:
            return self.op == "-ne" if self.value is not None else self.op == "-eq"
        if isinstance(actual, str):
            actual = actual.lower()
        try:
            return _COMPARE[self.op](actual, self.value)
        except TypeError:
            return False


@dataclass(frozen=True)
class Filter:
    """Comparisons that must all hold (``-and``); the empty filter matches everything."""

    comparisons: tuple[Comparison, ...] = ()
    text: str = ""

    def matches(self, row: Mapping[str, Any]) -> bool:
        return all(c.matches(row) for c in self.comparisons)


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(token, quoted) pairs."""
    out: list[tuple[str, bool]] = []
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if match is None or match.end() == position:
            raise FilterError(f"cannot read the filter {text!r} at {stripped[position:]!r} "
                              f"(unbalanced quote?); write it like {EXAMPLE}")
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        if quoted is not None:
            out.append((quoted, True))
        else:
            out.append((match.group(3) or match.group(4), False))
        position = match.end()
    return out


def _convert(prop: str, kind: type, raw: str, quoted: bool, text: str) -> Any:
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise FilterError(f"{prop} is a number, not {raw!r}, in the filter {text!r}; "
                              f"write e.g. {{{prop} -gt 5}}") from None
    if not quoted and raw.lower() in ("$null", "null"):
        return None
    return raw.lower()


def parse_filter(text: str | None, properties: Mapping[str, type]) -> Filter:
    """Read ``text`` against the properties (name → int or str) a row has.

    Raises :class:`FilterError` naming the mistake: unknown property (listing the known
    ones), unknown operator, missing value, ``-or``.
    """
    if text is None or not text.strip():
        return Filter()
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise FilterError(f"the filter {text!r} opens a brace it does not close; "
                              f"write it like {EXAMPLE}")
        body = body[1:-1]
    elif body.endswith("}"):
        raise FilterError(f"the filter {text!r} closes a brace it does not open; "
                          f"write it like {EXAMPLE}")
    tokens = _tokens(body)
    if not tokens:
        return Filter(text=text)
    names = {name.lower(): name for name in properties}
    comparisons: list[Comparison] = []
    index = 0
    while True:
        if index + 3 > len(tokens):
            raise FilterError(f"the filter {text!r} ends early: each condition is "
                              f"Property -op Value, e.g. {EXAMPLE}")
        (prop, prop_quoted), (op, _), (raw, quoted) = tokens[index : index + 3]
        if prop_quoted or prop.lower() not in names:
            raise FilterError(f"unknown property {prop!r} in the filter; use one of "
                              f"{', '.join(properties)}")
        name = names[prop.lower()]
        if op.lower() not in OPERATORS:
            raise FilterError(f"unknown operator {op!r} in the filter; use one of "
                              f"{' '.join(OPERATORS)}")
        comparisons.append(Comparison(name, op.lower(),
                                      _convert(name, properties[name], raw, quoted, text)))
        index += 3
        if index == len(tokens):
            return Filter(tuple(comparisons), text)
        joiner = tokens[index][0].lower()
        if joiner == "-or":
            raise FilterError("the emulator's filters combine conditions with -and only; "
                              "run one command per -or branch")
        if joiner != "-and" or tokens[index][1]:
            raise FilterError(f"expected -and after a condition, found {tokens[index][0]!r}; "
                              f"write it like {EXAMPLE}")
        index += 1
