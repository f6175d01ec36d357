"""Tests for ``exchange-emu track`` (Get-MessageTrackingLog over the organization's servers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from exchange_emu.admin import TrackingQuery, TrackingQueryError, merge_by_time
from exchange_emu.cli import main
from exchange_emu.lab.org_builder import OrgSpec, ServerSpec, write_org
from exchange_emu.logs import MessageTrackingLog, TrackingEvent, format_table, scenario_step

NOON = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
MSG_A = "<7c1d@contoso.test>"
MSG_B = "<9e2f@contoso.test>"


def two_hub_org(directory: Path) -> Path:
    """An organization with two hubs (HUB01, HUB02) whose data lives under ``directory``."""
    spec = OrgSpec([ServerSpec("HUB01", "hub", 32525), ServerSpec("HUB02", "hub", 32526)])
    return write_org(directory / "org.toml", spec, directory / "var")


def tracking_dir(directory: Path, server: str) -> Path:
    return directory / "var" / server / "TransportRoles" / "Logs" / "MessageTracking"


def write_log(directory: Path, server: str, events: list[tuple[float, TrackingEvent]]) -> None:
    """Write ``events`` (seconds after NOON, event) to ``server``'s tracking log."""
    clock = Clock()
    clock.advance(NOON.timestamp())
    log = MessageTrackingLog(
        tracking_dir(directory, server),
        server_name=f"{server.lower()}.contoso.test",
        server_ip="127.0.0.1",
        clock=clock,
    )
    for offset, event in events:
        clock.advance(NOON.timestamp() + offset - clock.seconds())
        log.record(event)
    log.close()


def ev(event_id: str, message_id: str = MSG_A, **kwargs: object) -> TrackingEvent:
    values: dict[str, object] = {
        "event_id": event_id,
        "source": "SMTP",
        "message_id": message_id,
        "internal_message_id": "1",
        "sender_address": "alice@contoso.test",
        "recipient_address": ("erin@fabrikam.test",),
        "message_subject": "Budget, Q4",
    }
    values.update(kwargs)
    return TrackingEvent(**values)  # type: ignore[arg-type]


@pytest.fixture
def org(tmp_path: Path) -> Path:
    """Two hubs with interleaved tracking logs (HUB01 has two files)."""
    path = two_hub_org(tmp_path)
    write_log(
        tmp_path,
        "HUB01",
        [
            (0, ev("RECEIVE", custom_data=scenario_step("A.1"))),
            (2, ev("SEND", internal_message_id="1", reference="<ref@contoso.test>")),
            (4, ev("HARECEIVE", internal_message_id="2")),
        ],
    )
    write_log(  # a restart: the next file of the day
        tmp_path,
        "HUB01",
        [
            (
                5,
                ev(
                    "RECEIVE",
                    MSG_B,
                    internal_message_id="3",
                    sender_address="bob@contoso.test",
                    recipient_address=("gina@contoso.test", "hal@contoso.test"),
                    message_subject="Lunch",
                ),
            )
        ],
    )
    write_log(
        tmp_path,
        "HUB02",
        [
            (1, ev("RECEIVE", internal_message_id="7")),
            (3, ev("DELIVER", internal_message_id="7")),
            (4, ev("NOTIFYSHADOW", internal_message_id="8")),
        ],
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["track", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def rows(out: str) -> list[list[str]]:
    """The table's data rows, split into (timestamp, server, event-id, ...) words."""
    return [line.split() for line in out.splitlines()[2:]]


def json_events(out: str) -> list[dict[str, object]]:
    data = json.loads(out)
    assert isinstance(data, list)
    return data


# --- merging ----------------------------------------------------------------------------------


def test_whole_organization_is_merged_in_time_order(
    org: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --server every server's logs are searched and the events interleave by time;
    each row names its server (server-hostname); ties keep the file's server order."""
    status, out, err = run(capsys, "--config", str(org))
    assert status == 0
    assert err == ""
    assert out.splitlines()[0].split()[:3] == ["Timestamp", "ServerHostname", "EventId"]
    assert [(r[1], r[2]) for r in rows(out)] == [
        ("hub01.contoso.test", "RECEIVE"),
        ("hub02.contoso.test", "RECEIVE"),
        ("hub01.contoso.test", "SEND"),
        ("hub02.contoso.test", "DELIVER"),
        ("hub01.contoso.test", "HARECEIVE"),
        ("hub02.contoso.test", "NOTIFYSHADOW"),
        ("hub01.contoso.test", "RECEIVE"),
    ]
    assert rows(out)[0][0] == "2026-11-28T13:00:00.000Z"
    assert rows(out)[0][-1] == "A.1"


def test_server_chooses_whose_logs(org: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--server picks the servers searched (case-insensitive, each once, in file order)."""
    status, out, _ = run(capsys, "--config", str(org), "--server", "hub02")
    assert status == 0
    assert [r[2] for r in rows(out)] == ["RECEIVE", "DELIVER", "NOTIFYSHADOW"]
    assert {r[1] for r in rows(out)} == {"hub02.contoso.test"}
    _, both, _ = run(
        capsys, "--config", str(org), "--server", "HUB02", "HUB01", "--server", "hub01"
    )
    _, everything, _ = run(capsys, "--config", str(org))
    assert both == everything


def test_merge_by_time_is_stable() -> None:
    """Equal times keep the order of the streams, then each stream's order."""
    at = NOON
    first = [ev("RECEIVE", date_time=at), ev("SEND", date_time=at)]
    second = [ev("DELIVER", date_time=at - timedelta(seconds=1)), ev("FAIL", date_time=at)]
    merged = merge_by_time([first, second])
    assert [e.event_id for e in merged] == ["DELIVER", "RECEIVE", "SEND", "FAIL"]


# --- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--event-id", "receive"], ["RECEIVE", "RECEIVE", "RECEIVE"]),
        (["--message-id", "9e2f@contoso.test"], ["RECEIVE"]),
        (["--message-id", MSG_A, "--event-id", "SEND"], ["SEND"]),
        (["--internal-message-id", "7"], ["RECEIVE", "DELIVER"]),
        (["--sender", "BOB@contoso.test"], ["RECEIVE"]),
        (["--recipients", "nobody@x.test", "hal@contoso.test"], ["RECEIVE"]),
        (["--subject", "lun"], ["RECEIVE"]),
        (["--reference", "<REF@contoso.test>"], ["SEND"]),
        (
            ["--start", "2026-11-28T13:00:02Z", "--end", "2026-11-28T13:00:04"],
            ["SEND", "DELIVER"],
        ),
        (
            ["--start", "2026-11-28T14:00:03+01:00"],
            ["DELIVER", "HARECEIVE", "NOTIFYSHADOW", "RECEIVE"],
        ),
        (["--end", "2026-11-28"], []),
    ],
)
def test_filters(
    org: Path, capsys: pytest.CaptureFixture[str], options: list[str], expected: list[str]
) -> None:
    """Each option filters as the Get-MessageTrackingLog parameter of the same name."""
    status, out, err = run(capsys, "--config", str(org), *options)
    assert status == 0, err
    assert [r[2] for r in rows(out)] == expected


def test_result_size_keeps_the_earliest_and_warns(
    org: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--result-size N shows the first N merged events and warns that more matched."""
    status, out, err = run(capsys, "--config", str(org), "--result-size", "2")
    assert status == 0
    assert [(r[1], r[2]) for r in rows(out)] == [
        ("hub01.contoso.test", "RECEIVE"),
        ("hub02.contoso.test", "RECEIVE"),
    ]
    assert len(err.splitlines()) == 1
    assert "--result-size" in err
    status, out, err = run(capsys, "--config", str(org), "--result-size", "Unlimited")
    assert len(rows(out)) == 7
    assert err == ""


# --- JSON -------------------------------------------------------------------------------------


def test_json_shape(org: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints a JSON array of events with the cmdlet's property names, merged."""
    status, out, _ = run(capsys, "--config", str(org), "--json", "--message-id", MSG_A)
    assert status == 0
    events = json_events(out)
    assert [(e["ServerHostname"], e["EventId"]) for e in events] == [
        ("hub01.contoso.test", "RECEIVE"),
        ("hub02.contoso.test", "RECEIVE"),
        ("hub01.contoso.test", "SEND"),
        ("hub02.contoso.test", "DELIVER"),
        ("hub01.contoso.test", "HARECEIVE"),
        ("hub02.contoso.test", "NOTIFYSHADOW"),
    ]
    first = events[0]
    assert first["Timestamp"] == "2026-11-28T13:00:00.000Z"
    assert first["MessageId"] == MSG_A
    assert first["Sender"] == "alice@contoso.test"
    assert first["Recipients"] == ["erin@fabrikam.test"]
    assert first["MessageSubject"] == "Budget, Q4"
    assert first["Source"] == "SMTP"
    assert first["CustomData"] == {"scenario": "A", "step": "A.1"}
    assert {"ClientIp", "ServerIp", "InternalMessageId", "RecipientStatus", "Reference"} <= set(
        first
    )


# --- errors and empty results -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--start", "yesterday"], "--start 'yesterday' is not an ISO 8601 date"),
        (["--end", "2026-13-01"], "--end '2026-13-01' is not an ISO 8601 date"),
        (["--start", "2026-11-29", "--end", "2026-11-28"], "is after --end"),
        (["--event-id", "BOUNCE"], "unknown event id 'BOUNCE'"),
        (["--result-size", "0"], "--result-size '0' is not a positive number or 'unlimited'"),
        (["--result-size", "lots"], "is not a positive number"),
        (["--internal-message-id", "x1"], "--internal-message-id 'x1' is not a number"),
        (["--server", "HUB09"], "no server named 'HUB09'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    org: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    """A bad date, event id, result size or server name: one error line, exit status 2."""
    status, out, err = run(capsys, "--config", str(org), *options)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("exchange-emu: error: ")
    assert message in err


def test_unknown_server_lists_the_known_ones(org: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The unknown-server error names the servers of the file."""
    _, _, err = run(capsys, "--config", str(org), "--server", "HUB01", "EDGE01")
    assert "known: HUB01, HUB02" in err


def test_no_logs_is_a_message_and_an_empty_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No tracking logs at all: one line on stderr, exit 0, an empty table or []."""
    path = two_hub_org(tmp_path)
    status, out, err = run(capsys, "--config", str(path))
    assert status == 0
    assert out == format_table([])
    assert len(err.splitlines()) == 1
    assert "no message tracking logs found" in err
    assert "2 servers" in err
    status, out, err = run(capsys, "--config", str(path), "--json", "--server", "HUB02")
    assert status == 0
    assert json.loads(out) == []
    assert str(tracking_dir(tmp_path, "HUB02")) in err


def test_no_match_is_an_empty_table_without_message(
    org: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logs found but nothing matching: an empty table, nothing on stderr."""
    status, out, err = run(capsys, "--config", str(org), "--sender", "nobody@contoso.test")
    assert (status, out, err) == (0, format_table([]), "")


def test_port_offset_is_accepted(org: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--port-offset loads the file as the lab does; the logs are the same."""
    status, out, _ = run(capsys, "--config", str(org), "--port-offset", "100", "--json")
    assert status == 0
    assert len(json_events(out)) == 7


def test_query_from_text_normalizes() -> None:
    """TrackingQuery.from_text parses dates to UTC, upper-cases the event id, sizes."""
    query = TrackingQuery.from_text(
        start="2026-11-28T14:00:00+01:00", event_id="send", result_size="unlimited"
    )
    assert query.start == NOON
    assert query.event_id == "SEND"
    assert query.result_size is None
    assert TrackingQuery.from_text().result_size == 1000
    with pytest.raises(TrackingQueryError):
        TrackingQuery.from_text(end="noon")
