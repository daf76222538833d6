"""The exported solution (issue 20.6) holds what crm-setup applies: unpacked and checked against an org it set up."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile

import pytest

from connector.cli import main
from connector.crm.setup import customizations
from connector.crm.solution import write_solution

TYPES = {"nvarchar": "String", "ntext": "Memo", "int": "Integer", "decimal": "Decimal", "bit": "Boolean", "datetime": "DateTime",
         "picklist": "Picklist", "lookup": "Lookup"}


def _unpack(path) -> tuple[list[str], ET.Element, ET.Element]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        solution = ET.fromstring(archive.read("solution.xml"))
        custom = ET.fromstring(archive.read("customizations.xml"))
        ET.fromstring(archive.read("[Content_Types].xml"))
    return names, solution, custom


@pytest.fixture(params=["", "contact"], ids=["plain", "with-kpi"])
def set_up_org(request, tmp_path, crm_ca):
    """A bare organization crm-setup set up (with the KPI table on contact for ``with-kpi``): (org, kpi_customer)."""
    from connector.crm.dataverse import DataverseCrmClient
    from connector.crm.setup import CrmSetup
    from connector.sandbox.dataverse import KeyActivation, start_crm_sandbox
    from tests.fixtures.crm import crm_config

    with start_crm_sandbox(tmp_path / "crm", crm_ca, seed=1, contacts=0, customizations=False,
                           key_activation=KeyActivation(pending_seconds=0, build_seconds=0)) as org:
        client = DataverseCrmClient.from_config(crm_config(org, crm_ca.ca_file))
        try:
            CrmSetup(client.http, kpi_customer=request.param).run(poll_seconds=0.2)
        finally:
            client.close()
        yield org, request.param


def test_the_solution_holds_what_crm_setup_applied(set_up_org, tmp_path) -> None:
    crm_org, kpi_customer = set_up_org
    path = tmp_path / "EmailConnector.zip"
    write_solution(customizations("cesp", kpi_customer), "cesp", path)
    names, solution, custom = _unpack(path)
    assert sorted(names) == ["[Content_Types].xml", "customizations.xml", "solution.xml"]
    manifest = solution.find("SolutionManifest")
    assert manifest.findtext("Managed") == "0"
    assert manifest.findtext("Publisher/CustomizationPrefix") == "cesp"
    roots = {(r.get("type"), r.get("schemaName"), r.get("behavior")) for r in manifest.iter("RootComponent")}
    assert {("1", "cesp_sendrequest", "0"), ("1", "contact", "2"), ("10", "cesp_sendrequest_list", "0")} <= roots

    schema = crm_org.store.schema
    seen_columns: set[tuple[str, str]] = set()
    forms = views = 0
    for entity in custom.iter("Entity"):
        table = entity.findtext("Name").lower()
        org_table = schema.entity(table)
        assert org_table is not None, table
        assert (("1", table, "0" if org_table.custom else "2") in roots)
        for attr in entity.findall("EntityInfo/entity/attributes/attribute"):
            name = attr.findtext("LogicalName")
            assert TYPES[attr.findtext("Type")] == org_table.attributes[name].type, (table, name)
            seen_columns.add((table, name))
        for key in entity.iter("EntityKey"):
            applied = org_table.keys[key.findtext("LogicalName")]
            assert [a.text for a in key.iter("AttributeName")] == list(applied.attributes)
        assert entity.findtext("EntityInfo/entity/ChangeTrackingEnabled") in (None, "1")
        if entity.findtext("EntityInfo/entity/ChangeTrackingEnabled") == "1":
            assert org_table.change_tracking, table
        for form in entity.iter("systemform"):
            row = crm_org.store.get("systemforms", form.findtext("formid").strip("{}"))
            assert row["objecttypecode"] == table
            assert ET.tostring(form.find("form")) == ET.tostring(ET.fromstring(row["formxml"]))
            forms += 1
        for view in entity.iter("savedquery"):
            row = crm_org.store.get("savedqueries", view.findtext("savedqueryid").strip("{}"))
            assert ET.tostring(view.find("fetchxml/fetch")) == ET.tostring(ET.fromstring(row["fetchxml"]))
            grid, applied = view.find("layoutxml/grid"), ET.fromstring(row["layoutxml"])
            assert grid.get("object") == entity.findtext("ObjectTypeCode")  # remapped on import
            applied.set("object", grid.get("object"))
            assert ET.tostring(grid) == ET.tostring(applied)
            views += 1
    spec = customizations("cesp", kpi_customer)
    assert (forms, views) == (len(spec.forms), len(spec.views))
    applied_columns = {(e.logical_name, a.logical_name) for e in schema.entities.values()
                       for a in e.attributes.values() if a.custom and e.logical_name in {t for t, _ in seen_columns}}
    assert seen_columns == applied_columns  # nothing crm-setup made is missing, nothing extra
    relationships = {r.get("Name"): r for r in custom.iter("EntityRelationship")}
    for name, (entity1, entity2, _intersect) in schema.many_to_many.items():
        if name.startswith("cesp_"):
            rel = relationships[name]
            assert rel.findtext("EntityRelationshipType") == "ManyToMany"
            assert (rel.findtext("FirstEntityName").lower(), rel.findtext("SecondEntityName").lower()) == (
                entity1, entity2)
    for rel in relationships.values():
        if rel.findtext("EntityRelationshipType") == "OneToMany":
            table = schema.entity(rel.findtext("ReferencingEntityName").lower())
            lookup = table.attributes[rel.findtext("ReferencingAttributeName").lower()]
            assert lookup.type == "Lookup"
            assert lookup.targets == (rel.findtext("ReferencedEntityName").lower(),)


def test_crm_setup_export_solution_does_not_connect(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CONNECTOR_CRM_CLIENT_SECRET", "not used")
    ini = tmp_path / "service.ini"
    ini.write_text(f"[logging]\nfolder = {tmp_path / 'log'}\nconsole = off\n\n[crm]\nurl = https://nowhere.invalid\n"
                   "authority = https://login.invalid/tenant\nclient_id = x\n", encoding="utf-8")
    target = tmp_path / "out" / "EmailConnector.zip"
    assert main(["crm-setup", "-c", str(ini), "--export-solution", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}: unmanaged solution EmailConnector" in out and "pac solution import" in out
    names, _, custom = _unpack(target)
    assert "customizations.xml" in names and custom.find("Entities/Entity") is not None
