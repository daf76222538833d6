"""The connector's customizations as an unmanaged Dataverse solution (``crm-setup --export-solution``).

For admins who deploy through pipelines (solution import, Power Platform Build Tools, pac
solution import) instead of letting ``connector crm-setup`` call the metadata API. The zip
holds the three files of an exported solution:

- ``[Content_Types].xml``: the package's content types;
- ``solution.xml``: the manifest (``ImportExportXml/SolutionManifest``): unique name,
  version, unmanaged (``Managed`` 0), the publisher (prefix, option value prefix) and the
  root components: each new table whole (type 1, behavior 0), each standard table the
  connector adds columns, keys or forms to as a shell (type 1, behavior 2, only what is
  listed below it), and the N:N relationships (type 10);
- ``customizations.xml``: per table its ``EntityInfo/entity`` (attributes, keys, change
  tracking), ``FormXml`` (the forms) and ``SavedQueries`` (the views); then the
  ``EntityRelationships`` (the lookups as OneToMany, the targets as ManyToMany).

Everything comes from :func:`connector.crm.setup.customizations`, the description
``crm-setup`` applies: nothing is listed twice. A new table's ObjectTypeCode is a
placeholder (10000 + n); Dataverse assigns the real one on import and maps the views'
grids to it. Layout of the files: docs/crm.md ("Solution package").
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from connector.crm.setup import AltKey, Column, Customizations, ManyToMany
from connector.crm.ui import QUERY_TYPE_PUBLIC, Form, View

SOLUTION_NAME = "EmailConnector"
SOLUTION_VERSION = "1.0.0.0"
LANGUAGE = 1033
OPTION_VALUE_PREFIX = 10000
"""The publisher's option value prefix: the send status values are 100000000 and up."""
STANDARD = {"contact": ("Contact", 2), "lead": ("Lead", 4), "account": ("Account", 1), "list": ("List", 4300),
            "campaign": ("Campaign", 4400), "campaignresponse": ("CampaignResponse", 4401),
            "systemuser": ("SystemUser", 8)}
"""Standard tables the customizations touch or point at: (schema name, object type code)."""
STANDARD_COLUMNS = {"ownerid", "createdon", "modifiedon", "donotbulkemail", "donotemail", "statecode", "statuscode"}
"""Standard columns the forms and views may show on any table (a form field needs a column)."""
TYPES = {"String": "nvarchar", "Memo": "ntext", "Integer": "int", "Decimal": "decimal", "Boolean": "bit",
         "DateTime": "datetime", "Picklist": "picklist", "Lookup": "lookup"}
"""customizations.xml attribute Type per column kind (Column.kind)."""
CONTENT_TYPES = ('<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/'
                 '2006/content-types"><Default Extension="xml" ContentType="application/octet-stream" /></Types>')
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


def _names(tag: str, inner: str, text: str) -> str:
    return f"<{tag}><{inner} description={quoteattr(text)} languagecode=\"{LANGUAGE}\" /></{tag}>"


class SolutionWriter:
    """Renders one :class:`Customizations` as solution.xml and customizations.xml."""

    def __init__(self, spec: Customizations, prefix: str) -> None:
        self.spec = spec
        self.prefix = prefix
        self.custom = {t.logical_name: t for t in spec.tables}
        self.codes = {t.logical_name: 10000 + i for i, t in enumerate(spec.tables)}
        self.columns: dict[str, list[Column]] = {}
        for col in spec.columns:
            self.columns.setdefault(col.table, []).append(col)
        for table in spec.tables:
            self.columns.setdefault(table.logical_name, []).insert(0, table.primary_name)
        self.tables = list(dict.fromkeys([*self.custom, *self.columns, *(k.table for k in spec.keys),
                                          *spec.tracked, *(f.table for f in spec.forms)]))

    def schema_name(self, table: str) -> str:
        return self.custom[table].schema_name if table in self.custom else STANDARD[table][0]

    def object_type_code(self, table: str) -> int:
        return self.codes[table] if table in self.custom else STANDARD[table][1]

    def exists(self, table: str, column: str) -> bool:
        """What a form may show: the solution's columns and the standard ones."""
        return column in STANDARD_COLUMNS or any(c.logical_name == column for c in self.columns.get(table, []))

    # -- solution.xml ----------------------------------------------------------------------
    def solution_xml(self) -> str:
        roots = "".join(f"<RootComponent type=\"1\" schemaName=\"{t}\" behavior=\"{0 if t in self.custom else 2}\" />"
                        for t in self.tables)
        roots += "".join(f"<RootComponent type=\"10\" schemaName=\"{r.schema_name}\" behavior=\"0\" />"
                         for r in self.spec.relationships)
        publisher = (f"<Publisher><UniqueName>{self.prefix}connector</UniqueName>"
                     + _names("LocalizedNames", "LocalizedName", "Email connector publisher")
                     + "<Descriptions /><EMailAddress xsi:nil=\"true\" /><SupportingWebsiteUrl xsi:nil=\"true\" />"
                     f"<CustomizationPrefix>{self.prefix}</CustomizationPrefix>"
                     f"<CustomizationOptionValuePrefix>{OPTION_VALUE_PREFIX}</CustomizationOptionValuePrefix>"
                     "<Addresses /></Publisher>")
        return (f"<?xml version=\"1.0\" encoding=\"utf-8\"?><ImportExportXml version=\"9.2.0.0\" "
                f"SolutionPackageVersion=\"9.2\" languagecode=\"{LANGUAGE}\" generatedBy=\"CrmLive\" {XSI}>"
                f"<SolutionManifest><UniqueName>{SOLUTION_NAME}</UniqueName>"
                + _names("LocalizedNames", "LocalizedName", "Email connector")
                + _names("Descriptions", "Description", "Tables, columns, keys, relationships, forms and views of"
                         " the CRM-Marketing Cloud email connector")
                + f"<Version>{SOLUTION_VERSION}</Version><Managed>0</Managed>{publisher}"
                f"<RootComponents>{roots}</RootComponents><MissingDependencies /></SolutionManifest>"
                "</ImportExportXml>")

    # -- customizations.xml ---------------------------------------------------------------
    def customizations_xml(self) -> str:
        entities = "".join(self._entity(t) for t in self.tables)
        lookups = [c for c in self.spec.columns if c.kind == "Lookup"]
        relationships = "".join(self._one_to_many(c) for c in lookups)
        relationships += "".join(self._many_to_many(r) for r in self.spec.relationships)
        return (f"<?xml version=\"1.0\" encoding=\"utf-8\"?><ImportExportXml {XSI}><Entities>{entities}</Entities>"
                "<Roles /><Workflows /><FieldSecurityProfiles /><Templates /><EntityMaps />"
                f"<EntityRelationships>{relationships}</EntityRelationships><OrganizationSettings />"
                f"<optionsets /><Languages><Language>{LANGUAGE}</Language></Languages></ImportExportXml>")

    def _entity(self, table: str) -> str:
        custom = self.custom.get(table)
        schema = self.schema_name(table)
        attrs = "".join(self._attribute(c) for c in self.columns.get(table, []))
        keys = "".join(self._key(k) for k in self.spec.keys if k.table == table)
        info = f"<entity Name=\"{schema}\">"
        if custom is not None:
            info += (_names("LocalizedNames", "LocalizedName", custom.display)
                     + _names("LocalizedCollectionNames", "LocalizedCollectionName", custom.display_plural)
                     + _names("Descriptions", "Description", custom.description))
        info += f"<attributes>{attrs}</attributes>"
        if custom is not None:
            info += (f"<EntitySetName>{table}s</EntitySetName><IsCustomizable>1</IsCustomizable>"
                     "<OwnershipTypeMask>UserOwned</OwnershipTypeMask>")
        if table in self.spec.tracked or custom is not None:
            info += "<ChangeTrackingEnabled>1</ChangeTrackingEnabled>"
        if keys:
            info += f"<EntityKeys>{keys}</EntityKeys>"
        info += "</entity>"
        forms = "".join(self._form(f) for f in self.spec.forms if f.table == table)
        views = "".join(self._view(v) for v in self.spec.views if v.table == table)
        name = custom.display if custom is not None else schema
        return (f"<Entity><Name LocalizedName={quoteattr(name)} OriginalName={quoteattr(name)}>{schema}</Name>"
                f"<ObjectTypeCode>{self.object_type_code(table)}</ObjectTypeCode><EntityInfo>{info}</EntityInfo>"
                + (f"<FormXml><forms type=\"main\">{forms}</forms></FormXml>" if forms else "")
                + (f"<SavedQueries><savedqueries>{views}</savedqueries></SavedQueries>" if views else "")
                + "<RibbonDiffXml /></Entity>")

    @staticmethod
    def _attribute(col: Column) -> str:
        required = "required" if col.primary_name else "none"
        mask = ("PrimaryName|ValidForAdvancedFind|ValidForForm|ValidForGrid|RequiredForForm" if col.primary_name
                else "ValidForAdvancedFind|ValidForForm|ValidForGrid")
        body = (f"<Type>{TYPES[col.kind]}</Type><Name>{col.logical_name}</Name>"
                f"<LogicalName>{col.logical_name}</LogicalName><RequiredLevel>{required}</RequiredLevel>"
                f"<DisplayMask>{mask}</DisplayMask><IsCustomField>1</IsCustomField>")
        if col.kind in ("String", "Memo"):
            body += f"<Format>{'text' if col.kind == 'String' else 'textarea'}</Format>"
            body += f"<MaxLength>{col.max_length or (100 if col.kind == 'String' else 1048576)}</MaxLength>"
        elif col.kind == "Integer":
            body += "<Format /><MinValue>0</MinValue><MaxValue>2147483647</MaxValue>"
        elif col.kind == "Decimal":
            meta = col.metadata()
            body += (f"<MinValue>{meta['MinValue']}</MinValue><MaxValue>{meta['MaxValue']}</MaxValue>"
                     f"<Accuracy>{meta['Precision']}</Accuracy>")
        elif col.kind == "DateTime":
            body += "<Format>datetime</Format><Behavior>1</Behavior>"
        elif col.kind == "Lookup":
            body += f"<LookupStyle>single</LookupStyle><LookupTypes><LookupType>{col.target}</LookupType></LookupTypes>"
        elif col.kind == "Picklist":
            options = "".join(f"<option value=\"{v}\">" + _names("labels", "label", text) + "</option>"
                              for v, text in col.options)
            body += (f"<optionset Name=\"{col.table}_{col.logical_name}\"><OptionSetType>picklist</OptionSetType>"
                     f"<IsGlobal>0</IsGlobal><options>{options}</options></optionset>")
        elif col.kind == "Boolean":
            body += ("<optionset><OptionSetType>bit</OptionSetType><options>"
                     + "".join(f"<option value=\"{v}\">" + _names("labels", "label", t) + "</option>"
                               for v, t in ((1, "Yes"), (0, "No"))) + "</options></optionset>")
        body += _names("displaynames", "displayname", col.display)
        body += _names("Descriptions", "Description", f"{col.display} (email connector)")
        return f"<attribute PhysicalName=\"{col.schema_name}\">{body}</attribute>"

    @staticmethod
    def _key(key: AltKey) -> str:
        attrs = "".join(f"<AttributeName>{c}</AttributeName>" for c in key.columns)
        return (f"<EntityKey><LogicalName>{key.logical_name}</LogicalName><Name>{key.schema_name}</Name>"
                f"<EntityKeyAttributes>{attrs}</EntityKeyAttributes>"
                + _names("displaynames", "displayname", key.display) + "</EntityKey>")

    def _form(self, form: Form) -> str:
        return (f"<systemform><formid>{{{form.form_id}}}</formid><IntroducedVersion>1.0</IntroducedVersion>"
                "<FormPresentation>1</FormPresentation><FormActivationState>1</FormActivationState>"
                f"{form.formxml(self.exists)}"
                + _names("LocalizedNames", "LocalizedName", form.name)
                + _names("Descriptions", "Description", form.description) + "</systemform>")

    def _view(self, view: View) -> str:
        return (f"<savedquery><IsCustomizable>1</IsCustomizable><CanBeDeleted>1</CanBeDeleted>"
                f"<isquickfindquery>0</isquickfindquery><isprivate>0</isprivate><isdefault>0</isdefault>"
                f"<savedqueryid>{{{view.view_id}}}</savedqueryid>"
                f"<layoutxml>{view.layoutxml(self.object_type_code(view.table))}</layoutxml>"
                f"<querytype>{QUERY_TYPE_PUBLIC}</querytype><fetchxml>{view.fetchxml()}</fetchxml>"
                "<IntroducedVersion>1.0</IntroducedVersion>"
                + _names("LocalizedNames", "LocalizedName", view.name)
                + _names("Descriptions", "Description", view.description) + "</savedquery>")

    def _one_to_many(self, col: Column) -> str:
        rel = col.relationship()
        return (f"<EntityRelationship Name={quoteattr(rel['SchemaName'])}>"
                "<EntityRelationshipType>OneToMany</EntityRelationshipType><IsCustomizable>1</IsCustomizable>"
                f"<IntroducedVersion>1.0</IntroducedVersion><IsHierarchical>0</IsHierarchical>"
                f"<ReferencingEntityName>{self.schema_name(col.table)}</ReferencingEntityName>"
                f"<ReferencedEntityName>{self.schema_name(col.target)}</ReferencedEntityName>"
                f"<CascadeAssign>NoCascade</CascadeAssign><CascadeDelete>RemoveLink</CascadeDelete>"
                f"<CascadeReparent>NoCascade</CascadeReparent><CascadeShare>NoCascade</CascadeShare>"
                f"<CascadeUnshare>NoCascade</CascadeUnshare><CascadeMerge>NoCascade</CascadeMerge>"
                f"<ReferencingAttributeName>{col.schema_name}</ReferencingAttributeName>"
                f"<RelationshipDescription>{_names('Descriptions', 'Description', col.display)}"
                "</RelationshipDescription></EntityRelationship>")

    def _many_to_many(self, rel: ManyToMany) -> str:
        return (f"<EntityRelationship Name=\"{escape(rel.schema_name)}\">"
                "<EntityRelationshipType>ManyToMany</EntityRelationshipType><IsCustomizable>1</IsCustomizable>"
                "<IntroducedVersion>1.0</IntroducedVersion>"
                f"<FirstEntityName>{self.schema_name(rel.entity1)}</FirstEntityName>"
                f"<SecondEntityName>{self.schema_name(rel.entity2)}</SecondEntityName>"
                f"<IntersectEntityName>{rel.schema_name}</IntersectEntityName>"
                "<EntityRelationshipRoles>"
                + "".join(f"<EntityRelationshipRole><NavPaneDisplayOption>UseLabel</NavPaneDisplayOption>"
                          f"<NavPaneArea>Details</NavPaneArea><NavPaneOrder>10000</NavPaneOrder>"
                          f"<NavigationPropertyName>{rel.schema_name}</NavigationPropertyName>"
                          + _names("CustomLabels", "CustomLabel", rel.display)
                          + f"<AssociationRoleOrdinal>{n}</AssociationRoleOrdinal></EntityRelationshipRole>"
                          for n in (1, 2))
                + "</EntityRelationshipRoles></EntityRelationship>")


def write_solution(spec: Customizations, prefix: str, path: Path) -> list[str]:
    """Write the unmanaged solution zip; returns its file names."""
    writer = SolutionWriter(spec, prefix)
    files = {"[Content_Types].xml": CONTENT_TYPES, "solution.xml": writer.solution_xml(),
             "customizations.xml": writer.customizations_xml()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text.encode("utf-8"))
    return list(files)


__all__ = ["SOLUTION_NAME", "SolutionWriter", "write_solution"]
