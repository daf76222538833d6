"""The send path: from a Pending CRM send request to one ESP send.

One attempt at a request is a ``SendAttempt`` (``attempt``): the job's status picks the
next phase from ``PHASES``, and the sends step, the imports step and ``send-now`` all
drive it. The modules, in the order a request crosses them (docs/architecture.md, "Walk
of a send request"):

* ``step``: the sends and imports steps: which requests get worked on in this run;
* ``attempt``: one request under its lease ``send:<id>``, phase after phase;
* ``claim``: the claim (state, then CRM) and the checks before anything is written
  (``checks``: the ESP probe, the owner, e-mail and targets; holding for the operator);
* ``resolve``: recipients streamed from CRM, mapped, screened and spooled into batch
  files; ``workspace`` decides whether the local work folder is this attempt's or the
  send is taken over; ``turns`` pauses a long one at a checkpoint for the others;
* ``handover``: SOAP upserts, or batch files uploaded and their imports started;
  ``imports``: the file imports awaited;
* ``release``: the ESP send started once (``start_guard``) and Sent reported, or failed;
* ``keys``: the idempotency keys of the ESP objects; ``ledger``: the counts and batches;
* ``preview`` and ``audience``: a request in "Preview requested" resolved without sending,
  and the send's audience compared with its preview's.

This package module imports nothing, so the lower modules (``connector.batchfiles``)
can use ``keys`` without importing the whole path.
"""
