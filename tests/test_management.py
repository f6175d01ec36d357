"""Management API pieces that need no server: identities, -Filter, result size, tables."""

from __future__ import annotations

import pytest

from exchange_emu.admin.errors import ManagementError, parse_result_size
from exchange_emu.admin.filters import FilterError, parse_filter
from exchange_emu.admin.formatting import format_list, format_table
from exchange_emu.admin.identity import (
    IdentityError,
    MessageIdentity,
    QueueIdentity,
    QueueKind,
    parse_message_identity,
    parse_queue_identity,
)
from exchange_emu.admin.queues import MESSAGE_PROPERTIES, QUEUE_PROPERTIES
from exchange_emu.admin.transport_config import updated_settings
from exchange_emu.directory import TransportSettings


@pytest.mark.parametrize(("text", "expected"), [
    ("HUB01\\Submission", QueueIdentity("HUB01", QueueKind.SUBMISSION)),
    ("hub01\\unreachable", QueueIdentity("HUB01", QueueKind.UNREACHABLE)),
    ("HUB01\\Poison", QueueIdentity("HUB01", QueueKind.POISON)),
    ("HUB01\\Shadow\\3", QueueIdentity("HUB01", QueueKind.SHADOW, 3)),
    ("HUB01\\12", QueueIdentity("HUB01", QueueKind.DELIVERY, 12)),
    ("HUB01/12", QueueIdentity("HUB01", QueueKind.DELIVERY, 12)),
])
def test_queue_identities_parse_and_print_back(text, expected):
    parsed = parse_queue_identity(text)
    assert parsed == expected
    assert parse_queue_identity(str(parsed)) == parsed


def test_message_identities():
    parsed = parse_message_identity("HUB01\\12\\345")
    assert parsed == MessageIdentity(QueueIdentity("HUB01", QueueKind.DELIVERY, 12), 345)
    assert str(parsed) == "HUB01\\12\\345"
    shadow = parse_message_identity("HUB02\\Shadow\\1\\7")
    assert shadow.queue.kind == QueueKind.SHADOW and shadow.internal_id == 7
    assert str(parse_message_identity("HUB01\\Submission\\9")) == "HUB01\\Submission\\9"


@pytest.mark.parametrize("text", ["", "HUB01", "HUB01\\", "HUB01\\Retry", "HUB01\\0",
                                  "HUB01\\-1", "HUB01\\Shadow", "HUB01\\Shadow\\x",
                                  "\\12", "HUB 01\\12"])
def test_bad_queue_identities_say_what_to_write(text):
    with pytest.raises(IdentityError) as raised:
        parse_queue_identity(text)
    message = str(raised.value)
    assert "\n" not in message and "SERVER\\" in message


@pytest.mark.parametrize("text", ["HUB01\\12", "HUB01\\12\\abc", "HUB01\\Nope\\3",
                                  "HUB01\\12\\0"])
def test_bad_message_identities(text):
    with pytest.raises(IdentityError, match=r"SERVER|positive"):
        parse_message_identity(text)


QUEUE = {"Identity": "HUB01\\3", "DeliveryType": "SmtpRelayToRemoteAdSite",
         "NextHopDomain": "Site-B", "Status": "Retry", "MessageCount": 7,
         "LastError": "451 4.4.0 refused", "RetryCount": 2, "NextRetryTime": None}


@pytest.mark.parametrize(("text", "hit"), [
    ('{Status -eq "Retry"}', True),
    ("{status -eq 'retry'}", True),
    ("{Status -eq Ready}", False),
    ("{MessageCount -gt 5}", True),
    ("{MessageCount -gt 7}", False),
    ("{MessageCount -ge 7}", True),
    ("{MessageCount -lt 8 -and Status -ne 'Ready'}", True),
    ('{Status -eq "Retry" -and NextHopDomain -eq "x"}', False),
    ('{NextHopDomain -like "site-*"}', True),
    ('{NextHopDomain -notlike "site-*"}', False),
    ("{NextRetryTime -eq $null}", True),
    ("MessageCount -gt 5", True),
    ("", True),
    (None, True),
])
def test_filters_match_like_exchange(text, hit):
    assert parse_filter(text, QUEUE_PROPERTIES).matches(QUEUE) is hit


@pytest.mark.parametrize(("text", "says"), [
    ("{Foo -eq 1}", "unknown property 'Foo'"),
    ("{Status -equals Retry}", "unknown operator '-equals'"),
    ("{Status -eq}", "ends early"),
    ("{MessageCount -gt many}", "MessageCount is a number"),
    ('{Status -eq "Retry" -or Status -eq "Ready"}', "-and only"),
    ('{Status -eq "Retry" Status -eq "Ready"}', "expected -and"),
    ('{Status -eq "Retry}', "unbalanced quote"),
    ('{Status -eq "Retry"', "opens a brace"),
    ('Status -eq "Retry"}', "closes a brace"),
])
def test_bad_filters_are_one_line_errors(text, says):
    with pytest.raises(FilterError) as raised:
        parse_filter(text, QUEUE_PROPERTIES)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_message_filter_properties():
    row = {"FromAddress": "alice@contoso.test", "Size": 2048, "Subject": "Quarterly report"}
    assert parse_filter('{FromAddress -eq "Alice@Contoso.test" -and Size -gt 1000}',
                        MESSAGE_PROPERTIES).matches(row)
    assert not parse_filter('{Subject -like "*invoice*"}', MESSAGE_PROPERTIES).matches(row)


def test_result_size():
    assert parse_result_size(None) == 1000
    assert parse_result_size("5") == 5
    assert parse_result_size("Unlimited") is None
    for bad in ("0", "-3", "lots"):
        with pytest.raises(ManagementError, match="positive number or 'unlimited'"):
            parse_result_size(bad)


def test_set_transport_config_checks_every_value():
    current = TransportSettings()
    new = updated_settings(current, {"shadowheartbeattimeoutinterval": "00:00:05",
                                     "ShadowHeartbeatRetryCount": "3",
                                     "ShadowRedundancyEnabled": "$false"})
    assert new.shadow_heartbeat_timeout_interval == 5.0
    assert new.shadow_heartbeat_retry_count == 3
    assert new.shadow_redundancy_enabled is False
    assert new.message_retry_interval == current.message_retry_interval
    with pytest.raises(ManagementError, match="unknown transport setting 'Nope'"):
        updated_settings(current, {"Nope": "1"})
    with pytest.raises(ManagementError, match="ShadowHeartbeatTimeoutInterval"):
        updated_settings(current, {"ShadowHeartbeatTimeoutInterval": "soon"})
    with pytest.raises(ManagementError, match="whole number"):
        updated_settings(current, {"ShadowHeartbeatRetryCount": "three"})
    with pytest.raises(ManagementError, match="give the settings"):
        updated_settings(current, {})


def test_tables_and_lists_look_like_the_shell():
    rows = [{"Identity": "HUB01\\Submission", "Status": "Ready", "MessageCount": 0},
            {"Identity": "HUB01\\1", "Status": "Retry", "MessageCount": 12}]
    assert format_table(rows, ("Identity", "Status", "MessageCount")) == (
        "Identity         Status MessageCount\n"
        "--------         ------ ------------\n"
        "HUB01\\Submission Ready  0\n"
        "HUB01\\1          Retry  12\n")
    assert format_table([], ("Identity",)) == ""
    assert format_list([{"Identity": "HUB01", "Enabled": True, "Error": None}]) == (
        "Identity : HUB01\nEnabled  : True\nError    : \n")
