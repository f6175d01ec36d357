"""Hostile input against a real hub process over loopback, with a real foreign sink
(aiosmtpd) behind it: SMTP smuggling, junk of every kind, relay control and the receive
connector limits, each with its Exchange reply — and nothing acknowledged is ever lost."""

from __future__ import annotations

import contextlib
import smtplib
import time
from pathlib import Path

import pytest
from hostile_lab import RawSession, hostile_org, hub_and_sink, send
from sink import Sink

from server_process import ServerProcess

pytestmark = pytest.mark.integration

FULL_MAIL = (b"EHLO client.fabrikam.test\r\nMAIL FROM:<alice@fabrikam.test>\r\n"
             b"RCPT TO:<erin@fabrikam.test>\r\nDATA\r\n")
SMUGGLERS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\n", b"\r.\r\n",
             b"\n.\r"]


def _no_crash(hub: ServerProcess) -> None:
    assert hub.proc is not None and hub.proc.poll() is None, hub.output
    for word in ("Traceback", "Unhandled", "Error"):
        assert word not in hub.output, hub.output


def test_smtp_smuggling_never_splits_one_message_into_two(tmp_path: Path):
    """Each session sends one message holding a bare-CR/LF fake end of data and a whole
    forged transaction after it: the sink receives exactly one message per session, with
    the full body, and never the forged sender's."""
    with hub_and_sink(tmp_path) as (hub, sink, port):
        for n, smuggle in enumerate(SMUGGLERS):
            s = RawSession(port)
            s.send(FULL_MAIL)
            for _ in range(4):
                s.reply()  # EHLO, MAIL, RCPT, 354
            forged = (b"MAIL FROM:<ceo@contoso.test>\r\nRCPT TO:<victim@fabrikam.test>\r\n"
                      b"DATA\r\nSubject: forged\r\n\r\nwire the money")
            s.send(f"Message-ID: <smuggle-{n}@fabrikam.test>\r\nSubject: s\r\n\r\nhello"
                   .encode() + smuggle + forged + b"\r\n.\r\n")
            reply = s.reply()
            assert reply.startswith(b"250 2.6.0"), reply
            assert s.command(b"QUIT\r\n").startswith(b"221")
            s.close()
        messages = sink.wait_for(len(SMUGGLERS))
        time.sleep(0.5)  # a split would show up as extra messages: give them a moment
        assert len(sink.messages) == len(SMUGGLERS)
        assert all(m.sender == "alice@fabrikam.test" for m in sink.messages)
        for n, smuggle in enumerate(SMUGGLERS):
            (message,) = [m for m in messages if f"<smuggle-{n}@".encode() in m.data]
            assert message.data.endswith(b"hello" + smuggle + forged + b"\r\n")
        _no_crash(hub)


def test_two_pipelined_messages_are_never_merged(tmp_path: Path):
    with hub_and_sink(tmp_path) as (hub, sink, port):
        s = RawSession(port)
        one = FULL_MAIL + b"Message-ID: <one@f.test>\r\n\r\none\r\n.\r\n"
        two = (b"MAIL FROM:<alice@fabrikam.test>\r\nRCPT TO:<erin@fabrikam.test>\r\nDATA\r\n"
               b"Message-ID: <two@f.test>\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
        s.send(one + two)
        replies = [s.reply() for _ in range(9)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354", b"250", b"250",
                                            b"250", b"354", b"250"]
        assert sorted(m.data.rsplit(b"\r\n\r\n", 1)[1] for m in sink.wait_for(2)) == [
            b"one\r\n", b"two\r\n"]
        _no_crash(hub)


HOSTILE_SESSIONS: list[tuple[str, bytes]] = [
    ("binary junk", bytes(range(256)) * 64 + b"\r\n"),
    ("NUL lines", b"\x00\r\n" * 10),
    ("non-UTF-8 commands", b"EHLO \xff\xfe\r\nNOOP \xc3(\r\nMAIL FROM:<\xe9@x.test>\r\n"),
    ("endless line", b"A" * 3_000_000),
    ("header injection", b"EHLO evil\rX-Injected: 1\r\nEHLO ok\r\n"
                         b"MAIL FROM:<a@f.test>\rRCPT TO:<b@f.test>\r\n"
                         b"MAIL FROM:<a@f.test> ENVID=+0D+0ABcc:x\r\n"),
    ("truncated DATA at EOF", FULL_MAIL + b"Subject: cut\r\n\r\nno end"),
    ("truncated BDAT at EOF", b"EHLO x\r\nMAIL FROM:<a@fabrikam.test>\r\n"
                              b"RCPT TO:<erin@fabrikam.test>\r\nBDAT 1000 LAST\r\nshort"),
    ("BDAT bad size", b"EHLO x\r\nMAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<erin@fabrikam.test>"
                      b"\r\nBDAT \xc2\xb2 LAST\r\nMAIL FROM:<evil@x.test>\r\n"),
    ("XSHADOW garbage", b"EHLO x\r\nXSHADOW " + b"\xff" * 300 + b"\r\nXSHADOW ====\r\n"
                        b"XQDISCARD \xd9\xa1\r\n"),
    ("half a command", b"MAIL FROM:<a@fab"),
]


def test_hostile_sessions_never_lose_an_acknowledged_message(tmp_path: Path):
    """A message is acknowledged while the next hop is down, so it sits in HUB01's queue;
    then every hostile session runs (each followed by a healthy banner). When the next hop
    comes up, the acknowledged message arrives once, whole, and nothing from the hostile
    sessions does."""
    config, ports = hostile_org(tmp_path)
    hub = ServerProcess("hub", config, "HUB01", tmp_path).start()
    try:
        body = "line\r\n" * 2000
        code, reply = send(ports["HUB01"], "<acked@fabrikam.test>", body)
        assert code == 250, reply
        for name, data in HOSTILE_SESSIONS:
            s = RawSession(ports["HUB01"])
            # The server may close on us (too many errors): that is its answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.send(data)
            s.close()
            banner = RawSession(ports["HUB01"])
            assert banner.banner.startswith(b"220 hub01.contoso.test"), name
            banner.close()
        with Sink(ports["INTERNET01"]) as sink:
            (message,) = sink.wait_for(1)
            assert b"Message-ID: <acked@fabrikam.test>" in message.data
            assert message.data.endswith(body.encode())
            time.sleep(0.5)
            assert len(sink.messages) == 1
        _no_crash(hub)
    finally:
        hub.stop()


def test_anonymous_relay_to_a_domain_that_is_not_accepted_is_refused(tmp_path: Path):
    with hub_and_sink(tmp_path) as (_hub, _sink, port), \
            smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("spammer.example")
        assert "xshadow" not in client.esmtp_features  # an anonymous peer
        client.mail("spam@example.net")
        assert client.rcpt("victim@example.org") == (550, b"5.7.1 Unable to relay")
        assert client.rcpt("erin@fabrikam.test")[0] == 250  # ExternalRelay: accepted
        assert client.docmd("XSHADOW", "QUJD") == (550, b"5.7.1 Not authorized")


def test_receive_connector_limits_on_a_real_hub(tmp_path: Path):
    """MaxMessageSize, MaxRecipientsPerMessage, MaxMessagesPerConnection,
    MaxInboundConnectionPerSource, MaxProtocolErrors and ConnectionInactivityTimeout, each
    with its Exchange reply, on HUB01's Default connector."""
    with hub_and_sink(tmp_path, max_message_size="64KB", max_recipients_per_message=2,
                      max_messages_per_connection=1, max_inbound_connection_per_source=3,
                      max_protocol_errors=2, connection_inactivity_timeout="00:00:01",
                      connection_timeout="00:00:30") as (hub, sink, port):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("c.fabrikam.test")
            assert client.esmtp_features["size"] == "65536"
            client.mail("a@fabrikam.test")
            for to in ("e1@fabrikam.test", "e2@fabrikam.test"):
                assert client.rcpt(to)[0] == 250
            assert client.rcpt("e3@fabrikam.test") == (452, b"4.5.3 Too many recipients")
            assert client.data(b"Subject: big\r\n\r\n" + b"x" * 70_000) == (
                552, b"5.3.4 Message size exceeds fixed maximum message size")
            assert client.mail("a@fabrikam.test", ["SIZE=70000"]) == (
                552, b"5.3.4 Message size exceeds fixed maximum message size")
            client.mail("a@fabrikam.test")
            client.rcpt("e1@fabrikam.test")
            assert client.data(b"Subject: ok\r\n\r\nfits\r\n")[0] == 250
            assert client.mail("a@fabrikam.test") == (
                421, b"4.4.2 The maximum number of messages per connection has been reached, "
                     b"closing transmission channel")
        sink.wait_for(1)
        held = [RawSession(port) for _ in range(3)]
        extra = RawSession(port)
        assert extra.banner == (b"421 4.3.2 The maximum number of concurrent connections has "
                                b"exceeded a limit, closing transmission channel\r\n")
        assert extra.closed_by_server()
        # ConnectionInactivityTimeout (1 s) frees the idle ones: the source may connect again.
        for s in held:
            assert s.reply() == b"421 4.4.1 Connection timed out\r\n"
            assert s.closed_by_server()
        again = RawSession(port)
        assert again.banner.startswith(b"220 ")
        assert again.command(b"FOO\r\n") == b"500 5.3.3 Unrecognized command\r\n"
        again.send(b"BAR\r\n")
        assert again.reply() == b"500 5.3.3 Unrecognized command\r\n"
        assert again.reply() == (b"421 4.7.0 Too many errors on this connection, closing "
                                 b"transmission channel\r\n")
        assert again.closed_by_server()
        _no_crash(hub)


def test_slow_loris_is_cut_off_by_connection_timeout(tmp_path: Path):
    """One byte every 0.3 s keeps ConnectionInactivityTimeout (1 s) from firing, but not
    ConnectionTimeout (3 s): the session ends with 421 4.4.1 and the hub still serves."""
    with hub_and_sink(tmp_path, connection_inactivity_timeout="00:00:01",
                      connection_timeout="00:00:03") as (hub, sink, port):
        loris = RawSession(port)
        started = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in b"EHLO slowloris.example.with.a.long.name\r\n" * 3:
                loris.send(bytes([byte]))
                loris.sock.settimeout(0.3)
                with contextlib.suppress(TimeoutError):
                    if b"421 4.4.1" in loris.sock.recv(4096):
                        break
        lasted = time.monotonic() - started
        assert 2.5 < lasted < 6, lasted
        assert send(port, "<after-loris@fabrikam.test>")[0] == 250
        assert len(sink.wait_for(1)) == 1
        _no_crash(hub)
