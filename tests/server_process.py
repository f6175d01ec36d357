"""Real server processes for integration tests: an organization file on
free loopback ports, and twistd started, killed and restarted for real."""

from __future__ import annotations

import subprocess
from pathlib import Path

from org_files import small_org

from exchange_emu.lab.processes import TWISTD, ServerProcess, free_ports

__all__ = ["TWISTD", "ServerProcess", "free_ports", "run_to_exit", "small_org"]


def run_to_exit(
    argv: list[str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
