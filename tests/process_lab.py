"""A small lab of real server processes for integration tests: start, kill,
wipe and restart servers, and read their message tracking logs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from exchange_emu.directory import load_organization
from exchange_emu.lab.processes import ServerProcess
from exchange_emu.logs import TrackingEvent, read_tracking_logs


class ProcessLab:
    def __init__(self, config: Path, cwd: Path) -> None:
        self.config = config
        self.cwd = cwd
        self.organization = load_organization(config)
        self.processes: dict[str, ServerProcess] = {}

    def start(self, *names: str, env: dict[str, str] | None = None) -> None:
        for name in names:
            role = sorted(self.organization.server(name).roles)[0]
            self.processes[name] = ServerProcess(role, self.config, name, self.cwd,
                                                 env=env).start()

    def kill(self, name: str) -> None:
        self.processes.pop(name).kill()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.processes.clear()

    def wipe(self, name: str) -> None:
        """Delete a (stopped) server's queue database, as a lost disk would."""
        shutil.rmtree(self.organization.server(name).data_dir / "queue.db", ignore_errors=True)
        for path in self.organization.server(name).data_dir.glob("queue.db*"):
            path.unlink()

    def events(self, name: str) -> list[TrackingEvent]:
        directory = self.organization.server(name).data_dir / "TransportRoles" / "Logs"
        return list(read_tracking_logs(directory / "MessageTracking"))

    def wait_for(self, name: str, predicate: Callable[[TrackingEvent], bool],
                 timeout: float = 30.0, count: int = 1) -> list[TrackingEvent]:
        """Poll a running server's tracking log (bounded) until ``count`` rows match."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(name) if predicate(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                output = "\n".join(p.output[-3000:] for p in self.processes.values())
                raise AssertionError(
                    f"{name}: {len(found)} of {count} tracking rows after {timeout} s\n{output}")
            time.sleep(0.1)

    def output(self) -> str:
        return "\n".join(f"--- {n}\n{p.output}" for n, p in self.processes.items())


def step_rows(events: list[TrackingEvent], message_id: str) -> list[tuple[str, str]]:
    """(event id, step) for every step the rows of one message record, in log order."""
    out = []
    for event in events:
        if event.message_id == message_id:
            out.extend((event.event_id, step) for step in event.steps)
    return out
