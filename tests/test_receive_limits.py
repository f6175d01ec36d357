"""Receive connector limits (Get-ReceiveConnector) not pinned elsewhere: ConnectionTimeout
against a busy session, MaxHeaderSize, MaxProtocolErrors as configured, per-message
recipient counting, and that every limit of the organization file reaches the protocol.
(MaxMessageSize, MaxRecipientsPerMessage, MaxInboundConnection[PerSource],
MaxMessagesPerConnection, ConnectionInactivityTimeout and the line limits are in
test_smtp_server.py; the same limits against a real hub are in test_hostile_processes.py.)"""

from __future__ import annotations

import base64
from pathlib import Path

from hostile_lab import hostile_org

from exchange_emu.directory import load_organization
from exchange_emu.smtp.interfaces import ServerSettings
from exchange_emu.transport.server import receive_settings

from smtp_fakes import FakePolicy, connect


def test_connection_timeout_closes_even_a_busy_session():
    """ConnectionTimeout bounds the whole session; activity only resets the inactivity one."""
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", connection_timeout=10.0,
                              connection_inactivity_timeout=5.0)
    h = connect(settings=settings)
    h.output()
    for _ in range(3):
        h.clock.advance(3)
        assert h.feed(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
    h.clock.advance(0.9)
    assert not h.transport.disconnecting
    h.clock.advance(0.2)
    assert h.output() == b"421 4.4.1 Connection timed out\r\n"
    assert h.transport.disconnecting


def test_max_header_size_refuses_a_message_with_a_header_block_over_the_limit():
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", max_header_size=1024)
    h = connect(settings=settings)
    h.output()
    h.feed(b"EHLO x\r\n")
    mail = b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n"
    h.feed(mail)
    out = h.feed(b"X-Big: " + b"h" * 1100 + b"\r\nSubject: s\r\n\r\nbody\r\n.\r\n")
    assert out == b"552 5.3.4 Header size exceeds fixed maximum size\r\n"
    # Headers just under the limit and a body far over it: accepted.
    h.feed(mail)
    headers = b"X-Fill: " + b"h" * 990 + b"\r\n\r\n"
    out = h.feed(headers + (b"b" * 70 + b"\r\n") * 100 + b".\r\n")
    assert out.startswith(b"250 2.6.0")
    # No empty line at all: the whole message is header.
    h.feed(mail)
    assert h.feed((b"X-H: v\r\n") * 200 + b".\r\n").startswith(b"552 5.3.4 Header size")
    assert len(h.policy.stored) == 1


def test_max_protocol_errors_as_configured_counts_every_kind_of_error():
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", max_protocol_errors=3)
    h = connect(settings=settings)
    h.output()
    out = h.feed(b"FOO\r\nMAIL FROM:<a@contoso.test>\r\n")
    assert out == b"500 5.3.3 Unrecognized command\r\n503 5.5.2 Send hello first\r\n"
    assert not h.transport.disconnecting
    assert h.feed(b"EHLO\r\n") == (
        b"501 5.5.4 Invalid domain name\r\n"
        b"421 4.7.0 Too many errors on this connection, closing transmission channel\r\n")
    assert h.transport.disconnecting


def test_max_recipients_counts_per_message_not_per_session():
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", max_recipients_per_message=2)
    h = connect(settings=settings)
    h.output()
    h.feed(b"EHLO x\r\n")
    rcpts = b"RCPT TO:<b@contoso.test>\r\nRCPT TO:<c@contoso.test>\r\n"
    out = h.feed(b"MAIL FROM:<a@contoso.test>\r\n" + rcpts + b"DATA\r\nx\r\n.\r\n")
    assert out.endswith(b"Queued mail for delivery\r\n")
    out = h.feed(b"MAIL FROM:<a@contoso.test>\r\n" + rcpts + b"RCPT TO:<d@contoso.test>\r\n")
    assert out.endswith(b"250 2.1.5 Recipient OK\r\n452 4.5.3 Too many recipients\r\n")


def test_every_receive_connector_limit_of_the_file_reaches_the_protocol(tmp_path: Path):
    """The organization file's keys become the session's settings (MaxHeaderSize did not)."""
    config, _ = hostile_org(
        tmp_path, max_message_size="1MB", max_recipients_per_message=7,
        max_inbound_connection=600, max_inbound_connection_per_source=550,
        max_messages_per_connection=3, connection_timeout="00:02:00",
        connection_inactivity_timeout="00:00:09", max_protocol_errors=4,
        max_command_line_length=1000, max_data_line_length=2000, max_header_size="32KB")
    org = load_organization(config)
    server = org.server("HUB01")
    connector = server.receive_connector("Default HUB01")
    assert connector is not None
    settings = receive_settings(server, connector)
    assert (settings.max_message_size, settings.max_recipients_per_message,
            settings.max_inbound_connection, settings.max_inbound_connection_per_source,
            settings.max_messages_per_connection, settings.connection_timeout,
            settings.connection_inactivity_timeout, settings.max_protocol_errors,
            settings.max_command_line_length, settings.max_data_line_length,
            settings.max_header_size) == (
        1024**2, 7, 600, 550, 3, 120.0, 9.0, 4, 1000, 2000, 32 * 1024)


def test_tarpit_holds_a_5xx_to_an_anonymous_peer_and_what_was_pipelined_after_it():
    """TarpitInterval: the 5xx goes out after the interval, later replies after it, in order;
    the protocol log says why."""
    lines: list[str] = []
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", tarpit_interval=5.0)
    h = connect(FakePolicy(org=False), settings)
    h.proto.protocol_log.info = lambda data, context="": lines.append(data)
    h.output()
    assert h.feed(b"EHLO x\r\nFOO\r\nNOOP\r\n").startswith(b"250-hub01.contoso.test Hello")
    h.clock.advance(4.8)
    assert h.output() == b""
    h.clock.advance(0.4)
    assert h.output() == b"500 5.3.3 Unrecognized command\r\n250 2.0.0 OK\r\n"
    assert lines == ["Tarpit for '0.00:00:05' due to '500 5.3.3 Unrecognized command'"]


def test_tarpit_spares_org_servers_and_authenticated_clients_and_2xx():
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", tarpit_interval=5.0)
    h = connect(FakePolicy(org=True), settings)
    h.output()
    assert h.feed(b"FOO\r\n") == b"500 5.3.3 Unrecognized command\r\n"
    client = ServerSettings("Client HUB01", "hub01.contoso.test", client_connector=True,
                            auth_mechanisms=("PLAIN",), require_authentication=True,
                            tarpit_interval=5.0)
    h = connect(FakePolicy(org=False), client)
    h.output()
    plain = base64.b64encode(b"\0alice@contoso.test\0secret")
    assert h.feed(b"EHLO x\r\nAUTH PLAIN " + plain + b"\r\n").endswith(b"235 2.7.0 "
                                                                        b"Authentication "
                                                                        b"successful\r\n")
    assert h.feed(b"MAIL FROM:<bob@contoso.test>\r\n") == (
        b"550 5.7.1 Client does not have permissions to send as this sender\r\n")


def test_tarpitted_junk_connection_is_throttled_to_one_error_per_interval():
    """Five junk lines at once from an anonymous peer: the 421 comes 25 s later, not now."""
    settings = ServerSettings("Default HUB01", "hub01.contoso.test", tarpit_interval=5.0)
    h = connect(FakePolicy(org=False), settings)
    h.output()
    assert h.feed(b"JUNK\r\n" * 5) == b""
    for _ in range(4):
        h.clock.advance(5)
        assert h.output() == b"500 5.3.3 Unrecognized command\r\n"
    assert not h.transport.disconnecting
    h.clock.advance(5)
    assert h.transport.disconnecting
    assert h.output().endswith(b"421 4.7.0 Too many errors on this connection, closing "
                               b"transmission channel\r\n")
