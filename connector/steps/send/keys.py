"""The idempotency keys of a send: every object the connector makes at the ESP for one CRM send
request is named from the request id, so a retry, a restart or another instance finds it
instead of making a second one (DESIGN.md invariant 1; docs/contracts.md).

Each one is looked up (or upserted) by its key before anything is created; the ESP's
own name for the object (``CustomerKey``) is the key.
"""

from __future__ import annotations


def list_key(request_id: str) -> str:
    """The ESP List the send's subscribers are put on (SOAP path and file imports alike)."""
    return f"cesp-list-{request_id}"


def send_key(request_id: str) -> str:
    """The EmailSendDefinition that releases the send; found by it before it is started."""
    return f"cesp-send-{request_id}"


def import_key(request_id: str, seq: int) -> str:
    """The ImportDefinition of batch file ``seq`` of the send (file path)."""
    return f"cesp-import-{request_id}-{seq}"


def batch_file_name(request_id: str, seq: int) -> str:
    """Batch file ``seq`` of the send, on the local disk and in the ESP's SFTP import folder."""
    return f"cesp_{request_id}_{seq}.csv"
