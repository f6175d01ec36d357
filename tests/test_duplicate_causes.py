"""Why a foreign recipient got a message twice, from the servers' tracking rows
(``exchange_emu.lab.duplicate_causes``): the two causes the crash matrix traces, and
what neither explains."""

from __future__ import annotations

from exchange_emu.lab.duplicate_causes import (
    SENT_AGAIN,
    TAKEOVER,
    UNEXPLAINED,
    duplicate_cause,
    duplicate_causes,
)
from exchange_emu.logs.tracking_event import TrackingEvent

HUB01, HUB02, EDGE01 = "hub01.contoso.test", "hub02.contoso.test", "edge01.contoso.test"
INTERNET01 = "mail.fabrikam.test"
SERVERS = {HUB01, HUB02, EDGE01, INTERNET01}
MESSAGE = "<crash-1@contoso.test>"


def receive(at: str, sender: str, step: str = "D.4.2", message: str = MESSAGE
            ) -> TrackingEvent:
    return TrackingEvent(event_id="RECEIVE", source="SMTP", server_hostname=at,
                         client_hostname=sender, message_id=message,
                         custom_data={"step": step})


def send(sender: str, to: str, message: str = MESSAGE) -> TrackingEvent:
    return TrackingEvent(event_id="SEND", source="SMTP", server_hostname=sender,
                         message_id=message, custom_data={"destination": to})


def path_once() -> list[TrackingEvent]:
    """Scenario D once through: the load client → HUB01 → HUB02 → EDGE01 → INTERNET01,
    with HUB01's held 250 released (F.7)."""
    return [receive(HUB01, "load.contoso.test", "F.4"), send(HUB01, HUB02),
            receive(HUB02, HUB01), send(HUB02, EDGE01), receive(EDGE01, HUB02),
            send(EDGE01, INTERNET01), receive(INTERNET01, EDGE01, ""),
            receive(HUB01, "load.contoso.test", "F.7")]


def test_a_takeover_is_named_by_its_resubmit_row():
    events = [*path_once(), TrackingEvent(event_id="RESUBMIT", source="SMTP",
                                          server_hostname=HUB01, message_id=MESSAGE),
              send(HUB01, "hub03.contoso.test")]
    assert duplicate_cause(events, SERVERS) == TAKEOVER


def test_a_hop_that_received_more_than_its_sender_recorded_was_sent_it_again():
    """HUB01 was killed after HUB02's 250 and before the commit that writes its SEND row;
    restarted, it sent the message again: HUB02 has two receipts from HUB01, HUB01 one
    SEND to HUB02."""
    events = [*path_once(), receive(HUB02, HUB01), send(HUB02, EDGE01),
              receive(EDGE01, HUB02), send(EDGE01, INTERNET01),
              receive(INTERNET01, EDGE01, "")]
    assert duplicate_cause(events, SERVERS) == SENT_AGAIN


def deliver(at: str, internal_id: str) -> TrackingEvent:
    return TrackingEvent(event_id="DELIVER", source="SMTP", server_hostname=at,
                         internal_message_id=internal_id, message_id=MESSAGE)


def test_a_hop_killed_before_its_250_left_was_sent_it_again():
    """INTERNET01 committed the message as internal id 2 and was killed before its 250
    left, and before its RECEIVE row reached the disk; restarted, it delivered id 2.
    EDGE01, which never got the 250, retried: INTERNET01 took it again as id 3. EDGE01 has
    one SEND to it, INTERNET01 two copies (the crash matrix's case D:INTERNET01)."""
    events = [*path_once()[:-2], deliver(INTERNET01, "2"), receive(INTERNET01, EDGE01, ""),
              deliver(INTERNET01, "3"), path_once()[-1]]
    assert duplicate_cause(events, SERVERS) == SENT_AGAIN


def test_one_receipt_delivered_twice_is_unexplained():
    """The same internal id delivered twice is not a lost acknowledgement: it would be a
    fault of the hop itself, and the crash matrix must show it."""
    events = [*path_once(), deliver(INTERNET01, "3"), deliver(INTERNET01, "3")]
    assert duplicate_cause(events, SERVERS) == UNEXPLAINED


def test_a_path_whose_every_receipt_was_sent_is_unexplained():
    """Every receipt matched by a SEND, the F.7 release and the load client's receipt
    (no tracking log of its own) included: neither cause shows."""
    assert duplicate_cause(path_once(), SERVERS) == UNEXPLAINED
    assert duplicate_cause([*path_once(), receive(HUB01, "load.contoso.test", "F.7")],
                           SERVERS) == UNEXPLAINED


def test_the_release_of_a_held_250_is_no_receipt():
    """LEGACY01 (Exchange 2007, a server of ours without XSHADOW) sent the message once;
    HUB01's F.7 row, which releases the held 250, names LEGACY01 as its client too."""
    legacy = "legacy01.contoso.test"
    events = [send(legacy, HUB01), receive(HUB01, legacy, "F.4"), send(HUB01, INTERNET01),
              receive(INTERNET01, HUB01, ""), receive(HUB01, legacy, "F.7")]
    assert duplicate_cause(events, SERVERS | {legacy}) == UNEXPLAINED


def test_a_sender_without_a_tracking_log_is_not_counted():
    """The load client sent the message twice (it retried after a broken session): that
    is not a hop's lost SEND row."""
    events = [*path_once(), receive(HUB01, "load.contoso.test", "F.4")]
    assert duplicate_cause(events, SERVERS) == UNEXPLAINED
    assert duplicate_cause(events, SERVERS | {"load.contoso.test"}) == SENT_AGAIN


def test_causes_of_several_messages_from_one_stream_of_rows():
    other = "<crash-2@contoso.test>"
    events = [*path_once(), receive(HUB02, HUB01),
              TrackingEvent(event_id="RESUBMIT", source="SMTP", server_hostname=HUB01,
                            message_id=other)]
    assert duplicate_causes(events, [MESSAGE, other, "<crash-3@contoso.test>"],
                            SERVERS) == {MESSAGE: SENT_AGAIN, other: TAKEOVER,
                                         "<crash-3@contoso.test>": UNEXPLAINED}
