"""Tests for exchange_emu.transport.dsn: Exchange 2010 NDRs, delay DSNs and success DSNs."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any

import pytest

from exchange_emu.transport.dsn import (
    DsnMessage,
    NoDsnWanted,
    RecipientStatus,
    build_delay_dsn,
    build_ndr,
    build_success_dsn,
    dsn_recipients,
    original_subject,
    wants_dsn,
)

ARRIVAL = datetime(2026, 11, 28, 13, 0, tzinfo=UTC).timestamp()
NOW = ARRIVAL + 60
HUB = "hub01.contoso.test"
POSTMASTER = "postmaster@contoso.test"
SENDER = "alice@contoso.test"
NOT_FOUND = "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"

ORIGINAL = (
    b"From: Alice <alice@contoso.test>\r\n"
    b"To: erin@fabrikam.test, frank@fabrikam.test\r\n"
    b"Subject: Budget, Q4\r\n"
    b"Message-ID: <7c1d@contoso.test>\r\n"
    b"Date: Sat, 28 Nov 2026 13:00:00 +0000\r\n"
    b"\r\n"
    b"The body of the budget mail.\r\n"
)


def erin(**kwargs: Any) -> RecipientStatus:
    values: dict[str, Any] = {
        "address": "erin@fabrikam.test",
        "status": "5.1.1",
        "diagnostic": NOT_FOUND,
    }
    values.update(kwargs)
    return RecipientStatus(**values)


def ndr(**kwargs: Any) -> DsnMessage:
    values: dict[str, Any] = {
        "reporting_mta": HUB,
        "postmaster": POSTMASTER,
        "original_sender": SENDER,
        "original": ORIGINAL,
        "recipients": [erin()],
        "arrival": ARRIVAL,
        "now": NOW,
    }
    values.update(kwargs)
    return build_ndr(**values)


def delay(**kwargs: Any) -> DsnMessage:
    values: dict[str, Any] = {
        "reporting_mta": HUB,
        "postmaster": POSTMASTER,
        "original_sender": SENDER,
        "original": ORIGINAL,
        "recipients": [
            erin(
                status="4.4.7",
                diagnostic="451 4.4.0 Primary target IP address responded with: "
                '"421 4.4.2 Connection dropped."',
                remote_mta="mx.fabrikam.test",
            )
        ],
        "arrival": ARRIVAL,
        "now": ARRIVAL + 4 * 3600,
        "retry_until": ARRIVAL + 2 * 86400,
    }
    values.update(kwargs)
    return build_delay_dsn(**values)


def parse(dsn: DsnMessage) -> EmailMessage:
    message = email.message_from_bytes(dsn.body, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(dsn: DsnMessage) -> list[Message]:
    payload = parse(dsn).get_payload()
    assert isinstance(payload, list)
    return payload


def human_text(dsn: DsnMessage) -> str:
    part = parts(dsn)[0]
    assert isinstance(part, EmailMessage)
    return str(part.get_content()).replace("\r\n", "\n")


def status_blocks(dsn: DsnMessage) -> list[Message]:
    blocks = parts(dsn)[1].get_payload()
    assert isinstance(blocks, list)
    return blocks


# --- structure -----------------------------------------------------------------------------


def test_ndr_is_a_multipart_report_of_three_parts() -> None:
    """An NDR is RFC 3464 multipart/report; report-type=delivery-status with text,
    message/delivery-status and the original message, in that order."""
    message = parse(ndr())
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(ndr())] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    assert not message.defects


def test_ndr_headers_follow_exchange() -> None:
    """From the postmaster (as 'Microsoft Outlook'), to the original sender, 'Undeliverable:'
    subject, Message-ID at the reporting server, auto-replied, and Exchange's NDR marker."""
    dsn = ndr()
    message = parse(dsn)
    assert parseaddr(str(message["From"])) == ("Microsoft Outlook", POSTMASTER)
    assert parseaddr(str(message["To"]))[1] == SENDER
    assert message["Subject"] == "Undeliverable: Budget, Q4"
    assert str(message["Message-ID"]) == dsn.message_id
    assert re.fullmatch(r"<[0-9a-f-]{36}@hub01\.contoso\.test>", dsn.message_id)
    assert message["Auto-Submitted"] == "auto-replied"
    assert "X-MS-Exchange-Message-Is-Ndr" in message
    assert message["X-MS-Exchange-Message-Is-Ndr"] == ""
    assert message["In-Reply-To"] == "<7c1d@contoso.test>"
    assert parsedate_to_datetime(str(message["Date"])).timestamp() == NOW


def test_dsn_envelope_is_from_the_null_sender_to_the_original_sender() -> None:
    """The DSN goes out from <> to the original sender (brackets dropped)."""
    dsn = ndr(original_sender="<alice@contoso.test>")
    assert dsn.sender == ""
    assert dsn.recipient == SENDER
    assert dsn.subject == "Undeliverable: Budget, Q4"
    assert dsn.kind == "failed"
    assert dsn.reported == ("erin@fabrikam.test",)


def test_dsn_bytes_use_crlf_line_ends_only() -> None:
    """Every line of the DSN ends in CRLF, even when the original used bare LF."""
    dsn = ndr(original=ORIGINAL.replace(b"\r\n", b"\n"))
    assert b"\n" not in dsn.body.replace(b"\r\n", b"")
    assert b"\r" not in dsn.body.replace(b"\r\n", b"")
    assert dsn.body.endswith(b"--\r\n")


def test_boundary_does_not_occur_in_the_parts() -> None:
    """The MIME boundary never occurs inside the report's parts."""
    dsn = ndr()
    boundary = parse(dsn).get_boundary()
    assert boundary is not None
    assert dsn.body.count(b"--" + boundary.encode()) == 4  # three parts and the close


def test_same_message_id_gives_the_same_bytes() -> None:
    """With the Message-ID given, building is deterministic (no clock, no randomness)."""
    first = ndr(message_id="<1@hub01.contoso.test>")
    second = ndr(message_id="<1@hub01.contoso.test>")
    assert first == second


# --- the delivery-status part -----------------------------------------------------------------


def test_delivery_status_per_message_fields() -> None:
    """Reporting-MTA, Received-From-MTA, Arrival-Date and, with ENVID, Original-Envelope-Id."""
    dsn = ndr(received_from_mta="edge01.contoso.test", envid="QQ+2B314")
    per_message = status_blocks(dsn)[0]
    assert per_message["Reporting-MTA"] == "dns;hub01.contoso.test"
    assert per_message["Received-From-MTA"] == "dns;edge01.contoso.test"
    assert parsedate_to_datetime(str(per_message["Arrival-Date"])).timestamp() == ARRIVAL
    assert per_message["Original-Envelope-Id"] == "QQ+314"


def test_delivery_status_per_recipient_fields_of_an_ndr() -> None:
    """One block per recipient: Final-Recipient, Action failed, Status, Diagnostic-Code;
    Remote-MTA only where another server answered; Original-Recipient only with ORCPT."""
    dsn = ndr(
        recipients=[
            erin(orcpt="rfc822;erin+2Bbudget@fabrikam.test"),
            RecipientStatus(
                "frank@fabrikam.test",
                "5.1.1",
                "550 5.1.1 <frank@fabrikam.test>: Recipient address rejected",
                remote_mta="mx.fabrikam.test",
            ),
        ]
    )
    blocks = status_blocks(dsn)
    assert len(blocks) == 3
    first, second = blocks[1], blocks[2]
    assert first["Final-Recipient"] == "rfc822;erin@fabrikam.test"
    assert first["Original-Recipient"] == "rfc822;erin+budget@fabrikam.test"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.1.1"
    assert first["Diagnostic-Code"] == f"smtp;{NOT_FOUND}"
    assert "Remote-MTA" not in first
    assert "Will-Retry-Until" not in first
    assert second["Final-Recipient"] == "rfc822;frank@fabrikam.test"
    assert "Original-Recipient" not in second
    assert second["Remote-MTA"] == "dns;mx.fabrikam.test"
    assert second["Diagnostic-Code"] == (
        "smtp;550 5.1.1 <frank@fabrikam.test>: Recipient address rejected"
    )


def test_delay_dsn_status_fields() -> None:
    """A delay DSN says Action delayed, a 4.x.x Status and Will-Retry-Until (the expiry)."""
    block = status_blocks(delay())[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.7"
    assert block["Remote-MTA"] == "dns;mx.fabrikam.test"
    until = parsedate_to_datetime(str(block["Will-Retry-Until"])).timestamp()
    assert until == ARRIVAL + 2 * 86400


# --- the human-readable part ----------------------------------------------------------------


def test_ndr_wording() -> None:
    """The text part has Exchange 2010's NDR sections and '#<reply> ##' diagnostic lines."""
    text = human_text(ndr())
    assert text.startswith(
        "Delivery has failed to these recipients or groups:\n\nerin@fabrikam.test\n"
    )
    assert "The e-mail address you entered couldn't be found." in text
    assert "Diagnostic information for administrators:" in text
    assert "Generating server: hub01.contoso.test" in text
    assert f"erin@fabrikam.test\n#{NOT_FOUND} ##\n" in text
    assert "Original message headers:" in text
    assert "Message-ID: <7c1d@contoso.test>" in text


def test_ndr_names_the_remote_server_that_rejected() -> None:
    """A rejection by another server puts its name before the diagnostic, as Exchange does."""
    text = human_text(ndr(recipients=[erin(remote_mta="mx.fabrikam.test")]))
    assert f"mx.fabrikam.test #{NOT_FOUND} ##" in text
    assert "The following organization rejected your message: mx.fabrikam.test." in text


def test_delay_dsn_wording() -> None:
    """The delay DSN says delivery is delayed, keeps trying, and for how long."""
    dsn = delay()
    text = human_text(dsn)
    assert dsn.subject == "Delivery Delayed: Budget, Q4"
    assert text.startswith(
        "Delivery is delayed to these recipients or groups:\n\nerin@fabrikam.test\n"
    )
    assert "Subject: Budget, Q4" in text
    assert "This message hasn't been delivered yet. Delivery will continue to be attempted." in text
    assert (
        "The server will keep trying to deliver this message for the next 1 days, 20 hours and "
        "0 minutes. You'll be notified if the message can't be delivered by that time." in text
    )
    assert "Generating server: hub01.contoso.test" in text
    assert "X-MS-Exchange-Message-Is-Ndr" not in parse(dsn)


def test_delay_remaining_time_counts_down_to_minutes() -> None:
    """The remaining time is the whole minutes until retry_until."""
    text = human_text(delay(now=ARRIVAL, retry_until=ARRIVAL + 86400 + 3 * 3600 + 5 * 60 + 59))
    assert "for the next 1 days, 3 hours and 5 minutes." in text


def test_success_dsns() -> None:
    """NOTIFY=SUCCESS gets 'Delivered:' (mailbox delivery) or 'Relayed:' (no DSN beyond)."""
    success = erin(status="2.0.0", diagnostic="250 2.0.0 OK", notify="SUCCESS")
    delivered = build_success_dsn(
        kind="delivered",
        reporting_mta=HUB,
        postmaster=POSTMASTER,
        original_sender=SENDER,
        original=ORIGINAL,
        recipients=[success],
        arrival=ARRIVAL,
        now=NOW,
    )
    assert delivered.subject == "Delivered: Budget, Q4"
    assert "Your message has been delivered to the following recipients:" in human_text(delivered)
    assert status_blocks(delivered)[1]["Action"] == "delivered"
    assert parts(delivered)[2].get_content_type() == "text/rfc822-headers"
    relayed = build_success_dsn(
        kind="relayed",
        reporting_mta=HUB,
        postmaster=POSTMASTER,
        original_sender=SENDER,
        original=ORIGINAL,
        recipients=[success],
        arrival=ARRIVAL,
        now=NOW,
    )
    assert relayed.subject == "Relayed: Budget, Q4"
    assert status_blocks(relayed)[1]["Action"] == "relayed"
    with pytest.raises(NoDsnWanted):
        build_success_dsn(
            kind="delivered",
            reporting_mta=HUB,
            postmaster=POSTMASTER,
            original_sender=SENDER,
            original=ORIGINAL,
            recipients=[erin(status="2.0.0", diagnostic="250 2.0.0 OK")],
            arrival=ARRIVAL,
            now=NOW,
        )


# --- NOTIFY (RFC 3461) and the null sender ----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "notify", "expected"),
    [
        ("failed", None, True),
        ("delayed", None, True),
        ("delivered", None, False),
        ("relayed", None, False),
        ("failed", "NEVER", False),
        ("delayed", "NEVER", False),
        ("delivered", "NEVER", False),
        ("failed", "SUCCESS", False),
        ("delayed", "SUCCESS", False),
        ("delivered", "SUCCESS", True),
        ("relayed", "SUCCESS", True),
        ("failed", "FAILURE", True),
        ("delayed", "FAILURE", False),
        ("delayed", "DELAY", True),
        ("failed", "DELAY", False),
        ("failed", "success,failure", True),
        ("delayed", "SUCCESS,FAILURE", False),
        ("delayed", "FAILURE,DELAY", True),
    ],
)
def test_wants_dsn_follows_notify(kind: Any, notify: str | None, expected: bool) -> None:
    """RFC 3461: no NOTIFY means failure and delay DSNs; NEVER means none; else as listed."""
    assert wants_dsn(kind, SENDER, notify) is expected


@pytest.mark.parametrize("sender", ["", "<>", " <> "])
@pytest.mark.parametrize("kind", ["failed", "delayed", "delivered", "relayed"])
def test_null_sender_never_wants_a_dsn(sender: str, kind: Any) -> None:
    """A message from <> (itself a DSN) never gets a DSN, whatever NOTIFY says."""
    assert not wants_dsn(kind, sender, "SUCCESS,FAILURE,DELAY")
    assert not wants_dsn(kind, sender, None)


def test_null_sender_gets_no_ndr_or_delay_dsn() -> None:
    """Building a DSN for a message from <> refuses with NoDsnWanted (no bounce loops)."""
    with pytest.raises(NoDsnWanted):
        ndr(original_sender="<>")
    with pytest.raises(NoDsnWanted):
        delay(original_sender="")


def test_ndr_reports_only_recipients_asking_for_failure() -> None:
    """NOTIFY without FAILURE drops that recipient from the NDR; all dropped: no NDR."""
    recipients = [
        erin(notify="DELAY"),
        RecipientStatus("frank@fabrikam.test", "5.1.1", NOT_FOUND, notify="FAILURE"),
        RecipientStatus("gina@fabrikam.test", "5.1.1", NOT_FOUND),
        RecipientStatus("hal@fabrikam.test", "5.1.1", NOT_FOUND, notify="NEVER"),
    ]
    dsn = ndr(recipients=recipients)
    assert dsn.reported == ("frank@fabrikam.test", "gina@fabrikam.test")
    finals = [str(block["Final-Recipient"]) for block in status_blocks(dsn)[1:]]
    assert finals == ["rfc822;frank@fabrikam.test", "rfc822;gina@fabrikam.test"]
    assert "\nerin@fabrikam.test\n" not in human_text(dsn).split("Original message headers:")[0]
    with pytest.raises(NoDsnWanted):
        ndr(recipients=[erin(notify="NEVER"), erin(notify="SUCCESS,DELAY")])


def test_delay_dsn_needs_delay_in_notify() -> None:
    """NOTIFY without DELAY: no delay DSN."""
    with pytest.raises(NoDsnWanted):
        delay(recipients=[erin(status="4.4.7", diagnostic="451 4.4.0", notify="FAILURE")])


def test_dsn_recipients_filters_by_kind() -> None:
    """dsn_recipients lets a caller check first whether a DSN is due."""
    recipients = [erin(notify="FAILURE"), erin(address="x@fabrikam.test", notify="DELAY")]
    assert [r.address for r in dsn_recipients("delayed", SENDER, recipients)] == ["x@fabrikam.test"]
    assert dsn_recipients("failed", "<>", recipients) == ()


def test_status_must_fit_the_kind_of_dsn() -> None:
    """A delay DSN carries 4.x.x statuses, an NDR 4.x.x or 5.x.x; a bad code is refused."""
    with pytest.raises(ValueError, match="does not fit"):
        delay(recipients=[erin()])
    with pytest.raises(ValueError, match="does not fit"):
        ndr(recipients=[erin(status="2.0.0")])
    assert ndr(recipients=[erin(status="4.4.7", diagnostic="550 4.4.7 QUEUE.Expired")])
    with pytest.raises(ValueError, match="enhanced status"):
        erin(status="550")


# --- the returned original ---------------------------------------------------------------------


def test_ndr_returns_the_full_original_by_default() -> None:
    """Without RET, an NDR returns the whole original as message/rfc822."""
    returned = parts(ndr())[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert isinstance(inner, EmailMessage)
    assert inner["Message-ID"] == "<7c1d@contoso.test>"
    assert "The body of the budget mail." in str(inner.get_content())


def test_ret_hdrs_returns_headers_only() -> None:
    """RET=HDRS returns text/rfc822-headers: the header block, never the body."""
    dsn = ndr(ret="HDRS")
    returned = parts(dsn)[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    text = returned.get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"Message-ID: <7c1d@contoso.test>" in text
    assert b"The body of the budget mail." not in dsn.body


def test_delay_dsn_returns_headers_unless_ret_full() -> None:
    """A delay DSN returns only headers by default; RET=FULL returns the whole original."""
    assert parts(delay())[2].get_content_type() == "text/rfc822-headers"
    assert parts(delay(ret="FULL"))[2].get_content_type() == "message/rfc822"


def test_oversize_original_returns_headers_only() -> None:
    """An original over max_original_size is returned as headers only, even with RET=FULL."""
    big = ORIGINAL + b"x" * 5000 + b"\r\n"
    dsn = ndr(original=big, ret="FULL", max_original_size=4096)
    assert parts(dsn)[2].get_content_type() == "text/rfc822-headers"
    assert b"x" * 100 not in dsn.body
    assert parts(ndr(original=big, max_original_size=len(big)))[2].get_content_type() == (
        "message/rfc822"
    )


# --- subjects ----------------------------------------------------------------------------------


def test_non_ascii_encoded_subject_survives() -> None:
    """An RFC 2047 subject is decoded, prefixed and re-encoded: readers see the same text."""
    original = ORIGINAL.replace(
        b"Subject: Budget, Q4", b"Subject: =?utf-8?q?Budget_=C3=BCber_Q4_?=\r\n =?utf-8?b?4oKs?="
    )
    assert original_subject(original) == "Budget über Q4 €"
    dsn = ndr(original=original)
    assert dsn.subject == "Undeliverable: Budget über Q4 €"
    assert parse(dsn)["Subject"] == "Undeliverable: Budget über Q4 €"
    assert dsn.body.split(b"\r\n\r\n")[0].isascii()
    assert "Subject: Budget über Q4 €" in human_text(delay(original=original))


def test_raw_utf8_subject_survives_and_marks_8bit() -> None:
    """An 8-bit UTF-8 subject is read too; the returned original is marked 8bit."""
    original = ORIGINAL.replace(b"Subject: Budget, Q4", "Subject: Бюджет".encode())
    dsn = ndr(original=original)
    assert parse(dsn)["Subject"] == "Undeliverable: Бюджет"
    assert parts(dsn)[2]["Content-Transfer-Encoding"] == "8bit"
    assert dsn.body_type == "8BITMIME"
    assert ndr().body_type == "7BIT"


def test_missing_subject_gives_a_bare_prefix() -> None:
    """An original without Subject gives 'Undeliverable:'."""
    original = b"From: alice@contoso.test\r\n\r\nbody\r\n"
    assert original_subject(original) == ""
    assert ndr(original=original).subject == "Undeliverable:"
