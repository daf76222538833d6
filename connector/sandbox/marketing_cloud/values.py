"""Result shapes and the property values of sandbox records, as Retrieve rows and result Objects."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from connector.sandbox.marketing_cloud.records import (
    EMAIL_FOLDERS,
    EmailRec,
    ImportDefinitionRec,
    ImportRunRec,
    ListRec,
    SendClassificationRec,
    SendDefinitionRec,
    SubscriberRec,
)
from connector.sandbox.marketing_cloud.soap import Obj, to_cst_text

EMAIL_RE = re.compile(r"^[^@\s\"<>(),;:\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
Result = dict[str, Any]
D = TypeVar("D", ImportDefinitionRec, SendDefinitionRec)


def valid_email(address: str) -> bool:
    return bool(address) and len(address) <= 254 and EMAIL_RE.match(address) is not None


def ok(message: str, obj: tuple | None = None, new_id: int = 0, **extra: Any) -> Result:
    result: Result = {"StatusCode": "OK", "StatusMessage": message, "NewID": new_id}
    if obj is not None:
        result["Object"] = obj
    result.update(extra)
    return result


def error(message: str, code: int, obj: tuple | None = None) -> Result:
    result: Result = {"StatusCode": "Error", "StatusMessage": message, "ErrorCode": code, "NewID": 0}
    if obj is not None:
        result["Object"] = obj
    return result


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def find_definition(definitions: dict[str, D], obj: Obj) -> D | None:
    """A definition (ImportDefinition, EmailSendDefinition) by CustomerKey, else by ID or ObjectID."""
    if obj.text("CustomerKey"):
        return definitions.get(obj.text("CustomerKey"))
    wanted_id, object_id = as_int(obj.get("ID")), obj.text("ObjectID")
    return next((d for d in definitions.values()
                 if (wanted_id and d.id == wanted_id) or (object_id and d.object_id == object_id)), None)


def nested(obj: Obj, name: str, child: str) -> Any:
    inner = obj.get(name)
    return inner.get(child) if isinstance(inner, Obj) else None


def subscriber_values(rec: SubscriberRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "EmailAddress": rec.email,
        "Attributes": [("Attribute", {"Name": k, "Value": v}) for k, v in rec.attributes.items()],
        "SubscriberKey": rec.key, "UnsubscribedDate": rec.unsubscribed, "Status": rec.status,
        "EmailTypePreference": rec.email_type,
    }


def list_values(rec: ListRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "ListName": rec.name, "Category": rec.category, "Type": rec.type,
        "Description": rec.description, "ListClassification": rec.classification,
    }


def list_subscriber_values(pair: tuple) -> dict:
    """(list id, key, status, created, modified) as a ListSubscriber row."""
    list_id, key, status, created, modified = pair
    return {"Status": status, "ListID": list_id, "SubscriberKey": key, "CreatedDate": created,
            "ModifiedDate": modified}


def email_values(rec: EmailRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.created, "ID": rec.id, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "Name": rec.name, "Folder": EMAIL_FOLDERS.get(rec.category_id, ""),
        "CategoryID": rec.category_id, "Subject": rec.subject, "IsActive": True, "Status": "active",
        "EmailType": "HTML", "CharacterSet": "utf-8",
    }


def send_class_values(rec: SendClassificationRec) -> dict:
    return {"ID": rec.id, "ObjectID": rec.object_id, "CustomerKey": rec.customer_key,
            "SendClassificationType": rec.type, "Name": rec.name}


def esd_values(rec: SendDefinitionRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "Name": rec.name, "Description": rec.description,
        "SendClassification": ("SendClassification", {"CustomerKey": rec.send_classification_key}),
        "FromName": rec.from_name or None, "FromAddress": rec.from_address or None,
        "SendDefinitionList": [("SendDefinitionList", {"List": ("List", {"ID": i}), "SendDefinitionListType": "SourceList"})
                               for i in rec.list_ids],
        "Email": ("Email", {"ID": rec.email_id}), "EmailSubject": rec.subject,
        "Email.ID": rec.email_id, "SendClassification.CustomerKey": rec.send_classification_key,
    }


def import_def_values(rec: ImportDefinitionRec) -> dict:
    return {
        "CreatedDate": rec.created, "ModifiedDate": rec.modified, "ID": rec.id, "ObjectID": rec.object_id,
        "CustomerKey": rec.customer_key, "Name": rec.name, "Description": rec.description,
        "AllowErrors": rec.allow_errors, "DestinationObject": ("List", {"ID": rec.list_id}),
        "FieldMappingType": rec.mapping_type, "FileSpec": rec.file_spec, "FileType": rec.file_type,
        "RetrieveFileTransferLocation": ("FileTransferLocation", {"CustomerKey": "ExactTarget Enhanced FTP"}),
        "SubscriberImportType": "Email", "UpdateType": rec.update_type,
    }


def import_run_values(run: ImportRunRec) -> dict:
    return {
        "ImportDefinitionCustomerKey": run.definition_key,
        "StartDate": to_cst_text(run.start) if run.start else None,
        "EndDate": to_cst_text(run.end) if run.end else None,
        "DestinationID": str(run.list_id), "NumberSuccessful": run.ok, "NumberDuplicated": run.duplicated,
        "NumberErrors": run.errors, "TotalRows": run.total, "ImportType": "Subscriber", "ImportStatus": run.status,
        "TaskResultID": run.task_id, "ID": run.task_id,
    }
