"""The send path: from a Pending CRM send request to one ESP send.

The modules, in the order a request crosses them (docs/architecture.md, "Walk of a
send request"):

* ``step``: the sends step (``run_sends``): which requests get worked on this run;
  one request at a time under its lease, in turns (``turns``), in the step's pool;
* ``imports``: the imports step (``run_imports``): polls the ESP file imports of
  sends that go by files, and releases them when the last file is in;
* ``resolve``: streams the recipients from CRM, maps, screens and spools them into
  batch files; ``workspace`` decides whether the local work folder is this attempt's
  or the send is taken over from the state database;
* ``handover``: SOAP upserts or batch files (SFTP + import), then the release;
* ``start_guard``: an ESP send or import is started at most once, although the ESP
  shows a start only after a delay.
"""

from __future__ import annotations

from connector.steps.send.imports import poll_send, run_imports
from connector.steps.send.step import process_request, run_sends

__all__ = ["poll_send", "process_request", "run_imports", "run_sends"]
