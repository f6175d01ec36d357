"""The web queue viewer, served by the lab endpoint beside its JSON API.

    GET /                 the page (exchange_emu/lab/web/index.html)
    GET /static/<file>    its script and style sheet (package data; no build step)
    GET /events           live snapshots and tracking rows (:mod:`exchange_emu.lab.events`)
    POST /scenarios/...   the scenario runner; GET /diagram.svg (:mod:`.scenario_runs`)

The rest of the lab endpoint (``/servers``, ``/api/...``, ``/faults``) is its API tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web import resource, static

from exchange_emu.directory import Organization
from exchange_emu.lab.events import events_resource
from exchange_emu.lab.scenario_runs import MessageDiagram, ScenarioRuns

WEB_ROOT = Path(__file__).resolve().parent / "web"
"""The page's files, shipped as package data."""


def mount_viewer(root: resource.Resource, organization: Organization,
                 reactor: Any) -> resource.Resource:
    """Put the web queue viewer's resources on the lab endpoint's ``root``."""
    root.putChild(b"", static.File(str(WEB_ROOT / "index.html"), "text/html"))
    root.putChild(b"static", static.File(str(WEB_ROOT)))
    root.putChild(b"events", events_resource(organization, reactor))
    root.putChild(b"scenarios", ScenarioRuns(organization, reactor))
    root.putChild(b"diagram.svg", MessageDiagram(organization))
    return root
