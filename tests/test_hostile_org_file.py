"""A damaged organization file — bytes flipped in the TOML text, or any TOML value in any
receive connector limit — gives an Organization or one OrganizationFileError line that names
the file, never a traceback. (test_directory.py damages the parsed lab's values; these go
through the file itself and through the receive connector keys.)"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import Any

from hostile_lab import hostile_org
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange_emu.directory import Organization, OrganizationFileError, load_organization
from exchange_emu.directory.loader import RECEIVE_CONNECTOR_KEYS
from exchange_emu.transport.server import receive_settings

LAB = Path(__file__).resolve().parents[1] / "etc" / "lab.toml"
LAB_BYTES = LAB.read_bytes()
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(text: bytes) -> Organization | OrganizationFileError:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "lab.toml"
        path.write_bytes(text)
        try:
            return load_organization(path)
        except OrganizationFileError as error:
            message = str(error)
            assert message.startswith(f"{path}: "), message
            assert "\n" not in message and "Traceback" not in message, message
            return error


mutations = st.lists(
    st.tuples(st.integers(0, len(LAB_BYTES) - 1), st.integers(0, 3), st.binary(max_size=6)),
    min_size=1, max_size=4)


@FUZZ
@given(mutations)
def test_flipped_bytes_in_the_organization_file_give_one_line(edits):
    """Overwrite, insert or delete bytes anywhere in etc/lab.toml."""
    text = bytearray(LAB_BYTES)
    for at, how, data in edits:
        at %= max(len(text), 1)
        if how == 0:
            text[at:at + len(data)] = data
        elif how == 1:
            text[at:at] = data
        elif how == 2:
            del text[at:at + len(data) + 1]
        else:
            text[at:at] = b"\x00\xff\r\n["
    _load(bytes(text))


TOML_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))),
    st.text(max_size=20).map(lambda t: '"' + t.encode("unicode_escape").decode("ascii")
                             .replace('"', '\\"') + '"'),
    st.sampled_from(['""', '"00:00:00"', '"-00:00:01"', '"99999.23:59:59"', '"1e400"',
                     '"unlimited"', '"0MB"', '"10GB"', '"-5KB"', "true", "[]", "[1, 2]",
                     "{}", '{a = 1}', "1979-05-27T07:32:00Z", "07:32:00", '"\\u0000"',
                     '"127.0.0.1:0"', '"*:99999"', '["300.1.1.1/8"]', '["::/0"]']),
    st.dates(min_value=datetime.date(1, 1, 1)).map(str),
)


@FUZZ
@given(st.sampled_from(RECEIVE_CONNECTOR_KEYS), TOML_VALUES)
def test_any_value_in_a_receive_connector_key_gives_a_connector_or_one_line(key, value):
    with tempfile.TemporaryDirectory() as directory:
        config, _ = hostile_org(Path(directory))
        text = config.read_text()
        marker = 'name = "Default HUB01"\n'
        before, after = text.split(marker, 1)
        block, rest = after.split("\n[", 1)
        # The connector's own line for the key goes (hostile_org sets a few; a duplicate
        # key is a TOML error of its own, tested well enough by the name and bind keys).
        block = "\n".join(line for line in block.split("\n")
                          if not line.startswith(f"{key} = "))
        text = f"{before}{marker}{key} = {value}\n{block}\n[{rest}"
        outcome: Any = _load(text.encode())
    if isinstance(outcome, OrganizationFileError):
        # It names the key, or the one it goes with (certificate and private key, …).
        # (A list's item is named with its index: auth_mechanisms[0]: …)
        named = ("TOML syntax error" in str(outcome)
                 or any(f"receive_connectors[0].{k}{end}" in str(outcome)
                        for k in RECEIVE_CONNECTOR_KEYS for end in (":", "[")))
        assert named, str(outcome)
        return
    server = outcome.server("HUB01")
    connector = server.receive_connector("Default HUB01")
    assert connector is not None
    receive_settings(server, connector)  # the protocol's settings can be built from it
