"""Coverage-guided fuzzing of the SMTP receive protocol with atheris (libFuzzer).

Each input is split in two by its first byte: a list of cut points, then the bytes of a
session. The session runs over a StringTransport (see tests/smtp_fuzzing.py) twice, whole
and cut into packets, and must keep every invariant: no exception, well-formed replies only,
one stored message per ``250 2.6.0``, identical outcome however it is cut.

Run large (stop with Ctrl-C; a crash is saved as ``crash-<sha1>`` in the current directory):

    .venv/bin/python tests/fuzz/fuzz_smtp.py -dict=tests/fuzz/smtp.dict \\
        -max_total_time=3600 /tmp/smtp-corpus tests/fuzz/corpus

Replay one input: ``.venv/bin/python tests/fuzz/fuzz_smtp.py crash-<sha1>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

with atheris.instrument_imports(include=["exchange_emu.smtp"]):
    from smtp_fuzzing import cut, run_session


def split_input(data: bytes) -> tuple[list[int], bytes]:
    """The first byte says how many cut points follow (two bytes each); the rest is the
    session."""
    if not data:
        return [], b""
    count = data[0] % 16
    header, session = data[1 : 1 + 2 * count], data[1 + 2 * count :]
    points = [int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header) - 1, 2)]
    return points, session


def test_one_input(data: bytes) -> None:
    points, session = split_input(data)
    org = bool(points) and points[0] % 2 == 0
    whole = run_session([session], org)
    pieces = run_session(cut(session, points), org)
    assert pieces == whole, (pieces, whole)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
