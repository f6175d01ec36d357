"""The sequence diagram of one message's trip through the organization, as SVG.

Built from the message tracking rows of every server (what ``scenario run`` narrates):
one lane per server, one arrow per exchange between two of them — an SMTP transfer
(``XSHADOW / BDAT / 250``), a shadow discard query (``XQDISCARD``) and its reply, the
store driver's submission and delivery, a delayed acknowledgement — each labelled with
the shadow redundancy document's steps (``D.4.3``), and a bar on the lane of every
server while it holds a shadow copy (from ``HAREDIRECT``, D.4.3, to its discard, D.7,
or to its resubmission when the primary failed).

:func:`build_diagram` turns events into a :class:`SequenceDiagram`; :func:`render_svg`
draws it. Both are pure: no clock, no files, no reactor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from exchange_emu.lab.narration import STEPS
from exchange_emu.logs import TrackingEvent

__all__ = ["Arrow", "Note", "SequenceDiagram", "ShadowBar", "build_diagram", "render_svg"]

_RANK = {step: index for index, step in enumerate(STEPS)}
_NO_STEP = len(_RANK)


@dataclass(frozen=True)
class Arrow:
    """One exchange between two lanes: ``label`` over the line, steps at either end."""

    source: str
    target: str
    label: str
    kind: str
    """``smtp``, ``discard`` (XQDISCARD and its reply), ``storedriver``, ``client``."""
    when: datetime | None
    source_steps: tuple[str, ...] = ()
    target_steps: tuple[str, ...] = ()

    @property
    def steps(self) -> tuple[str, ...]:
        return self.source_steps + self.target_steps


@dataclass(frozen=True)
class Note:
    """Something one server did on its own (deleted a shadow, queued a discard...)."""

    lane: str
    label: str
    when: datetime | None
    steps: tuple[str, ...] = ()
    event_id: str = ""
    primary: str = ""
    """For HAREDIRECT, HADISCARD and RESUBMIT: the primary the shadow copy was for."""


Row = Arrow | Note


@dataclass(frozen=True)
class ShadowBar:
    """``holder`` kept a shadow copy for ``primary`` from row ``start`` to row ``end``
    (None: still held when the diagram was drawn); ``ended`` says how it ended."""

    holder: str
    primary: str
    start: int
    end: int | None
    ended: str = ""


@dataclass
class SequenceDiagram:
    title: str
    lanes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    shadows: list[ShadowBar] = field(default_factory=list)


def _rank(steps: Sequence[str]) -> int:
    return min((_RANK.get(s, _NO_STEP) for s in steps), default=_NO_STEP)


def _reply_code(event: TrackingEvent) -> str:
    status = event.recipient_status[0] if event.recipient_status else ""
    return status[:3] if status[:3].isdigit() else ""


class _Builder:
    """Pairs the rows of the two ends of each exchange and orders them causally."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = {k.lower().rstrip("."): v for k, v in names.items()}

    def lane(self, hostname: str, outside: str = "SMTP client") -> str:
        """The server a hostname names, else a lane for an outside peer."""
        host = hostname.lower().rstrip(".")
        if host in self.names:
            return self.names[host]
        if not host:
            return outside
        return f"{outside} {hostname}"

    def server(self, name_or_host: str) -> str:
        """A lane for a server named by name (``custom-data`` ``primary``) or by FQDN."""
        upper = {v.upper(): v for v in self.names.values()}
        return upper.get(name_or_host.upper()) or self.lane(name_or_host)

    def smtp_receive(self, sender: str, receiver: str) -> Callable[[TrackingEvent], bool]:
        """Matches the receiver's RECEIVE row of an SMTP transfer from ``sender``."""
        def match(o: TrackingEvent) -> bool:
            return (o.event_id == "RECEIVE" and o.source == "SMTP"
                    and self.lane(o.server_hostname) == receiver
                    and self.lane(o.client_hostname) == sender
                    and "delayed_ack" not in o.custom_data)
        return match

    def ownership_noted(self, hub: str) -> Callable[[TrackingEvent], bool]:
        """Matches the mailbox server's B.4 row for an ownership report from ``hub``."""
        def match(o: TrackingEvent) -> bool:
            return (o.event_id == "SUBMIT" and "B.4" in o.steps
                    and self.server(o.custom_data.get("hub", "")) == hub)
        return match

    def rows(self, events: Sequence[TrackingEvent]) -> list[Row]:
        used: set[int] = set()
        rows: list[tuple[datetime | None, int, int, Row]] = []

        def add(row: Row, when: datetime | None, order: int) -> None:
            rows.append((when, _rank(row.steps), order, row))

        def partner(start: int, match: Callable[[TrackingEvent], bool]) -> int | None:
            """The first unused row ``match`` accepts (the other end of an exchange)."""
            for j, other in enumerate(events):
                if j not in used and j != start and match(other):
                    used.add(j)
                    return j
            return None

        # The ends that name their peer go first, so that they claim its row.
        first = sorted(range(len(events)), key=lambda k: events[k].event_id not in (
            "SEND", "NOTIFYMAPI"))
        for i in first:
            e = events[i]
            if i in used:
                continue
            used.add(i)
            here = self.lane(e.server_hostname)
            data = e.custom_data
            if e.event_id == "SEND" and e.source == "SMTP" and data.get("destination"):
                target = self.lane(data["destination"])
                j = partner(i, self.smtp_receive(here, target))
                receive = events[j] if j is not None else None
                shadowed = "D.3" in e.steps
                held = receive is not None and "F.4" in receive.steps
                label = " / ".join(x for x in ("XSHADOW" if shadowed else "", "BDAT",
                                               "" if held else _reply_code(e)) if x)
                label += " (250 held)" if held else ""
                times = [t for t in (e.date_time, receive.date_time if receive else None) if t]
                add(Arrow(here, target, label, "smtp", min(times) if times else None,
                          e.steps, receive.steps if receive else ()), min(times, default=None),
                    i)
            elif e.event_id == "RECEIVE" and e.source == "SMTP":
                peer = self.lane(e.client_hostname)
                if "delayed_ack" in data:
                    add(Arrow(here, peer, f"250 (delayed ack: {data['delayed_ack']})", "client",
                              e.date_time, e.steps), e.date_time, i)
                else:
                    add(Arrow(peer, here, "BDAT / 250" if not e.steps or "F.4" not in e.steps
                              else "BDAT (250 held)", "client", e.date_time, (), e.steps),
                        e.date_time, i)
            elif e.event_id == "HADISCARD" and "reason" not in data and data.get("primary"):
                add(Arrow(here, self.server(data["primary"]), "XQDISCARD", "discard",
                          e.date_time, e.steps), e.date_time, i)
            elif e.event_id == "NOTIFYSHADOW" and data.get("holder"):
                add(Arrow(here, self.server(data["holder"]), "discard notifications (250)",
                          "discard", e.date_time, e.steps), e.date_time, i)
            elif e.event_id == "SUBMIT" and e.source == "STOREDRIVER" and data.get("hub") \
                    and "B.1" in e.steps:
                add(Arrow(here, self.server(data["hub"]), "Mail Submission: new message",
                          "storedriver", e.date_time, e.steps), e.date_time, i)
            elif e.event_id == "RECEIVE" and e.source == "STOREDRIVER":
                source = self.server(data.get("mailbox_server", ""))
                add(Arrow(source, here, "store driver: message from the Outbox", "storedriver",
                          e.date_time, (), e.steps), e.date_time, i)
            elif e.event_id == "NOTIFYMAPI" and e.source == "STOREDRIVER" and "B.4" in e.steps:
                j = partner(i, self.ownership_noted(here))
                mailbox = self.lane(events[j].server_hostname) if j is not None else "mailbox"
                add(Arrow(here, mailbox, f"ownership ({data.get('outcome', 'done')})",
                          "storedriver", e.date_time, e.steps,
                          events[j].steps if j is not None else ()), e.date_time, i)
            elif e.event_id == "NOTIFYMAPI" and e.source == "STOREDRIVER" and "A" in e.steps:
                add(Arrow("MAPI client", here, "save to Outbox", "client", e.date_time, (),
                          e.steps), e.date_time, i)
            elif e.event_id in ("DELIVER", "DUPLICATEDELIVER") and e.source == "STOREDRIVER":
                target = self.lane(data.get("destination", ""), outside="mailbox")
                label = "deliver (store driver)" if e.event_id == "DELIVER" else "duplicate"
                add(Arrow(here, target, label, "storedriver", e.date_time, e.steps),
                    e.date_time, i)
            else:
                primary = self.server(data["primary"]) if data.get("primary") else ""
                add(Note(here, _note_label(e), e.date_time, e.steps, e.event_id, primary),
                    e.date_time, i)
        rows.sort(key=lambda r: (r[0] is None, r[0] or datetime.min, r[1], r[2]))
        return [r[3] for r in rows]


def _note_label(e: TrackingEvent) -> str:
    data = e.custom_data
    if e.event_id == "HAREDIRECT":
        return f"HAREDIRECT: shadow for {data.get('primary', '?')}"
    if e.event_id == "HADISCARD":
        return f"HADISCARD: shadow deleted ({data.get('reason', 'discard')})"
    if e.event_id == "RESUBMIT":
        why = data.get("reason") or data.get("database") or ""
        return f"RESUBMIT{': ' + why if why else ''}"
    if e.event_id == "NOTIFYSHADOW":
        return "NOTIFYSHADOW: discard queued"
    if e.event_id == "DELIVER":
        return "DELIVER (local mailbox)"
    return e.event_id


def _shadows(rows: Sequence[Row]) -> list[ShadowBar]:
    open_: dict[tuple[str, str], int] = {}
    bars = []
    for index, row in enumerate(rows):
        if not isinstance(row, Note):
            continue
        if row.event_id == "HAREDIRECT":
            open_.setdefault((row.lane, row.primary), index)
        elif row.event_id in ("HADISCARD", "RESUBMIT"):
            ended = "resubmitted" if row.event_id == "RESUBMIT" else "discarded"
            for key in [k for k in open_ if k[0] == row.lane
                        and (not row.primary or k[1] == row.primary)]:
                bars.append(ShadowBar(key[0], key[1], open_.pop(key), index, ended))
    bars.extend(ShadowBar(h, p, start, None) for (h, p), start in open_.items())
    return sorted(bars, key=lambda b: b.start)


def build_diagram(events: Iterable[TrackingEvent], names: Mapping[str, str],
                  title: str = "") -> SequenceDiagram:
    """The diagram of ``events`` (one message's rows from every server, any order).

    ``names`` maps each server's FQDN to its name (the lane); a peer not in it (a mail
    client, an outside SMTP server) gets a lane of its own.
    """
    builder = _Builder(names)
    rows = builder.rows(list(events))
    lanes: list[str] = []
    for row in rows:
        ends = (row.source, row.target) if isinstance(row, Arrow) else (row.lane,)
        for lane in ends:
            if lane not in lanes:
                lanes.append(lane)
    return SequenceDiagram(title, lanes, rows, _shadows(rows))


LANE_WIDTH = 170
ROW_HEIGHT = 38
LEFT = 100
TOP = 70
COLORS = {"smtp": "#1f5fa8", "discard": "#8a3ea8", "storedriver": "#2f7d32", "client": "#555"}


def _text(x: float, y: float, text: str, css: str, anchor: str = "middle") -> str:
    return (f'<text x="{x:.0f}" y="{y:.0f}" class={quoteattr(css)} '
            f'text-anchor="{anchor}">{escape(text)}</text>')


def render_svg(diagram: SequenceDiagram) -> str:
    """The diagram as a standalone SVG document (UTF-8 text, no external references)."""
    lanes = diagram.lanes or ["(no events)"]
    x = {lane: LEFT + LANE_WIDTH * i + LANE_WIDTH / 2 for i, lane in enumerate(lanes)}
    width = max(LEFT + LANE_WIDTH * len(lanes) + 20, 20 + 9 * len(diagram.title))
    bottom = TOP + ROW_HEIGHT * (len(diagram.rows) + 1)
    height = bottom + 20

    def row_y(index: int) -> float:
        return TOP + ROW_HEIGHT * (index + 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" class="sequence-diagram">',
        "<style>text{font-family:sans-serif;font-size:12px}"
        ".title{font-size:15px;font-weight:bold}.lane-name{font-weight:bold}"
        ".steps{fill:#b00;font-size:11px;font-weight:bold}.time{fill:#777;font-size:10px}"
        ".note-text{font-size:11px}</style>",
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="context-stroke"/></marker></defs>',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
        _text(10, 20, diagram.title, "title", "start"),
    ]
    for lane in lanes:
        cx = x[lane]
        out.append(f'<g class="lane" data-lane={quoteattr(lane)}>'
                   f'<rect x="{cx - 70:.0f}" y="32" width="140" height="24" rx="4" '
                   'fill="#eef2f7" stroke="#345"/>'
                   + _text(cx, 49, lane, "lane-name")
                   + f'<line x1="{cx:.0f}" y1="56" x2="{cx:.0f}" y2="{bottom:.0f}" '
                   'stroke="#999" stroke-dasharray="4 4"/></g>')
    for index, row in enumerate(diagram.rows):
        y = row_y(index)
        when = row.when.strftime("%H:%M:%S.%f")[:-3] if row.when else ""
        out.append(_text(8, y + 4, when, "time", "start"))
        if isinstance(row, Arrow):
            x1, x2 = x[row.source], x[row.target]
            color = COLORS.get(row.kind, "#333")
            dash = ' stroke-dasharray="6 3"' if row.kind == "discard" and \
                row.label != "XQDISCARD" else ""
            mid = (x1 + x2) / 2
            parts = [f'<g class="arrow" data-from={quoteattr(row.source)} '
                     f'data-to={quoteattr(row.target)} data-kind="{row.kind}" '
                     f'data-steps={quoteattr(" ".join(row.steps))}>',
                     f'<line x1="{x1:.0f}" y1="{y:.0f}" x2="{x2:.0f}" y2="{y:.0f}" '
                     f'stroke="{color}" stroke-width="1.6" marker-end="url(#head)"{dash}/>',
                     _text(mid, y - 5, row.label, "label")]
            if row.source_steps:
                anchor = "end" if x1 > x2 else "start"
                offset = -8 if x1 > x2 else 8
                parts.append(_text(x1 + offset, y + 13, " ".join(row.source_steps), "steps",
                                   anchor))
            if row.target_steps:
                anchor = "start" if x1 > x2 else "end"
                offset = 8 if x1 > x2 else -8
                parts.append(_text(x2 + offset, y + 13, " ".join(row.target_steps), "steps",
                                   anchor))
            out.append("".join(parts) + "</g>")
        else:
            cx = x[row.lane]
            label = row.label + (f"  [{' '.join(row.steps)}]" if row.steps else "")
            w = min(LANE_WIDTH * 2 - 10, 7 * len(label) + 12)
            out.append(f'<g class="note" data-lane={quoteattr(row.lane)} '
                       f'data-steps={quoteattr(" ".join(row.steps))}>'
                       f'<rect x="{cx - w / 2:.0f}" y="{y - 12:.0f}" width="{w:.0f}" '
                       'height="20" rx="3" fill="#fffbe6" stroke="#bba"/>'
                       + _text(cx, y + 2, label, "note-text") + "</g>")
    for bar in diagram.shadows:
        cx = x[bar.holder]
        top = row_y(bar.start)
        end = row_y(bar.end) if bar.end is not None else bottom
        state = bar.ended or "still held"
        tip = f"{bar.holder} holds a shadow copy for {bar.primary} ({state})"
        out.append(f'<g class="shadow" data-holder={quoteattr(bar.holder)} '
                   f'data-primary={quoteattr(bar.primary)} data-ended={quoteattr(state)}>'
                   f'<title>{escape(tip)}</title>'
                   f'<rect x="{cx - 6:.0f}" y="{top:.0f}" width="12" '
                   f'height="{max(end - top, 4):.0f}" fill="#f0a030" fill-opacity="0.55" '
                   'stroke="#c07010"/></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
