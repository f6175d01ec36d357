"""Property-based fuzzing of the receive protocol and the envelope parser (hypothesis).

Bounded for CI: each property has a fixed example budget and the file runs in well under a
minute. For a long run set ``HYPOTHESIS_PROFILE=fuzz-long`` (``FUZZ_EXAMPLES`` examples per
property, 20000 by default; see docs/hostile-input.md).
"""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_fuzzing import FRAGMENTS, cut, run_session, sessions

from exchange_emu.smtp.envelope import (
    EnvelopeSyntaxError,
    decode_database_id,
    decode_shadow_context,
    parse_path_command,
    parse_shadow_message_id,
    xtext_decode,
    xtext_encode,
)

settings.register_profile("fuzz-ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz-long",
                          max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
                          deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz-ci")
FUZZ = settings.get_profile(PROFILE if PROFILE.startswith("fuzz-") else "fuzz-ci")

junk = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=24)),
                max_size=40).map(b"".join)
streams = st.one_of(junk, sessions(st))
cut_points = st.lists(st.integers(min_value=0, max_value=10**6), max_size=30)


@FUZZ
@given(streams, cut_points, st.booleans())
def test_any_bytes_in_any_pieces_keep_the_invariants(data, points, org):
    """No exception, only well-formed replies, one stored message per 250 2.6.0 — and the
    same replies and messages whether the bytes come at once or cut anywhere."""
    whole = run_session([data], org)
    assert run_session(cut(data, points), org) == whole


@FUZZ
@given(streams, cut_points, st.booleans(), st.randoms(use_true_random=False))
def test_commits_finishing_late_and_out_of_order_change_nothing(data, points, org, commits):
    """Pipelined messages handled while earlier commits are pending (the outbox): whatever
    order and moment the commits finish in, the replies and messages are those of commits
    that finish at once."""
    assert run_session(cut(data, points), org, commits=commits) == run_session([data], org)


@FUZZ
@given(streams, st.booleans())
def test_byte_by_byte_is_the_same_as_all_at_once(data, org):
    """The hardest cut: one byte per packet (an end of data or a BDAT size split
    everywhere)."""
    assert run_session([data[i:i + 1] for i in range(len(data))], org) == run_session([data],
                                                                                        org)


@FUZZ
@given(st.binary(max_size=300), cut_points)
def test_arbitrary_body_bytes_never_end_data_early_or_split_a_message(body, points):
    """Whatever the body holds, DATA ends only at the first CRLF.CRLF: at most one message
    per DATA, and if the body has no CRLF.CRLF the message is exactly the body (unstuffed)."""
    head = (b"EHLO x\r\nMAIL FROM:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n"
            b"Message-ID: <m@x>\r\n\r\n")
    data = head + body + b"\r\n.\r\n"
    outcome = run_session(cut(data, points))
    assert len(outcome.messages) <= 1 or b"\r\n.\r\n" in b"\r\n" + body + b"\r\n"
    if b"\r\n.\r\n" not in b"\r\n" + body + b"\r\n" and outcome.messages:
        (message,) = outcome.messages
        unstuffed = (b"\r\n" + body + b"\r\n").replace(b"\r\n..", b"\r\n.")[2:]
        assert message[2].endswith(b"Message-ID: <m@x>\r\n\r\n" + unstuffed)


@FUZZ
@given(st.text(max_size=120), st.sampled_from(["FROM", "TO"]))
def test_path_parser_gives_an_address_or_a_syntax_error(text, keyword):
    try:
        command = parse_path_command(text, keyword)
    except EnvelopeSyntaxError:
        return
    address = command.address
    assert address.isascii() and not any(ord(c) < 33 or ord(c) == 127 for c in address)
    assert address == "" or "@" in address
    assert all(k.isupper() or not k.isalpha() for k in command.params)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=200).map(
    lambda b: b.decode("latin-1"))))
def test_shadow_identifiers_parse_or_give_a_syntax_error(text):
    for parse in (decode_shadow_context, parse_shadow_message_id, decode_database_id,
                  xtext_decode):
        with contextlib.suppress(EnvelopeSyntaxError):
            parse(text)


@FUZZ
@given(st.text(max_size=60))
def test_xtext_round_trips(text):
    assert xtext_decode(xtext_encode(text)) == text


@FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=300), max_size=40)
       | st.text(alphabet="+=  aF09Gz\x7f\t", max_size=12))
def test_xtext_without_escapes_decodes_as_character_by_character(text):
    """The shortcut for text with nothing escaped gives what the full decoder gives
    (the same text, or the same syntax error)."""
    from exchange_emu.smtp.envelope import _decode_xtext_escapes

    def outcome(decode):
        try:
            return decode(text)
        except EnvelopeSyntaxError as error:
            return ("error", str(error))

    assert outcome(xtext_decode) == outcome(_decode_xtext_escapes)
