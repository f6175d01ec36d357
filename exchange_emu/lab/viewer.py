"""The web queue viewer, served by the lab endpoint beside its JSON API.

    GET /                 the page (exchange_emu/lab/web/index.html)
    GET /static/<file>    its script and style sheet (package data; no build step)
    GET /events           live snapshots and tracking rows (:mod:`exchange_emu.lab.events`)
    POST /scenarios/...   the scenario runner; GET /diagram.svg (:mod:`.scenario_runs`)

Everything else goes to the lab's API resource (``/servers``, ``/api/...``, ``/faults``).
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


class ViewerRoot(resource.Resource):
    """The lab endpoint's root: the viewer's resources, then the API resource."""

    def __init__(self, api: resource.Resource, organization: Organization,
                 reactor: Any) -> None:
        super().__init__()
        self.api = api
        self.putChild(b"", static.File(str(WEB_ROOT / "index.html"), "text/html"))
        self.putChild(b"static", static.File(str(WEB_ROOT)))
        self.putChild(b"events", events_resource(organization, reactor))
        self.putChild(b"scenarios", ScenarioRuns(organization, reactor))
        self.putChild(b"diagram.svg", MessageDiagram(organization))

    def getChild(self, path: bytes, request: Any) -> resource.Resource:
        if self.api.isLeaf:  # a leaf API resource reads the whole path itself
            request.postpath.insert(0, request.prepath.pop())
            return self.api
        return self.api.getChildWithDefault(path, request)


def with_viewer(api: resource.Resource, organization: Organization,
                reactor: Any) -> resource.Resource:
    """``api`` with the web queue viewer in front of it."""
    return ViewerRoot(api, organization, reactor)
