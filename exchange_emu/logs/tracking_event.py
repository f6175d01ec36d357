"""One message tracking event: a row of Exchange's message tracking log (``MSGTRK*.LOG``).

:class:`TrackingEvent` has one snake_case field per column of the log's ``#Fields`` line.
Multi-valued columns (``recipient-address``, ``recipient-status``) are tuples, joined with ``;``
in the file. ``custom-data`` is a mapping, written as Exchange's typed ``S:key=value`` entries
joined with ``;`` (see :func:`format_custom_data`); the emulator puts the scenario step there:
``S:scenario=D;S:step=D.4.3`` (see :func:`scenario_step`).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from exchange_emu.logs.logfile import format_timestamp, parse_timestamp

__all__ = [
    "EVENT_IDS",
    "SOURCES",
    "TRACKING_FIELDS",
    "CustomData",
    "TrackingEvent",
    "event_from_row",
    "event_to_row",
    "format_custom_data",
    "parse_custom_data",
    "scenario_step",
]

TRACKING_FIELDS: tuple[str, ...] = (
    "date-time",
    "client-ip",
    "client-hostname",
    "server-ip",
    "server-hostname",
    "source-context",
    "connector-id",
    "source",
    "event-id",
    "internal-message-id",
    "message-id",
    "recipient-address",
    "recipient-status",
    "total-bytes",
    "recipient-count",
    "related-recipient-address",
    "reference",
    "message-subject",
    "sender-address",
    "return-path",
    "message-info",
    "directionality",
    "tenant-id",
    "original-client-ip",
    "original-server-ip",
    "custom-data",
)
"""The columns of an Exchange 2010 message tracking log, in file order."""

EVENT_IDS: frozenset[str] = frozenset(
    {
        "RECEIVE",
        "SUBMIT",
        "SEND",
        "DELIVER",
        "DEFER",
        "FAIL",
        "DSN",
        "EXPAND",
        "REDIRECT",
        "RESOLVE",
        "TRANSFER",
        "BADMAIL",
        "POISONMESSAGE",
        "DUPLICATEDELIVER",
        "NOTIFYMAPI",
        "RESUBMIT",
        # High-availability (shadow redundancy) events.
        "HARECEIVE",
        "HADISCARD",
        "HAREDIRECT",
        "HAREDIRECTFAIL",
        "NOTIFYSHADOW",
    }
)
"""The ``event-id`` values the emulator writes and accepts."""

SOURCES: frozenset[str] = frozenset(
    {
        # Exchange's own transport components.
        "ADMIN",
        "AGENT",
        "APPROVAL",
        "DSN",
        "DUMPSTER",
        "GATEWAY",
        "MAILBOXRULE",
        "MEETINGMESSAGEPROCESSOR",
        "ORAR",
        "PICKUP",
        "PUBLICFOLDER",
        "ROUTING",
        "SMTP",
        "STOREDRIVER",
        # Emulator components without an Exchange name of their own.
        "MAILSUBMISSION",
        "QUEUE",
    }
)
"""The ``source`` values (transport components) the emulator accepts."""

_STEP = re.compile(r"[A-Z](\.[0-9]+)*")
_CUSTOM_TYPE = re.compile(r"^[A-Za-z]:")


def _escape(text: str, *, key: bool) -> str:
    text = text.replace("%", "%25").replace(";", "%3B")
    return text.replace("=", "%3D") if key else text


def _unescape(text: str) -> str:
    return re.sub(
        r"%(25|3[BbDd])",
        lambda m: {"25": "%", "3B": ";", "3D": "="}[m[1].upper()],
        text,
    )


def format_custom_data(data: Mapping[str, str]) -> str:
    """Encode ``custom-data`` as Exchange's ``S:key=value`` entries joined with ``;``.

    ``%`` and ``;`` (and ``=`` in keys) are written as ``%25``, ``%3B``, ``%3D``.
    """
    items = data._data.items() if isinstance(data, CustomData) else data.items()
    entries = [f"S:{key}={value}" for key, value in items]
    text = ";".join(entries)
    # The usual entries need no escape: then the text holds one "=" and no "%" per entry
    # and one ";" fewer than entries (tracking rows are written several times a message).
    if "%" in text or text.count(";") != len(entries) - 1 or text.count("=") != len(entries):
        text = ";".join(f"S:{_escape(key, key=True)}={_escape(value, key=False)}"
                        for key, value in data.items())
    return text


def parse_custom_data(text: str) -> dict[str, str]:
    """Decode ``custom-data``: ``;``-separated ``T:key=value`` entries, any type letter ``T``.

    The type prefix is dropped; an entry without ``=`` becomes a key with an empty value.
    """
    result: dict[str, str] = {}
    for entry in text.split(";"):
        if not entry.strip():
            continue
        typed = _CUSTOM_TYPE.match(entry)
        body = entry[typed.end() :] if typed else entry
        key, _, value = body.partition("=")
        result[_unescape(key)] = _unescape(value)
    return result


def scenario_step(step: str, **extra: str) -> dict[str, str]:
    """``custom-data`` naming a step of the shadow redundancy scenarios, e.g. ``"D.4.3"``.

    Gives ``{"scenario": "D", "step": "D.4.3", **extra}``, written ``S:scenario=D;S:step=D.4.3``.
    """
    if not _STEP.fullmatch(step):
        raise ValueError(f"not a scenario step like 'D.4.3': {step!r}")
    return {"scenario": step.split(".", 1)[0], "step": step, **extra}


class CustomData(Mapping[str, str]):
    """The read-only key/values of a ``custom-data`` column, in order; hashable, picklable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        entries = dict(data or {})
        for key, value in entries.items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                raise ValueError(f"custom-data must map non-empty str to str: {key!r}={value!r}")
        self._data = entries

    @classmethod
    def trusted(cls, data: dict[str, str]) -> CustomData:
        """Wrap ``data`` (non-empty str keys, str values; not copied) without checking it."""
        custom = object.__new__(cls)
        custom._data = data
        return custom

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"CustomData({self._data!r})"


def scenario_steps(*steps: str, **extra: str) -> dict[str, str]:
    """``custom-data`` for a row that implements several consecutive steps at once, e.g.
    a SEND on a shadowed session: ``D.1``, ``D.2``, ``D.3`` and ``D.4.1``.

    Gives ``{"scenario": "D", "step": "D.4.1", "steps": "D.1,D.2,D.3,D.4.1", **extra}``.
    """
    scenario, last, joined = _checked_steps(steps)
    data = {"scenario": scenario, "step": last, **extra}
    if joined:
        data["steps"] = joined
    return data


@functools.lru_cache(maxsize=256)
def _checked_steps(steps: tuple[str, ...]) -> tuple[str, str, str]:
    """``steps`` checked once per distinct tuple (the transport's rows name a few fixed ones):
    the scenario letter, the last step, and every step joined when there are several."""
    if not steps:
        raise ValueError("scenario_steps needs at least one step")
    last = steps[-1]
    for step in (last, *steps):
        if not (_STEP.fullmatch(step) if step is last else _STEP.match(step)):
            raise ValueError(f"not a scenario step like 'D.4.3': {step!r}")
    return last.split(".", 1)[0], last, ",".join(steps) if len(steps) > 1 else ""


def _strings(value: Sequence[str] | str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"{name} must be a sequence of strings, not a string")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name} must hold strings, got {item!r}")
    return items


@dataclass(frozen=True, kw_only=True)
class TrackingEvent:
    """One row of the message tracking log (what ``Get-MessageTrackingLog`` returns).

    ``date_time`` None means "now" to the writer; naive datetimes are taken as UTC.
    ``event_id`` and ``source`` are checked against :data:`EVENT_IDS` and :data:`SOURCES`
    (case-insensitive, stored upper-case); anything else raises ValueError.
    ``server_hostname``/``server_ip`` left empty are filled with the logging server's own.
    """

    event_id: str
    source: str
    date_time: datetime | None = None
    client_ip: str = ""
    client_hostname: str = ""
    server_ip: str = ""
    server_hostname: str = ""
    source_context: str = ""
    connector_id: str = ""
    internal_message_id: str = ""
    message_id: str = ""
    recipient_address: tuple[str, ...] = ()
    recipient_status: tuple[str, ...] = ()
    total_bytes: int | None = None
    recipient_count: int | None = None
    related_recipient_address: str = ""
    reference: str = ""
    message_subject: str = ""
    sender_address: str = ""
    return_path: str = ""
    message_info: str = ""
    directionality: str = ""
    tenant_id: str = ""
    original_client_ip: str = ""
    original_server_ip: str = ""
    custom_data: Mapping[str, str] = field(default_factory=CustomData)

    def __post_init__(self) -> None:
        event_id = self.event_id.upper()
        if event_id not in EVENT_IDS:
            raise ValueError(f"unknown message tracking event-id: {self.event_id!r}")
        source = self.source.upper()
        if source not in SOURCES:
            raise ValueError(f"unknown message tracking source: {self.source!r}")
        set_ = object.__setattr__
        set_(self, "event_id", event_id)
        set_(self, "source", source)
        if self.date_time is not None:
            moment = self.date_time
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
            set_(self, "date_time", moment.astimezone(UTC))
        recipients = _strings(self.recipient_address, "recipient_address")
        for address in recipients:
            if not address or (";" in address and split_addresses(address) != [address]):
                raise ValueError(
                    f"recipient address empty or with ';' outside its quotes: {address!r}")
        set_(self, "recipient_address", recipients)
        set_(self, "recipient_status", _strings(self.recipient_status, "recipient_status"))
        for name in ("total_bytes", "recipient_count"):
            number = getattr(self, name)
            if number is not None and (not isinstance(number, int) or number < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {number!r}")
        if not isinstance(self.custom_data, CustomData):
            set_(self, "custom_data", CustomData(self.custom_data))

    @classmethod
    def trusted(cls, **values: Any) -> TrackingEvent:
        """An event from values already as :meth:`__post_init__` leaves them (upper-case
        ids, tuples, aware UTC time, :class:`CustomData`), built without checking them: the
        transport's own rows, several per relayed message."""
        event = object.__new__(cls)
        event.__dict__.update(_DEFAULTS, **values)
        return event

    @property
    def step(self) -> str:
        """The scenario step this event records (``custom-data`` ``step``), or ``""``."""
        return self.custom_data.get("step", "")

    @property
    def steps(self) -> tuple[str, ...]:
        """Every scenario step this row records, in order (``steps``, else ``step``)."""
        many = self.custom_data.get("steps", "")
        if many:
            return tuple(many.split(","))
        return (self.step,) if self.step else ()


_ATTRIBUTES: dict[str, str] = {column: column.replace("-", "_") for column in TRACKING_FIELDS}
assert set(_ATTRIBUTES.values()) == {f.name for f in fields(TrackingEvent)}
_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(TrackingEvent) if f.default is not MISSING}
_DEFAULTS["custom_data"] = CustomData()  # immutable, so one empty instance serves every event


def event_to_row(event: TrackingEvent) -> list[str]:
    """The event's column values, in :data:`TRACKING_FIELDS` order, ready for CSV."""
    row: list[str] = list(_ALL_ATTRIBUTES(event))
    for index, kind in _CONVERTED:
        value = row[index]
        if kind == "date-time":
            row[index] = format_timestamp(value) if value is not None else ""  # type: ignore[arg-type]
        elif kind == "list":
            row[index] = ";".join(value)
        elif kind == "number":
            row[index] = "" if value is None else str(value)
        else:
            row[index] = format_custom_data(value)  # type: ignore[arg-type]
    return row


_COLUMN_KINDS: tuple[tuple[str, str | None], ...] = tuple(
    (
        _ATTRIBUTES[column],
        {
            "date-time": "date-time",
            "recipient-address": "list",
            "recipient-status": "list",
            "total-bytes": "number",
            "recipient-count": "number",
            "custom-data": "custom-data",
        }.get(column),
    )
    for column in TRACKING_FIELDS
)
"""Each column's event attribute and how its value is written (None: as it is)."""
_ALL_ATTRIBUTES = operator.attrgetter(*(attribute for attribute, _ in _COLUMN_KINDS))
_CONVERTED: tuple[tuple[int, str], ...] = tuple(
    (index, kind) for index, (_, kind) in enumerate(_COLUMN_KINDS) if kind is not None)


def split_addresses(text: str) -> list[str]:
    """Split ``recipient-address`` at each ``;`` outside double quotes: an address with a
    quoted local part (``"a;b"@contoso.test``, RFC 5321) may hold one. Empty parts dropped."""
    if '"' not in text:
        return [part for part in text.split(";") if part]
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part]


def _split_status(text: str, recipients: int) -> tuple[str, ...]:
    """Split ``recipient-status``: one per recipient where the count allows.

    Exchange does not escape ``;`` inside a status (``550 5.1.1 ...; not found``), so a single
    recipient keeps the whole text.
    """
    if not text:
        return ()
    parts = tuple(text.split(";"))
    if len(parts) != recipients and recipients == 1:
        return (text,)
    return parts


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text else None


def event_from_row(values: Mapping[str, str]) -> TrackingEvent:
    """Build an event from one row keyed by column name; missing columns are empty.

    Raises ValueError for a bad date-time, number, event-id or source.
    """

    def get(column: str) -> str:
        return values.get(column, "") or ""

    recipients = tuple(split_addresses(get("recipient-address")))
    stamp = get("date-time")
    return TrackingEvent(
        event_id=get("event-id").strip(),
        source=get("source").strip(),
        date_time=parse_timestamp(stamp) if stamp.strip() else None,
        client_ip=get("client-ip"),
        client_hostname=get("client-hostname"),
        server_ip=get("server-ip"),
        server_hostname=get("server-hostname"),
        source_context=get("source-context"),
        connector_id=get("connector-id"),
        internal_message_id=get("internal-message-id"),
        message_id=get("message-id"),
        recipient_address=recipients,
        recipient_status=_split_status(get("recipient-status"), len(recipients)),
        total_bytes=_number(get("total-bytes")),
        recipient_count=_number(get("recipient-count")),
        related_recipient_address=get("related-recipient-address"),
        reference=get("reference"),
        message_subject=get("message-subject"),
        sender_address=get("sender-address"),
        return_path=get("return-path"),
        message_info=get("message-info"),
        directionality=get("directionality"),
        tenant_id=get("tenant-id"),
        original_client_ip=get("original-client-ip"),
        original_server_ip=get("original-server-ip"),
        custom_data=parse_custom_data(get("custom-data")),
    )
