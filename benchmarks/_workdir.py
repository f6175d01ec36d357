"""The directory a benchmark runs its servers in: a temporary one, or ``--keep DIR``."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


def add_keep_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="run in DIR (created) and keep the servers' logs and queue "
                             "databases there, for inspection")


@contextlib.contextmanager
def work_directory(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, kept afterwards), or a temporary directory under /var/tmp
    (searchable by smtp-sink's ``nobody``), removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        yield Path(directory)
