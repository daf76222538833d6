"""Named defaults, each with the reason for its value (the original product's where it had one)."""

from __future__ import annotations

SEND_POLL_MINUTES = 5.0
"""Pending send requests are polled every 5 minutes, as in the original product."""

TRACKING_POLL_MINUTES = 60.0
"""Tracking is pulled hourly: Marketing Cloud's own guidance for API tracking reads."""

IMPORT_POLL_SECONDS = 30.0
"""How often a running ESP import is asked for its status."""

IMPORT_TIMEOUT_MINUTES = 240.0
"""An import still not finished after this long fails its send with a reason."""

ESP_VISIBILITY_MINUTES = 30.0
"""How long Marketing Cloud may take to show a started send or import to Retrieve. A start
whose answer was lost is looked for this long before it is taken as never made (the delay
is undocumented; sends and import results are usually visible within a minute or two)."""

SEND_WORKERS = 2
IMPORT_WORKERS = 2
TRACKING_WORKERS = 2
"""Worker threads per step; each step has its own pool so one never blocks another."""

BATCH_THRESHOLD = 25_000
"""Sends above this many recipients go as files over SFTP; up to it, by SOAP."""

BATCH_SIZE = 5_000
"""Rows per batch file."""

SOAP_CHUNK_SIZE = 50
"""Subscribers per SOAP Create/Update call: Marketing Cloud's soft limit for synchronous calls."""

SEND_TIME_SLICE_SECONDS = 120.0
"""Longest turn of one send request before the others of the poll get theirs (0: no turns)."""

INVALID_TARGETS = "fail"
"""A send request with an unreadable target (bad JSON, unknown kind, no id, an id that is not a GUID)
fails as a whole, nothing sent; ``skip`` sends to the valid rest and names the left-out ones."""

CRM_PAGE_SIZE = 5_000
"""Dataverse's default and maximum page size."""

CRM_BATCH_SIZE = 500
"""Requests per Dataverse $batch (the service caps it at 1,000)."""

CRM_PREFIX = "cesp"
"""Publisher prefix of the connector's CRM customizations."""

MAX_RETRIES = 5
"""Attempts per safe-to-repeat call before the error goes to the caller."""

CRM_TIMEOUT = 120.0
"""Dataverse cancels a request after 2 minutes; waiting longer gains nothing."""

ESP_TIMEOUT = 120.0
SQL_TIMEOUT = 30.0
SFTP_TIMEOUT = 60.0

LEASE_SECONDS = 300
"""A claimed item is someone's for 5 minutes unless its holder extends the lease."""

DRAIN_SECONDS = 60
"""After the first SIGTERM, in-flight work has this long to finish or checkpoint."""

LOG_FOLDER = "var/log"
LOG_KEEP_DAYS = 14
DATA_DIR = "var"

STAGING_TABLE = "connector_tracking_events"

TRACKING_MODE = "responders"
TRACKING_OVERLAP_MINUTES = 120.0
"""Events arrive late at the ESP; each pull re-reads this much before the watermark."""

TRACKING_LOOKBACK_DAYS = 30.0
"""The first pull for an event type goes this far back."""

EVENT_TYPES = ("sent", "open", "click", "bounce", "unsub", "notsent")

ALLOWED_ROLES = ("System Administrator", "Marketing Manager")
"""CRM security roles whose holders may release sends."""

MAX_REQUESTS_PER_POLL = 20

SEND_CLASSIFICATION_KEY = "Default Commercial"

SYNC_POLL_MINUTES = 15.0
"""Two-way sync: minutes between differential runs (the step runs only with ``[sync.<table>]`` rules)."""
SYNC_WORKERS = 1
"""Two-way sync: tables (contact, lead, account) synced at once."""
SYNC_OVERLAP_MINUTES = 10.0
"""Two-way sync: the ESP's modified dates are read from watermark - overlap (a subscriber the ESP
showed late is not missed; the shadow makes the re-read a no-op)."""
SYNC_CHANGE_LOG_KEEP_DAYS = 365
"""Change-log rows older than this are deleted by the sync step."""
SYNC_HELD_COLUMN = "donotbulkemail"
"""CRM Boolean column set true when the ESP holds or deletes the subscriber of a synced record."""

EMAIL_REFRESH_MINUTES = 60.0
"""How often the connector copies the ESP's e-mail catalogue into CRM's e-mail picker (0 = never)."""

PREVIEW_MAX_CHANGE = 0.1
"""Largest share by which a previewed request's audience may have changed when it is set Pending;
beyond it the send is held with the reason (0 = any change holds it)."""

PREVIEW_SAMPLE = 20
"""Recipients written to CRM as a preview's sample (cesp_previewrecipient rows)."""

KPI_POLL_MINUTES = 0.0
"""The KPI load is not scheduled unless ``[kpi] poll_minutes`` says how often (``connector kpi`` runs it by hand)."""

KPI_SLICE_ROWS = 1000
"""Source rows read, matched, written and committed together: the only ones in memory."""

KPI_SOURCE_NAME = "kpi"
"""Label of the KPI source: on each CRM row (``cesp_source``), in the state database and the lease."""

SUPPRESSION_REFRESH_MINUTES = 60.0
"""Minutes between refreshes of the statutory suppression list ([suppression] refresh_minutes)."""

SUPPRESSION_CHUNK = 5000
"""Suppression entries read, hashed and stored per state transaction during a refresh."""
