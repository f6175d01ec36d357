"""The sequence diagram of a scenario run: read the message's rows from every server's
message tracking log and draw them (:mod:`exchange_emu.lab.diagram`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exchange_emu.admin.tracking import TrackingQuery, search_tracking_logs
from exchange_emu.directory import Organization
from exchange_emu.lab.diagram import build_diagram, render_svg
from exchange_emu.lab.scenarios import TITLES, ScenarioResult


def server_names(organization: Organization) -> dict[str, str]:
    """FQDN -> server name: the lanes of the diagram."""
    return {server.fqdn: server.name for server in organization.servers.values()}


def message_svg(organization: Organization, message_id: str, title: str = "") -> str:
    """The SVG sequence diagram of one message, from every server's tracking log."""
    found = search_tracking_logs(organization, TrackingQuery.from_text(
        message_id=message_id, result_size="unlimited"))
    return render_svg(build_diagram(found.events, server_names(organization),
                                    title or message_id))


def scenario_title(scenarios: str, message_id: str) -> str:
    names = ", ".join(f"{s} ({TITLES[s]})" for s in scenarios)
    return f"Scenario{'s' if len(scenarios) > 1 else ''} {names}: {message_id}"


def write_scenario_svgs(organization: Organization, results: Sequence[ScenarioResult],
                        path: Path) -> list[Path]:
    """One SVG per message of the run: ``path`` itself when the run sent one message,
    else ``<stem>-<scenarios><suffix>`` beside it (``out-ABC.svg``, ``out-DE.svg``)."""
    groups: dict[str, str] = {}
    for result in results:
        groups[result.message_id] = groups.get(result.message_id, "") + result.scenario
    written = []
    for message_id, scenarios in groups.items():
        target = path if len(groups) == 1 else path.with_name(
            f"{path.stem}-{scenarios}{path.suffix or '.svg'}")
        target.write_text(message_svg(organization, message_id,
                                      scenario_title(scenarios, message_id)), "utf-8")
        written.append(target)
    return written
