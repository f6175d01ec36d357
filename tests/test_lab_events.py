"""``GET /events`` of the lab endpoint: new tracking rows of every server, and snapshots
sent only when they change (the browser tests watch it live; these pin the rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from org_files import two_site_org
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from exchange_emu.admin.tracking import tracking_log_directory
from exchange_emu.directory import load_organization
from exchange_emu.lab.events import LabEvents, TrackingWatch
from exchange_emu.logs import MessageTrackingLog, TrackingEvent

T0 = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def write_rows(organization, server: str, *rows: tuple[int, str]) -> None:
    """Rows (milliseconds after T0, message id) into ``server``'s tracking log."""
    log = MessageTrackingLog(tracking_log_directory(organization.server(server)),
                             server_name=server, clock=Clock())
    for ms, message_id in rows:
        log.record(TrackingEvent(event_id="RECEIVE", source="SMTP", message_id=message_id,
                                 date_time=T0 + timedelta(milliseconds=ms),
                                 server_hostname=organization.server(server).fqdn))
    log.close()


def test_tracking_watch_reports_each_new_row_once(tmp_path):
    config, _ = two_site_org(tmp_path)
    organization = load_organization(config)
    watch = TrackingWatch(organization)
    write_rows(organization, "HUB01", (0, "<old@x>"))
    assert watch.new_rows() == []  # the first poll only sets the mark: no history
    write_rows(organization, "HUB03", (5, "<a@x>"), (9, "<b@x>"))
    write_rows(organization, "HUB01", (9, "<c@x>"))
    assert sorted(e.message_id for e in watch.new_rows()) == ["<a@x>", "<b@x>", "<c@x>"]
    assert watch.new_rows() == []
    # A row with the same time as the last one seen is still new.
    write_rows(organization, "HUB02", (9, "<same-ms@x>"), (20, "<later@x>"))
    assert sorted(e.message_id for e in watch.new_rows()) == ["<later@x>", "<same-ms@x>"]
    assert watch.new_rows() == []


def test_snapshots_go_out_only_when_they_change_and_polling_stops_with_the_last_page(
        tmp_path):
    config, _ = two_site_org(tmp_path)
    clock = Clock()
    events = LabEvents(load_organization(config), "http://127.0.0.1:1", clock)
    events.loop.f = lambda: None  # no lab to ask here: snapshots are published by hand
    page = DummyRequest([b""])
    events.render_GET(page)
    assert page.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/event-stream; charset=utf-8"]
    assert events.loop.running
    events.publish("queues", [{"Identity": "HUB01\\1", "MessageCount": 1}])
    events.publish("queues", [{"MessageCount": 1, "Identity": "HUB01\\1"}])  # same snapshot
    events.publish("queues", [{"Identity": "HUB01\\1", "MessageCount": 0}])
    written = b"".join(page.written).decode()
    assert written.count("event: queues\n") == 2
    assert '"MessageCount": 0' in written.split("event: queues\n")[-1]

    late = DummyRequest([b""])
    events.render_GET(late)  # a page that connects later gets the latest snapshot at once
    assert b"".join(late.written).decode().count("event: queues\n") == 1

    page.finish()
    assert events.loop.running
    late.finish()
    assert not events.loop.running
