"""Tests for exchange_emu.logs: Exchange's message tracking and SMTP protocol logs."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from exchange_emu.logs import (
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_RESULT_SIZE,
    EVENT_IDS,
    PROTOCOL_FIELDS,
    TRACKING_FIELDS,
    IMessageTrackingLog,
    IProtocolLog,
    IProtocolLogSession,
    MessageTrackingLog,
    NullMessageTrackingLog,
    NullProtocolLog,
    ProtocolLog,
    TrackingEvent,
    filter_events,
    find_tracking_logs,
    format_custom_data,
    format_table,
    parse_custom_data,
    read_protocol_log,
    read_tracking_log,
    read_tracking_logs,
    scenario_step,
    to_json,
)
from exchange_emu.logs.logfile import RollingLogFile
from exchange_emu.logs.tracking_event import CustomData, event_to_row, scenario_steps

NOON = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
TRACKING_FIELDS_LINE = (
    "#Fields: date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,"
    "connector-id,source,event-id,internal-message-id,message-id,recipient-address,"
    "recipient-status,total-bytes,recipient-count,related-recipient-address,reference,"
    "message-subject,sender-address,return-path,message-info,directionality,tenant-id,"
    "original-client-ip,original-server-ip,custom-data"
)


def clock_at(moment: datetime) -> Clock:
    clock = Clock()
    clock.advance(moment.timestamp())
    return clock


def tracking_log(
    directory: Path,
    clock: Clock,
    *,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    subject_logging: bool = True,
) -> MessageTrackingLog:
    return MessageTrackingLog(
        directory,
        server_name="HUB01",
        server_ip="10.0.0.5",
        clock=clock,
        max_file_size=max_file_size,
        subject_logging=subject_logging,
    )


def event(**kwargs: object) -> TrackingEvent:
    values: dict[str, object] = {"event_id": "RECEIVE", "source": "SMTP"}
    values.update(kwargs)
    return TrackingEvent(**values)  # type: ignore[arg-type]


def lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").split("\r\n")


# --- message tracking log: format ------------------------------------------------------------


def test_tracking_log_header_lines_are_exchanges(tmp_path: Path) -> None:
    """A new MSGTRK file opens with Exchange 2010's five header lines, CRLF-terminated."""
    log = tracking_log(tmp_path, clock_at(NOON))
    log.record(event(message_id="<a@contoso.test>"))
    log.close()
    path = tmp_path / "MSGTRK20261128-1.LOG"
    assert find_tracking_logs(tmp_path) == [path]
    assert lines(path)[:5] == [
        "#Software: Microsoft Exchange Server",
        "#Version: 14.0.0.0",
        "#Log-type: Message Tracking Log",
        "#Date: 2026-11-28T13:00:00.000Z",
        TRACKING_FIELDS_LINE,
    ]
    assert "#Fields: " + ",".join(TRACKING_FIELDS) == TRACKING_FIELDS_LINE


def test_row_date_time_and_server_come_from_the_log(tmp_path: Path) -> None:
    """An event without date-time gets the clock's time (ms, Z); empty server fields get ours."""
    clock = clock_at(NOON)
    clock.advance(1.2345)
    log = tracking_log(tmp_path, clock)
    log.record(event(internal_message_id="42"))
    log.record(event(event_id="SEND", server_hostname="edge01.contoso.test", server_ip="10.0.0.9"))
    log.close()
    first, second = read_tracking_log(tmp_path / "MSGTRK20261128-1.LOG")
    assert first.date_time == datetime(2026, 11, 28, 13, 0, 1, 234000, tzinfo=UTC)
    assert lines(tmp_path / "MSGTRK20261128-1.LOG")[5].startswith(
        "2026-11-28T13:00:01.234Z,,,10.0.0.5,HUB01,,,SMTP,RECEIVE,42,"
    )
    assert (first.server_hostname, first.server_ip) == ("HUB01", "10.0.0.5")
    assert (second.server_hostname, second.server_ip) == ("edge01.contoso.test", "10.0.0.9")


def test_row_round_trips_with_commas_quotes_newlines_and_lists(tmp_path: Path) -> None:
    """Every column survives write and read; tricky text is quoted as Exchange quotes it."""
    original = TrackingEvent(
        event_id="SEND",
        source="SMTP",
        date_time=datetime(2026, 11, 28, 13, 0, 5, 123000, tzinfo=UTC),
        client_ip="10.0.0.5",
        client_hostname="HUB01",
        server_ip="10.0.0.9",
        server_hostname="edge01.contoso.test",
        source_context="08DE2F0A1B2C3D4E;250 2.6.0 <x@y> [InternalId=42, Hostname=EDGE01] Queued",
        connector_id="Intra-Organization SMTP Send Connector",
        internal_message_id="42",
        message_id="<7c1d@contoso.test>",
        recipient_address=("erin@fabrikam.test", "frank@fabrikam.test"),
        recipient_status=("250 2.1.5 Recipient OK", "250 2.1.5 Recipient OK"),
        total_bytes=10240,
        recipient_count=2,
        related_recipient_address="group@contoso.test",
        reference="<ref@contoso.test>",
        message_subject='He said "hi, there"\r\nand left',
        sender_address="alice@contoso.test",
        return_path="alice@contoso.test",
        message_info="2026-11-28T12:59:59.000Z;SRV=HUB01",
        directionality="Originating",
        tenant_id="",
        original_client_ip="192.0.2.1",
        original_server_ip="192.0.2.2",
        custom_data={"scenario": "D", "step": "D.4.1", "note": "a;b=c, 100%"},
    )
    log = tracking_log(tmp_path, clock_at(NOON))
    log.record(original)
    log.close()
    path = tmp_path / "MSGTRK20261128-1.LOG"
    raw = path.read_bytes().decode("utf-8")
    assert '"He said ""hi, there""\r\nand left"' in raw
    assert ",erin@fabrikam.test;frank@fabrikam.test," in raw
    assert "S:scenario=D;S:step=D.4.1;S:note=a%3Bb=c, 100%25" in raw
    assert list(read_tracking_log(path)) == [original]


_text = st.text(st.characters(codec="utf-8"))  # no lone surrogates


@settings(max_examples=60, deadline=None)
@given(subject=_text, context=_text, key=_text.filter(bool), value=_text)
def test_any_text_round_trips(
    tmp_path_factory: pytest.TempPathFactory, subject: str, context: str, key: str, value: str
) -> None:
    """Arbitrary Unicode in free-text columns and custom-data comes back unchanged."""
    directory = tmp_path_factory.mktemp("rt")
    original = event(
        date_time=NOON,
        server_hostname="HUB01",
        server_ip="10.0.0.5",
        message_subject=subject,
        source_context=context,
        custom_data={key: value},
    )
    log = tracking_log(directory, clock_at(NOON))
    log.record(original)
    log.close()
    assert list(read_tracking_logs(directory)) == [original]


def test_single_recipient_status_may_contain_semicolons(tmp_path: Path) -> None:
    """Exchange does not escape ';' in a status; with one recipient the whole text is kept."""
    status = "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"
    original = event(
        event_id="FAIL",
        date_time=NOON,
        recipient_address=("x@contoso.test",),
        recipient_status=(status,),
    )
    log = tracking_log(tmp_path, clock_at(NOON))
    log.record(original)
    log.close()
    assert [e.recipient_status for e in read_tracking_logs(tmp_path)] == [(status,)]


def test_quoted_local_part_with_semicolon_round_trips(tmp_path: Path) -> None:
    """RFC 5321 lets a quoted local part hold ';': such an address is one recipient, written
    as it is and read back whole, beside the others; a bare ';' is still refused."""
    recipients = ('"a;b"@fabrikam.test', "erin@fabrikam.test", '"c\\";d"@fabrikam.test')
    original = event(date_time=NOON, server_hostname="HUB01", server_ip="10.0.0.5",
                     recipient_address=recipients,
                     recipient_status=("250 2.1.5 OK",) * 3, recipient_count=3)
    log = tracking_log(tmp_path, clock_at(NOON))
    log.record(original)
    log.close()
    assert [e.recipient_address for e in read_tracking_logs(tmp_path)] == [recipients]
    with pytest.raises(ValueError, match="outside its quotes"):
        event(recipient_address=("a;b@fabrikam.test",))
    with pytest.raises(ValueError, match="outside its quotes"):
        event(recipient_address=('"a"@x;b@fabrikam.test',))


def test_subject_logging_can_be_turned_off(tmp_path: Path) -> None:
    """MessageTrackingLogSubjectLoggingEnabled false leaves message-subject empty."""
    log = tracking_log(tmp_path, clock_at(NOON), subject_logging=False)
    log.record(event(message_subject="Quarterly numbers"))
    log.close()
    assert [e.message_subject for e in read_tracking_logs(tmp_path)] == [""]


# --- tracking events and custom-data ---------------------------------------------------------


def test_custom_data_encodes_scenario_steps_as_typed_entries() -> None:
    """scenario_step gives the S:scenario / S:step entries the narration points at."""
    data = scenario_step("D.4.3")
    assert data == {"scenario": "D", "step": "D.4.3"}
    assert format_custom_data(data) == "S:scenario=D;S:step=D.4.3"
    assert parse_custom_data("S:scenario=D;S:step=D.4.3") == data
    assert event(custom_data=data).step == "D.4.3"
    assert scenario_step("F.7", primary="edge01") == {
        "scenario": "F",
        "step": "F.7",
        "primary": "edge01",
    }


_CUSTOM_TEXT = st.text(alphabet=st.sampled_from(["a", "%", ";", "=", ",", "é", ":"]),
                       max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_CUSTOM_TEXT.filter(bool), _CUSTOM_TEXT, max_size=4))
def test_custom_data_is_written_as_if_every_entry_were_escaped(data: dict[str, str]) -> None:
    """The shortcut for entries with nothing to escape writes what escaping each would."""
    def escape(text: str, *, key: bool) -> str:
        text = text.replace("%", "%25").replace(";", "%3B")
        return text.replace("=", "%3D") if key else text

    expected = ";".join(f"S:{escape(k, key=True)}={escape(v, key=False)}"
                        for k, v in data.items())
    assert format_custom_data(data) == expected
    assert format_custom_data(CustomData(data)) == expected
    assert parse_custom_data(expected) == data


def test_trusted_events_equal_checked_ones() -> None:
    """TrackingEvent.trusted, given values in the form the checks leave them, builds the
    same event as the checking constructor (the transport's rows use it)."""
    values: dict[str, object] = dict(
        event_id="SEND", source="SMTP", date_time=NOON, server_hostname="edge01.contoso.test",
        connector_id="EDGE01 to HUB01", internal_message_id="7", message_id="<m@x>",
        recipient_address=("erin@fabrikam.test",), recipient_status=("250 2.6.0 OK",),
        total_bytes=10240, recipient_count=1, message_subject="s", sender_address="a@b.c",
        return_path="a@b.c", custom_data=CustomData(scenario_steps("F.5", "D.1", x="1")))
    checked = TrackingEvent(**values)  # type: ignore[arg-type]
    trusted = TrackingEvent.trusted(**values)
    assert trusted == checked
    assert event_to_row(trusted) == event_to_row(checked)
    assert TrackingEvent.trusted(event_id="SEND", source="SMTP") == TrackingEvent(
        event_id="SEND", source="SMTP")


def test_scenario_steps_are_checked_every_time() -> None:
    """The checked step tuples are cached; a bad one raises on every call, not only the
    first, and the cached result is not shared between rows."""
    for _ in range(2):
        with pytest.raises(ValueError):
            scenario_steps("D.1", "nope")
        with pytest.raises(ValueError):
            scenario_steps("D.1", "D.4.3x")
        with pytest.raises(ValueError):
            scenario_steps()
    first = scenario_steps("D.1", "D.2", primary="p")
    first["extra"] = "changed"
    assert scenario_steps("D.1", "D.2", primary="q") == {
        "scenario": "D", "step": "D.2", "primary": "q", "steps": "D.1,D.2"}


def test_custom_data_escapes_separators_and_reads_exchange_entries() -> None:
    """Separators in keys and values are %-escaped; Exchange's other type letters are read."""
    data = {"a=b;c": "x;y=z%", "empty": ""}
    assert parse_custom_data(format_custom_data(data)) == data
    assert parse_custom_data("S:DeliveryPriority=Normal;I:Count=3;;bare;plain=1") == {
        "DeliveryPriority": "Normal",
        "Count": "3",
        "bare": "",
        "plain": "1",
    }
    assert parse_custom_data("") == {}


@pytest.mark.parametrize("bad_step", ["", "d.4.3", "D.4.", "D-4", "4.3", "D.4\n"])
def test_scenario_step_refuses_malformed_steps(bad_step: str) -> None:
    """Only steps like 'D' or 'D.4.3' are accepted."""
    with pytest.raises(ValueError):
        scenario_step(bad_step)


def test_unknown_event_id_is_refused() -> None:
    """An event-id outside Exchange's set raises ValueError."""
    with pytest.raises(ValueError, match="event-id"):
        event(event_id="SHADOWED")


def test_unknown_source_is_refused() -> None:
    """A source outside the known components raises ValueError."""
    with pytest.raises(ValueError, match="source"):
        event(source="CARRIER_PIGEON")


def test_event_ids_and_sources_are_normalised_to_upper_case() -> None:
    """Case does not matter on input; the log always says e.g. HADISCARD."""
    normalised = event(event_id="hadiscard", source="smtp")
    assert (normalised.event_id, normalised.source) == ("HADISCARD", "SMTP")
    assert {"HARECEIVE", "HADISCARD", "HAREDIRECT", "HAREDIRECTFAIL", "NOTIFYSHADOW"} <= EVENT_IDS
    assert len(EVENT_IDS) == 21


def test_event_values_are_checked() -> None:
    """Bad recipients, numbers and custom-data are refused; naive times are taken as UTC."""
    with pytest.raises(ValueError):
        event(recipient_address=("a;b@contoso.test",))
    with pytest.raises(ValueError):
        event(recipient_address=("",))
    with pytest.raises(TypeError):
        event(recipient_address="a@contoso.test")
    with pytest.raises(ValueError):
        event(total_bytes=-1)
    with pytest.raises(ValueError):
        event(custom_data={"": "x"})
    assert event(date_time=datetime(2026, 11, 28, 13, 0)).date_time == NOON
    assert event(recipient_address=["a@contoso.test"]).recipient_address == ("a@contoso.test",)


def test_events_are_immutable_hashable_and_picklable() -> None:
    """TrackingEvent is a frozen value; its custom-data cannot be changed in place."""
    frozen = event(custom_data={"step": "B.2"})
    with pytest.raises(AttributeError):
        frozen.event_id = "SEND"  # type: ignore[misc]
    with pytest.raises(TypeError):
        frozen.custom_data["step"] = "B.3"  # type: ignore[index]
    assert hash(frozen) == hash(event(custom_data={"step": "B.2"}))
    assert frozen.custom_data == {"step": "B.2"}
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    assert dataclasses.asdict(frozen)["custom_data"] == {"step": "B.2"}


# --- message tracking log: buffering, rollover, crash ----------------------------------------


def test_events_are_buffered_until_the_flush_timer(tmp_path: Path) -> None:
    """Nothing reaches disk before flush_interval on the clock; then everything does."""
    clock = clock_at(NOON)
    log = tracking_log(tmp_path, clock)
    log.record(event(internal_message_id="1"))
    log.record(event(internal_message_id="2"))
    assert find_tracking_logs(tmp_path) == []
    clock.advance(0.49)
    assert find_tracking_logs(tmp_path) == []
    clock.advance(0.01)
    assert [e.internal_message_id for e in read_tracking_logs(tmp_path)] == ["1", "2"]
    assert clock.getDelayedCalls() == []
    log.record(event(internal_message_id="3"))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.5)
    assert [e.internal_message_id for e in read_tracking_logs(tmp_path)] == ["1", "2", "3"]


def test_flush_writes_now_and_close_leaves_no_timer(tmp_path: Path) -> None:
    """flush() appends at once; close() flushes, cancels the timer, and later rows go through."""
    clock = clock_at(NOON)
    log = tracking_log(tmp_path, clock)
    log.record(event(internal_message_id="1"))
    log.flush()
    assert [e.internal_message_id for e in read_tracking_logs(tmp_path)] == ["1"]
    log.record(event(internal_message_id="2"))
    log.close()
    assert clock.getDelayedCalls() == []
    assert [e.internal_message_id for e in read_tracking_logs(tmp_path)] == ["1", "2"]
    log.record(event(internal_message_id="3"))
    assert clock.getDelayedCalls() == []
    assert [e.internal_message_id for e in read_tracking_logs(tmp_path)] == ["1", "2", "3"]


def test_a_full_buffer_is_written_without_waiting(tmp_path: Path) -> None:
    """Past max_buffer bytes the buffer is appended immediately, so memory stays bounded."""
    clock = clock_at(NOON)
    log = RollingLogFile(
        tmp_path,
        prefix="MSGTRK",
        log_type="Message Tracking Log",
        fields=("a", "b"),
        clock=clock,
        max_buffer=300,
    )
    log.write_row(["x" * 100, "y"])
    assert log.current_path is not None and not log.current_path.exists()
    log.write_row(["x" * 200, "y"])
    assert log.current_path.exists()


def test_rollover_at_midnight_by_the_clock(tmp_path: Path) -> None:
    """The first event after midnight (clock time, UTC) opens MSGTRK<next day>-1.LOG."""
    clock = clock_at(datetime(2026, 11, 28, 23, 59, 59, 800000, tzinfo=UTC))
    log = tracking_log(tmp_path, clock)
    log.record(event(internal_message_id="before"))
    clock.advance(0.3)
    log.record(event(internal_message_id="after"))
    log.close()
    first, second = find_tracking_logs(tmp_path)
    assert (first.name, second.name) == ("MSGTRK20261128-1.LOG", "MSGTRK20261129-1.LOG")
    assert [e.internal_message_id for e in read_tracking_log(first)] == ["before"]
    assert [e.internal_message_id for e in read_tracking_log(second)] == ["after"]
    assert lines(second)[3] == "#Date: 2026-11-29T00:00:00.100Z"


def test_rollover_by_size(tmp_path: Path) -> None:
    """A file never grows past max_file_size: the next row starts -<n+1> with a new header."""
    clock = clock_at(NOON)
    probe = tmp_path / "probe"
    one = tracking_log(probe, clock)
    one.record(event(internal_message_id="0"))
    one.close()
    size_with_one_row = (probe / "MSGTRK20261128-1.LOG").stat().st_size
    row_size = len(lines(probe / "MSGTRK20261128-1.LOG")[5]) + 2
    limit = size_with_one_row + row_size  # header + two rows fit exactly

    directory = tmp_path / "logs"
    log = tracking_log(directory, clock, max_file_size=limit)
    for n in range(5):
        log.record(event(internal_message_id=str(n)))
    log.close()
    files = find_tracking_logs(directory)
    assert [p.name for p in files] == [f"MSGTRK20261128-{n}.LOG" for n in (1, 2, 3)]
    assert all(p.stat().st_size <= limit for p in files)
    assert all(lines(p)[0] == "#Software: Microsoft Exchange Server" for p in files)
    assert [e.internal_message_id for e in read_tracking_logs(directory)] == list("01234")


def test_a_row_bigger_than_the_limit_still_gets_written(tmp_path: Path) -> None:
    """An oversize row goes alone into its own file rather than being dropped."""
    log = tracking_log(tmp_path, clock_at(NOON), max_file_size=10)
    log.record(event(internal_message_id="1"))
    log.record(event(internal_message_id="2"))
    log.close()
    assert len(find_tracking_logs(tmp_path)) == 2
    assert [e.internal_message_id for e in read_tracking_logs(tmp_path)] == ["1", "2"]


def test_a_restarted_log_starts_the_next_file_of_the_day(tmp_path: Path) -> None:
    """After a restart the writer never appends to an existing file (it may end torn)."""
    clock = clock_at(NOON)
    for n in ("1", "2"):
        log = tracking_log(tmp_path, clock)
        log.record(event(internal_message_id=n))
        log.close()
    assert [p.name for p in find_tracking_logs(tmp_path)] == [
        "MSGTRK20261128-1.LOG",
        "MSGTRK20261128-2.LOG",
    ]


def test_a_crash_loses_only_the_buffer_and_a_torn_row_is_skipped(tmp_path: Path) -> None:
    """Flushed rows survive; a half-written last row is not read back, even in strict mode."""
    clock = clock_at(NOON)
    log = tracking_log(tmp_path, clock)
    log.record(event(internal_message_id="1"))
    clock.advance(0.5)
    log.record(event(internal_message_id="2"))  # still buffered when the process "dies"
    path = tmp_path / "MSGTRK20261128-1.LOG"
    flushed = path.read_bytes()
    complete_row = lines(path)[5]
    for torn in (
        complete_row[:40].encode(),  # cut mid-row: no line end
        b'2026-11-28T13:00:02.000Z,"a quoted field\r\n',  # cut inside a quoted field
    ):
        path.write_bytes(flushed + torn)
        assert [e.internal_message_id for e in read_tracking_log(path, strict=True)] == ["1"]


# --- reading Exchange-made files -------------------------------------------------------------


def test_reader_maps_columns_by_the_fields_line_of_exchange_made_files(tmp_path: Path) -> None:
    """BOM, other column order, extra columns and 7-digit fractions are all fine."""
    path = tmp_path / "MSGTRK20101012-1.LOG"
    path.write_bytes(
        b"\xef\xbb\xbf#Software: Microsoft Exchange Server\r\n"
        b"#Version: 14.2.247.0\r\n"
        b"#Log-type: Message Tracking Log\r\n"
        b"#Date: 2010-10-12T00:00:01.000Z\r\n"
        b"#Fields: event-id,date-time,schema-version,source,recipient-address,message-subject\r\n"
        b"DELIVER,2010-10-12T10:15:30.1234567Z,15,STOREDRIVER,a@contoso.test;b@contoso.test,"
        b'"Hello, world"\r\n'
    )
    (found,) = read_tracking_log(path)
    assert found.event_id == "DELIVER"
    assert found.source == "STOREDRIVER"
    assert found.date_time == datetime(2010, 10, 12, 10, 15, 30, 123456, tzinfo=UTC)
    assert found.recipient_address == ("a@contoso.test", "b@contoso.test")
    assert found.message_subject == "Hello, world"
    assert found.message_id == "" and found.total_bytes is None


def test_rows_the_emulator_cannot_read_are_skipped_or_refused_when_strict(tmp_path: Path) -> None:
    """Unknown event ids, bad dates and short rows are skipped; strict mode raises instead."""
    path = tmp_path / "MSGTRK20101012-1.LOG"
    path.write_text(
        "#Fields: date-time,source,event-id,internal-message-id\r\n"
        "2010-10-12T10:00:00.000Z,AGENT,AGENTINFO,1\r\n"
        "yesterday,SMTP,RECEIVE,2\r\n"
        "2010-10-12T10:00:00.000Z,SMTP\r\n"
        "2010-10-12T10:00:00.000Z,SMTP,RECEIVE,3\r\n",
        encoding="utf-8",
    )
    assert [e.internal_message_id for e in read_tracking_log(path)] == ["3"]
    with pytest.raises(ValueError, match=r"MSGTRK20101012-1\.LOG:2"):
        list(read_tracking_log(path, strict=True))


def test_find_tracking_logs_orders_by_date_then_number(tmp_path: Path) -> None:
    """-10 comes after -2; other files are ignored; a missing directory has no logs."""
    for name in (
        "MSGTRK20261128-10.LOG",
        "MSGTRK20261128-2.LOG",
        "msgtrk20261127-1.log",
        "RECV20261128-1.LOG",
        "notes.txt",
        "MSGTRKM20261128-1.LOG",
    ):
        (tmp_path / name).write_text("", encoding="utf-8")
    assert [p.name for p in find_tracking_logs(tmp_path)] == [
        "msgtrk20261127-1.log",
        "MSGTRKM20261128-1.LOG",
        "MSGTRK20261128-2.LOG",
        "MSGTRK20261128-10.LOG",
    ]
    assert find_tracking_logs(tmp_path / "missing") == []


# --- protocol logs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "relative", "log_type"),
    [
        ("SmtpReceive", "SmtpReceive/RECV20261128-1.LOG", "SMTP Receive Protocol Log"),
        ("SmtpSend", "SmtpSend/SEND20261128-1.LOG", "SMTP Send Protocol Log"),
    ],
)
def test_protocol_log_files_and_headers(
    tmp_path: Path, kind: str, relative: str, log_type: str
) -> None:
    """RECV/SEND files live in SmtpReceive/SmtpSend and open with Exchange's header."""
    log = ProtocolLog(tmp_path, kind=kind, clock=clock_at(NOON))  # type: ignore[arg-type]
    log.open_session("HUB01\\Default HUB01", "10.0.0.5:25", "10.0.0.9:50123").connected()
    log.close()
    assert lines(tmp_path / relative)[:5] == [
        "#Software: Microsoft Exchange Server",
        "#Version: 14.0.0.0",
        f"#Log-type: {log_type}",
        "#Date: 2026-11-28T13:00:00.000Z",
        "#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,"
        "remote-endpoint,event,data,context",
    ]
    assert ",".join(PROTOCOL_FIELDS) in lines(tmp_path / relative)[4]


def test_protocol_log_rows_number_each_session_from_zero(tmp_path: Path) -> None:
    """Each session's rows count 0, 1, 2... with the event symbols + > < * -."""
    clock = clock_at(NOON)
    log = ProtocolLog(tmp_path, kind="SmtpReceive", clock=clock)
    one = log.open_session("EDGE01\\Default EDGE01", "127.0.0.1:25", "127.0.0.1:40001")
    two = log.open_session("EDGE01\\Default EDGE01", "127.0.0.1:25", "127.0.0.1:40002")
    one.connected()
    one.sent("220 edge01.contoso.test Microsoft ESMTP MAIL Service ready")
    two.connected()
    one.received("EHLO hub01.contoso.test")
    clock.advance(25.639)
    one.info("Tarpit for '0.00:00:25.639' due to 'DelayedAck'", "Delivered")
    one.disconnected("Local")
    log.close()
    rows = list(read_protocol_log(tmp_path / "SmtpReceive" / "RECV20261128-1.LOG"))
    assert [(r.session_id, r.sequence_number, r.event) for r in rows] == [
        (one.session_id, 0, "+"),
        (one.session_id, 1, ">"),
        (two.session_id, 0, "+"),
        (one.session_id, 2, "<"),
        (one.session_id, 3, "*"),
        (one.session_id, 4, "-"),
    ]
    assert rows[3].data == "EHLO hub01.contoso.test"
    assert (rows[5].context, rows[1].remote_endpoint) == ("Local", "127.0.0.1:40001")
    assert rows[4].date_time == NOON + timedelta(seconds=25.639)
    raw = (tmp_path / "SmtpReceive" / "RECV20261128-1.LOG").read_text(encoding="utf-8")
    assert raw.splitlines()[9] == (
        f"2026-11-28T13:00:25.639Z,EDGE01\\Default EDGE01,{one.session_id},3,127.0.0.1:25,"
        "127.0.0.1:40001,*,Tarpit for '0.00:00:25.639' due to 'DelayedAck',Delivered"
    )


def test_protocol_data_with_commas_and_quotes_is_quoted(tmp_path: Path) -> None:
    """Data is CSV-quoted like every Exchange log field."""
    log = ProtocolLog(tmp_path, kind="SmtpSend", clock=clock_at(NOON))
    session = log.open_session("Internet", "10.0.0.5:50000", "192.0.2.7:25")
    session.received('250 2.0.0 OK "queued", id=1')
    log.close()
    path = tmp_path / "SmtpSend" / "SEND20261128-1.LOG"
    assert lines(path)[5].endswith(',<,"250 2.0.0 OK ""queued"", id=1",')
    assert [r.data for r in read_protocol_log(path)] == ['250 2.0.0 OK "queued", id=1']


def test_session_ids_are_16_hex_digits_and_unique_across_restarts(tmp_path: Path) -> None:
    """Ids are a counter seeded by clock time, so a later log never reuses an earlier id."""
    clock = clock_at(NOON)
    first = ProtocolLog(tmp_path, kind="SmtpReceive", clock=clock)
    ids = [first.open_session("c", "l", "r").session_id for _ in range(1000)]
    clock.advance(1)
    second = ProtocolLog(tmp_path, kind="SmtpReceive", clock=clock)
    ids += [second.open_session("c", "l", "r").session_id for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9A-F]{16}", session_id) for session_id in ids)
    assert len(set(ids)) == len(ids)


def test_protocol_log_rolls_over_by_size(tmp_path: Path) -> None:
    """Protocol logs share the tracking log's rollover: -1, -2... with a header each."""
    log = ProtocolLog(tmp_path, kind="SmtpReceive", clock=clock_at(NOON), max_file_size=400)
    session = log.open_session("c", "127.0.0.1:25", "127.0.0.1:4000")
    for n in range(10):
        session.received(f"NOOP {n}")
    log.close()
    files = sorted((tmp_path / "SmtpReceive").iterdir())
    assert len(files) > 1
    sequence = [r.sequence_number for p in files for r in read_protocol_log(p)]
    assert sorted(sequence) == list(range(10))


def test_null_logs_write_nothing(tmp_path: Path) -> None:
    """NullProtocolLog and NullMessageTrackingLog accept every call and touch no file."""
    null = NullProtocolLog()
    session = null.open_session("c", "l", "r")
    session.connected()
    session.sent("x")
    session.received("y")
    session.info("z", "w")
    session.disconnected()
    null.flush()
    null.close()
    tracking = NullMessageTrackingLog()
    tracking.record(event())
    tracking.close()
    assert list(tmp_path.iterdir()) == []


def test_logs_provide_their_interfaces(tmp_path: Path) -> None:
    """Real and null logs both satisfy the zope interfaces the servers depend on."""
    clock = clock_at(NOON)
    protocol = ProtocolLog(tmp_path, kind="SmtpSend", clock=clock)
    for log, session in (
        (protocol, protocol.open_session("c", "l", "r")),
        (NullProtocolLog(), NullProtocolLog().open_session("c", "l", "r")),
    ):
        assert verifyObject(IProtocolLog, log)
        assert verifyObject(IProtocolLogSession, session)
    assert verifyObject(IMessageTrackingLog, tracking_log(tmp_path, clock))
    assert verifyObject(IMessageTrackingLog, NullMessageTrackingLog())


# --- Get-MessageTrackingLog filters ----------------------------------------------------------


def sample_events() -> list[TrackingEvent]:
    return [
        event(
            date_time=NOON,
            internal_message_id="1",
            message_id="<m1@contoso.test>",
            sender_address="alice@contoso.test",
            recipient_address=("erin@fabrikam.test",),
            message_subject="Quarterly Numbers",
            server_hostname="HUB01.contoso.test",
        ),
        event(
            event_id="SEND",
            date_time=NOON + timedelta(minutes=1),
            internal_message_id="1",
            message_id="<m1@contoso.test>",
            sender_address="alice@contoso.test",
            recipient_address=("erin@fabrikam.test",),
            message_subject="Quarterly Numbers",
            server_hostname="EDGE01",
            custom_data=scenario_step("D.4.1"),
        ),
        event(
            event_id="DSN",
            source="DSN",
            date_time=NOON + timedelta(minutes=2),
            internal_message_id="7",
            message_id="<dsn@contoso.test>",
            sender_address="",
            recipient_address=("alice@contoso.test",),
            reference="<m1@contoso.test>",
            message_subject="Undeliverable: Quarterly",
            server_hostname="HUB01",
        ),
        event(
            event_id="DELIVER",
            source="STOREDRIVER",
            date_time=NOON + timedelta(minutes=3),
            internal_message_id="9",
            message_id="<m2@contoso.test>",
            sender_address="bob@contoso.test",
            recipient_address=("carol@contoso.test", "dave@contoso.test"),
            message_subject="Lunch?",
            server_hostname="HUB02",
        ),
    ]


def ids(events: list[TrackingEvent]) -> list[str]:
    return [f"{e.event_id}:{e.internal_message_id}" for e in events]


def test_no_filter_returns_everything_in_order() -> None:
    """Without filters every event comes back, in input order."""
    assert ids(filter_events(sample_events())) == ["RECEIVE:1", "SEND:1", "DSN:7", "DELIVER:9"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"start": NOON + timedelta(minutes=1)}, ["SEND:1", "DSN:7", "DELIVER:9"]),
        ({"end": NOON + timedelta(minutes=2)}, ["RECEIVE:1", "SEND:1"]),
        (
            {"start": datetime(2026, 11, 28, 13, 1), "end": datetime(2026, 11, 28, 13, 3)},
            ["SEND:1", "DSN:7"],
        ),
        ({"event_id": "deliver"}, ["DELIVER:9"]),
        ({"message_id": "<m1@contoso.test>"}, ["RECEIVE:1", "SEND:1"]),
        ({"message_id": "m2@contoso.test"}, ["DELIVER:9"]),
        ({"internal_message_id": "7"}, ["DSN:7"]),
        ({"sender": "Bob@Contoso.test"}, ["DELIVER:9"]),
        ({"recipients": ["nobody@x.test", "dave@contoso.test"]}, ["DELIVER:9"]),
        ({"recipients": "alice@contoso.test"}, ["DSN:7"]),
        ({"subject": "quarterly"}, ["RECEIVE:1", "SEND:1", "DSN:7"]),
        ({"subject": "UNDELIVERABLE"}, ["DSN:7"]),
        ({"reference": "<m1@contoso.test>"}, ["DSN:7"]),
        ({"server": "hub01"}, ["RECEIVE:1", "DSN:7"]),
        ({"server": "edge01.contoso.test"}, ["SEND:1"]),
    ],
)
def test_each_filter_alone(filters: dict[str, object], expected: list[str]) -> None:
    """Each Get-MessageTrackingLog filter selects what the cmdlet would."""
    assert ids(filter_events(sample_events(), **filters)) == expected  # type: ignore[arg-type]


def test_filters_combine_with_and() -> None:
    """Several filters all have to match."""
    assert ids(
        filter_events(
            sample_events(), sender="alice@contoso.test", event_id="SEND", subject="numbers"
        )
    ) == ["SEND:1"]
    assert filter_events(sample_events(), sender="alice@contoso.test", server="HUB02") == []
    assert ids(
        filter_events(
            sample_events(),
            message_id="<m1@contoso.test>",
            start=NOON + timedelta(seconds=30),
            recipients=["erin@fabrikam.test"],
        )
    ) == ["SEND:1"]


def test_result_size_defaults_to_1000_and_can_be_unlimited() -> None:
    """ResultSize: 1000 by default, any positive number, None for Unlimited."""
    many = [event(internal_message_id=str(n)) for n in range(DEFAULT_RESULT_SIZE + 5)]
    assert len(filter_events(many)) == 1000
    assert len(filter_events(many, result_size=None)) == 1005
    assert ids(filter_events(sample_events(), result_size=2)) == ["RECEIVE:1", "SEND:1"]
    assert ids(filter_events(sample_events(), subject="quarterly", result_size=1)) == ["RECEIVE:1"]
    with pytest.raises(ValueError):
        filter_events(many, result_size=0)


def test_time_filters_skip_events_without_a_time() -> None:
    """An event with no date-time cannot fall inside a time window."""
    assert filter_events([event()], start=NOON) == []
    assert len(filter_events([event()])) == 1


# --- output ----------------------------------------------------------------------------------


def test_format_table_shows_the_cmdlets_columns_and_the_step() -> None:
    """The table has one header, one rule and one line per event, with the scenario step."""
    table = format_table(sample_events())
    header, rule, *rows = table.rstrip("\n").split("\n")
    assert header.split() == [
        "Timestamp",
        "ServerHostname",
        "EventId",
        "Source",
        "Sender",
        "Recipients",
        "MessageSubject",
        "Steps",
    ]
    assert set(rule.replace(" ", "")) == {"-"}
    assert len(rows) == 4
    assert rows[1].startswith("2026-11-28T13:01:00.000Z EDGE01")
    assert rows[1].rstrip().endswith("D.4.1")
    assert "carol@contoso.test, dave@contoso.test" in rows[3]
    assert format_table([]).count("\n") == 2


def test_format_table_cuts_long_values() -> None:
    """Values wider than their column end with '...'."""
    table = format_table([event(date_time=NOON, message_subject="x" * 100)])
    assert "x" * 37 + "..." in table
    assert "x" * 38 not in table


def test_to_json_uses_the_cmdlets_property_names() -> None:
    """JSON objects carry Timestamp, EventId, Recipients, Sender... and CustomData."""
    (second,) = json.loads(to_json(sample_events()[1:2]))
    assert second["Timestamp"] == "2026-11-28T13:01:00.000Z"
    assert second["EventId"] == "SEND"
    assert second["Recipients"] == ["erin@fabrikam.test"]
    assert second["Sender"] == "alice@contoso.test"
    assert second["CustomData"] == {"scenario": "D", "step": "D.4.1"}
    assert second["TotalBytes"] is None
    assert len(second) == len(TRACKING_FIELDS)
    assert json.loads(to_json([])) == []


def test_a_row_the_csv_parser_rejects_is_skipped(tmp_path: Path) -> None:
    """A row csv cannot parse (a field over csv.field_size_limit) does not stop the reader."""
    path = tmp_path / "MSGTRK20261128-1.LOG"
    path.write_text(
        "#Fields: date-time,source,event-id,internal-message-id,message-subject\r\n"
        f"2026-11-28T13:00:00.000Z,SMTP,RECEIVE,1,{'x' * 200_000}\r\n"
        "2026-11-28T13:00:00.000Z,SMTP,RECEIVE,2,ok\r\n",
        encoding="utf-8",
    )
    assert [e.internal_message_id for e in read_tracking_log(path)] == ["2"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(['a', ' ', ',', '"', '\r', '\n', 'é', '\x00']),
                        max_size=6), min_size=1, max_size=5))
def test_log_rows_are_quoted_as_the_csv_module_quotes_them(values):
    """The fast row writer quotes exactly as csv.writer(QUOTE_MINIMAL, CRLF) does."""
    import csv
    import io

    from exchange_emu.logs.logfile import _csv_line

    expected = io.StringIO()
    csv.writer(expected, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n").writerow(values)
    assert _csv_line(values) == expected.getvalue()


_FIELD_TEXT = st.text(alphabet=st.sampled_from(['a', ' ', ',', '"', '\r', '\n', 'é']), max_size=6)


@settings(max_examples=300, deadline=None)
@given(connector=_FIELD_TEXT, local=_FIELD_TEXT, remote=_FIELD_TEXT, data=_FIELD_TEXT,
       context=_FIELD_TEXT)
def test_protocol_rows_are_quoted_as_the_csv_module_quotes_them(connector, local, remote, data,
                                                                context):
    """A protocol session's row, built from pre-quoted session columns, is exactly the row
    csv.writer(QUOTE_MINIMAL, CRLF) writes for the same nine values."""
    import csv
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        log = ProtocolLog(Path(directory), kind="SmtpSend", clock=clock_at(NOON))
        session = log.open_session(connector, local, remote)
        session.info(data, context)
        log.close()
        (path,) = (Path(directory) / "SmtpSend").iterdir()
        written = path.read_bytes().decode("utf-8").split("#Fields: ")[1].split("\r\n", 1)[1]
    expected = io.StringIO()
    csv.writer(expected, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n").writerow(
        ["2026-11-28T13:00:00.000Z", connector, session.session_id, "0", local, remote, "*",
         data, context])
    assert written == expected.getvalue()


_NOW = 1795870800.0  # 2026-11-28T13:00:00Z


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.floats(min_value=_NOW, max_value=_NOW + 5.0),
    # on and within a few microseconds of a millisecond's edge, where rounding to
    # microseconds decides which millisecond a row gets
    st.builds(lambda ms, offset: _NOW + ms / 1000 + offset,
              st.integers(0, 5000), st.sampled_from([-2.1e-6, -1e-6, -5e-7, -2.4e-7, 0.0,
                                                     2.4e-7, 5e-7, 1e-6, 2.1e-6]))),
    min_size=1, max_size=60))
def test_log_times_are_datetimes_to_the_millisecond_whatever_came_before(times):
    """format_timestamp remembers the last millisecond's text; every time, in any order
    after any other, still reads as ``datetime.fromtimestamp`` truncated to milliseconds."""
    from exchange_emu.logs.logfile import format_timestamp

    for when in times:
        exact = datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        assert format_timestamp(when) == exact[:-3] + "Z"
