"""The scenario sequence diagram: tracking rows of every server -> lanes, arrows, step
labels and shadow bars in an SVG (parsed back with xml.etree)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from exchange_emu.lab.diagram import Arrow, build_diagram, render_svg
from exchange_emu.logs import TrackingEvent, scenario_steps

SVG = "{http://www.w3.org/2000/svg}"
NAMES = {"hub01.contoso.test": "HUB01", "edge01.contoso.test": "EDGE01",
         "mail.fabrikam.test": "INTERNET01"}
MID = "<d@contoso.test>"
T0 = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def row(event_id: str, host: str, ms: int, *steps: str, client: str = "",
        source: str = "SMTP", status: str = "", **extra: str) -> TrackingEvent:
    return TrackingEvent(event_id=event_id, source=source, date_time=at(ms),
                         server_hostname=host, client_hostname=client, message_id=MID,
                         recipient_status=(status,) if status else (),
                         custom_data=scenario_steps(*steps, **extra) if steps else extra)


def scenario_d_rows() -> list[TrackingEvent]:
    """HUB01 -> EDGE01 -> INTERNET01, as the lab logs it. The receiver's RECEIVE has the
    same millisecond as the sender's SEND, and the rows come in file order, not causal."""
    return [
        row("HADISCARD", "hub01.contoso.test", 80, "D.5", primary="EDGE01"),
        row("SEND", "hub01.contoso.test", 10, "D.1", "D.2", "D.3", "D.4.1",
            status="250 2.6.0 Queued mail for delivery", destination="edge01.contoso.test"),
        row("HAREDIRECT", "hub01.contoso.test", 10, "D.4.3", primary="EDGE01",
            shadow_message_id="s1"),
        row("RECEIVE", "edge01.contoso.test", 10, "D.4.2", client="hub01.contoso.test",
            shadow_message_id="s1"),
        row("SEND", "edge01.contoso.test", 30, "E.1", "E.2", "E.3", "E.4", "E.5",
            status="250 2.6.0 Queued", destination="mail.fabrikam.test"),
        row("RECEIVE", "mail.fabrikam.test", 29, client="edge01.contoso.test"),
        row("NOTIFYSHADOW", "edge01.contoso.test", 40, "E.6", shadow_message_id="s1"),
        row("NOTIFYSHADOW", "edge01.contoso.test", 90, "D.6", client="hub01.contoso.test",
            shadow_message_id="s1", holder="HUB01"),
        row("HADISCARD", "hub01.contoso.test", 95, "D.7", primary="EDGE01", reason="discard"),
    ]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def test_scenario_d_lanes_arrows_steps_and_shadow_bar():
    diagram = build_diagram(scenario_d_rows(), NAMES, "Scenario D")
    root = parse(render_svg(diagram))
    assert [g.get("data-lane") for g in groups(root, "lane")] == ["HUB01", "EDGE01",
                                                                  "INTERNET01"]
    arrows = [(g.get("data-from"), g.get("data-to"), texts(g)[0])
              for g in groups(root, "arrow")]
    assert arrows == [
        ("HUB01", "EDGE01", "XSHADOW / BDAT / 250"),
        ("EDGE01", "INTERNET01", "BDAT / 250"),
        ("HUB01", "EDGE01", "XQDISCARD"),
        ("EDGE01", "HUB01", "discard notifications (250)"),
    ]
    first = groups(root, "arrow")[0]
    assert texts(first)[1:] == ["D.1 D.2 D.3 D.4.1", "D.4.2"]  # sender's steps, receiver's
    notes = [(g.get("data-lane"), g.get("data-steps")) for g in groups(root, "note")]
    assert notes == [("HUB01", "D.4.3"), ("EDGE01", "E.6"), ("HUB01", "D.7")]
    # causal order: the transfer (D.4.1/D.4.2) before the sender keeps its shadow (D.4.3)
    kinds = [type(r).__name__ + ":" + " ".join(r.steps) for r in diagram.rows]
    assert kinds.index("Arrow:D.1 D.2 D.3 D.4.1 D.4.2") < kinds.index("Note:D.4.3")
    [bar] = groups(root, "shadow")
    assert (bar.get("data-holder"), bar.get("data-primary"), bar.get("data-ended")) == (
        "HUB01", "EDGE01", "discarded")
    assert diagram.shadows[0].start == kinds.index("Note:D.4.3")
    assert diagram.shadows[0].end == kinds.index("Note:D.7")
    rect = bar.find(f"{SVG}rect")
    assert rect is not None and float(rect.get("height", "0")) > 38 * 4


def test_shadow_still_held_and_resubmitted():
    events = scenario_d_rows()[1:4]  # sent, shadowed, never discarded
    diagram = build_diagram(events, NAMES)
    assert [(b.holder, b.primary, b.end, b.ended) for b in diagram.shadows] == [
        ("HUB01", "EDGE01", None, "")]
    root = parse(render_svg(diagram))
    assert [g.get("data-ended") for g in groups(root, "shadow")] == ["still held"]
    resubmitted = [*events, row("RESUBMIT", "hub01.contoso.test", 500, primary="EDGE01",
                                reason="heartbeat")]
    diagram = build_diagram(resubmitted, NAMES)
    assert [b.ended for b in diagram.shadows] == ["resubmitted"]
    assert "RESUBMIT: heartbeat" in texts(parse(render_svg(diagram)))


def test_outside_client_and_delayed_ack_get_their_own_lane():
    events = [
        row("RECEIVE", "hub01.contoso.test", 0, "F.1", "F.2", "F.3", "F.4",
            client="[127.0.0.1]"),
        row("RECEIVE", "hub01.contoso.test", 50, "F.7", "F.8", client="[127.0.0.1]",
            delayed_ack="Delivered"),
    ]
    diagram = build_diagram(events, NAMES)
    assert diagram.lanes == ["SMTP client [127.0.0.1]", "HUB01"]
    arrows = [r for r in diagram.rows if isinstance(r, Arrow)]
    assert [(a.source, a.target, a.label) for a in arrows] == [
        ("SMTP client [127.0.0.1]", "HUB01", "BDAT (250 held)"),
        ("HUB01", "SMTP client [127.0.0.1]", "250 (delayed ack: Delivered)")]


def test_labels_are_escaped_and_an_empty_diagram_is_valid_svg():
    root = parse(render_svg(build_diagram([], NAMES, "<message & co>")))
    assert "<message & co>" in texts(root)
    assert groups(root, "arrow") == []


def test_scenario_run_writes_one_svg_per_message(tmp_path):
    from org_files import two_site_org

    from exchange_emu.directory import load_organization
    from exchange_emu.lab.scenario_diagram import write_scenario_svgs
    from exchange_emu.lab.scenarios import ScenarioResult

    organization = load_organization(two_site_org(tmp_path)[0])
    one = [ScenarioResult("D", "<m1@x>", True, [])]
    assert write_scenario_svgs(organization, one, tmp_path / "d.svg") == [tmp_path / "d.svg"]
    title = texts(parse((tmp_path / "d.svg").read_text("utf-8")))[0]
    assert title == "Scenario D (Between Exchange 2010 transport servers): <m1@x>"
    several = [ScenarioResult("A", "<m1@x>", True, []), ScenarioResult("B", "<m1@x>", True, []),
               ScenarioResult("F", "<m2@x>", False, ["missing F.7"])]
    written = write_scenario_svgs(organization, several, tmp_path / "all.svg")
    assert written == [tmp_path / "all-AB.svg", tmp_path / "all-F.svg"]
    assert all(parse(p.read_text("utf-8")).tag == f"{SVG}svg" for p in written)
