"""Typed, strict reading of one TOML table, with errors that name file and key."""

from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

from exchange_emu.directory.bytesize import UNLIMITED, format_byte_size, parse_byte_size
from exchange_emu.directory.errors import OrganizationFileError
from exchange_emu.directory.timespan import format_timespan, parse_timespan

T = TypeVar("T")
R = TypeVar("R")


# a bare key, or a path of them with array indexes: roles[0], receive_connectors[1].bind
_KEY_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\[\d+\])*(?:\.[A-Za-z0-9_-]+(?:\[\d+\])*)*")


def render_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted (never spanning lines)."""
    return key if _KEY_PATH.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def toml_type(value: object) -> str:
    """The TOML name of a value's type, for messages ("string", "array", …)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "date/time"
    return type(value).__name__


def describe(value: object) -> str:
    """A short "type value" description: ``string 'hub'``, ``integer 3``, ``table``."""
    kind = toml_type(value)
    if isinstance(value, Mapping | list):
        return kind
    shown = repr(value)
    return f"{kind} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def suggest(word: str, candidates: Collection[str]) -> str | None:
    """The candidate closest to ``word`` (ignoring case, ``_`` and ``-``), if any is close."""

    def norm(text: str) -> str:
        return text.lower().replace("_", "").replace("-", "")

    by_norm = {norm(candidate): candidate for candidate in candidates}
    if norm(word) in by_norm:
        return by_norm[norm(word)]
    close = difflib.get_close_matches(norm(word), list(by_norm), n=1, cutoff=0.75)
    return by_norm[close[0]] if close else None


class Table:
    """One table of the file: every key is declared up front; unknown keys are errors.

    ``path`` is where the table sits (``servers[2]``); errors read
    ``<file>: <path>.<key>: <problem>``.
    """

    def __init__(self, data: object, file: str, path: str, keys: Collection[str]) -> None:
        self.file = file
        self.path = path
        if not isinstance(data, Mapping):
            raise OrganizationFileError(file, path, f"expected a table, got {describe(data)}")
        self.data: Mapping[str, object] = data
        for key in data:
            if key not in keys:
                hint = suggest(key, keys)
                problem = (
                    f"unknown key (did you mean {hint!r}?)"
                    if hint
                    else f"unknown key (known keys: {', '.join(sorted(keys))})"
                )
                raise OrganizationFileError(file, self.key(key), problem)

    def key(self, key: str) -> str:
        """The full key path of ``key`` in this table."""
        rendered = render_key(key)
        return f"{self.path}.{rendered}" if self.path else rendered

    def error(self, key: str | None, problem: str) -> OrganizationFileError:
        """An error about ``key`` of this table (or the table itself when None)."""
        return OrganizationFileError(self.file, self.key(key) if key else self.path, problem)

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, kind: type[T] | tuple[type, ...], wanted: str) -> T:
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.error(key, f"expected {wanted}, got {describe(value)}")
        return value  # type: ignore[return-value]

    def _require(self, key: str) -> None:
        if key not in self.data:
            raise self.error(key, "required key is missing")

    def string(self, key: str, default: str | None = None) -> str:
        """A non-empty string; required when ``default`` is None."""
        if key not in self.data and default is not None:
            return default
        self._require(key)
        value = self._get(key, str, "a string")
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value.strip()

    def optional_string(self, key: str) -> str | None:
        return self.string(key) if key in self.data else None

    def integer(
        self,
        key: str,
        default: int | None = None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        """An integer within [minimum, maximum]; required when ``default`` is None."""
        if key not in self.data and default is not None:
            return default
        self._require(key)
        value = self._get(key, int, "an integer")
        low = minimum is not None and value < minimum
        high = maximum is not None and value > maximum
        if low or high:
            if minimum is not None and maximum is not None:
                allowed = f"{minimum}-{maximum}"
            elif minimum is not None:
                allowed = f"at least {minimum}"
            else:
                allowed = f"at most {maximum}"
            raise self.error(key, f"{value} is out of range (allowed: {allowed})")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        return self._get(key, bool, "true or false")

    def strings(self, key: str, default: tuple[str, ...] | None = ()) -> tuple[str, ...]:
        """An array of non-empty strings; required when ``default`` is None."""
        if key not in self.data and default is not None:
            return default
        self._require(key)
        items = self._get(key, list, "an array of strings")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"{key}[{index}]", f"expected a string, got {describe(item)}")
            if not item.strip():
                raise self.error(f"{key}[{index}]", "must not be empty")
        return tuple(item.strip() for item in items)

    def convert(self, key: str, value: T, parse: Callable[[T], R]) -> R:
        """Apply ``parse``; a ValueError it raises becomes an error naming ``key``."""
        try:
            return parse(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def parsed(self, key: str, parse: Callable[[str], R], default: R | None = None) -> R:
        """A string key run through ``parse``; required when ``default`` is None."""
        if key not in self.data and default is not None:
            return default
        return self.convert(key, self.string(key), parse)

    def timespan(self, key: str, default: float | None, *, minimum: float = 0.0) -> float:
        """A TimeSpan string (``"00:15:00"``) as seconds; required when ``default`` is None."""
        if key not in self.data and default is not None:
            return default
        self._require(key)
        raw = self.data[key]
        if not isinstance(raw, str):
            raise self.error(
                key, f"expected a TimeSpan string like '00:15:00', got {describe(raw)}"
            )
        seconds = self.convert(key, raw, parse_timespan)
        if seconds < minimum:
            raise self.error(key, f"{raw!r} is too short (at least {format_timespan(minimum)})")
        return seconds

    def byte_size(
        self,
        key: str,
        default: int | None,
        *,
        allow_unlimited: bool = False,
        minimum: int = 0,
        maximum: int | None = None,
    ) -> int:
        """A ByteQuantifiedSize (``"10MB"``) or integer bytes; required when ``default`` is None."""
        if key not in self.data and default is not None:
            return default
        self._require(key)
        raw = self.data[key]
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise self.error(key, f"expected a size like '10MB' or bytes, got {describe(raw)}")
        size = self.convert(
            key, raw, lambda value: parse_byte_size(value, allow_unlimited=allow_unlimited)
        )
        if size == UNLIMITED:
            return size
        if size < minimum or (maximum is not None and size > maximum):
            allowed = format_byte_size(minimum) if minimum else "0"
            if maximum is not None:
                allowed += f" to {format_byte_size(maximum)}"
            else:
                allowed = f"at least {allowed}"
            raise self.error(key, f"{raw!r} is out of range (allowed: {allowed})")
        return size

    def table(self, key: str, keys: Collection[str]) -> Table:
        """A sub-table (``[transport]``); an absent one reads as empty."""
        return Table(self.data.get(key, {}), self.file, self.key(key), keys)

    def tables(self, key: str, keys: Collection[str]) -> list[Table]:
        """An array of tables (``[[servers]]``); absent reads as empty."""
        if key not in self.data:
            return []
        items = self._get(key, list, "an array of tables ([[" + self.key(key) + "]])")
        return [
            Table(item, self.file, f"{self.key(key)}[{index}]", keys)
            for index, item in enumerate(items)
        ]
