"""Forms and views rendered from their one description (connector.crm.ui)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from connector.crm import ui


def _fields(xml: str) -> list[str]:
    return [c.get("datafieldname") for c in ET.fromstring(xml).iter("control") if c.get("datafieldname")]


def test_a_column_another_issue_adds_shows_once_the_organization_has_it(monkeypatch) -> None:
    monkeypatch.setitem(ui.ENGAGEMENT_COLUMNS, "contact",
                        ui.ENGAGEMENT_COLUMNS["contact"] + (("{p}_lastopenon", "Last open on", "DateTime"),))
    contact = next(f for f in ui.forms("new") if f.table == "contact")
    without = contact.formxml(lambda table, column: column != "new_lastopenon")
    assert "new_lastopenon" not in _fields(without) and "new_lastbounceon" in _fields(without)
    assert _fields(contact.formxml(lambda table, column: True))[-1] == "new_lastopenon"
    send = ui.forms("new")[0]
    assert "new_sendon" not in _fields(send.formxml(lambda table, column: False))  # the send time: issue 15
    assert "new_sendon" in _fields(send.formxml(lambda table, column: True))


def test_ids_are_stable_and_views_render_fetch_and_layout() -> None:
    assert [f.form_id for f in ui.forms()] == [f.form_id for f in ui.forms()]
    assert len({v.view_id for v in ui.views()}) == 3
    failed = next(v for v in ui.views() if v.name == "Failed sends")
    fetch = ET.fromstring(failed.fetchxml())
    assert fetch.find("entity").get("name") == "cesp_sendrequest"
    assert [(c.get("attribute"), c.get("operator"), c.get("value")) for c in fetch.iter("condition")] == [
        ("cesp_status", "eq", "100000003")]
    grid = ET.fromstring(failed.layoutxml(10042))
    assert (grid.get("object"), grid.get("jump"), grid.find("row").get("id")) == (
        "10042", "cesp_name", "cesp_sendrequestid")
