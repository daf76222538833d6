"""Resolve phase of a send (``resolving``): stream recipients, map, screen, spool into batch files.

Recipients come from CRM one page at a time and are handled in chunks. For each
chunk: map (``connector.mapping``), drop duplicates across targets (on-disk set),
addresses on the suppression list and subscribers held / bounced / unsubscribed at
the ESP, and append the rest to the batch files. The chunk's de-duplication keys,
its skips, the batch file length and the position in the target stream are
committed together in the send's work database, so a restart resumes at the last
chunk without counting or handing anyone twice.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import structlog

from connector.batchfiles import BatchWriter, FinishedBatch, OpenBatch, batch_file_name, member_keys
from connector.crashpoints import crashpoint
from connector.errors import RecordError, TransientPeerError
from connector.mapping import Mapper, columns_to_read, esp_attribute_names, normalize_email
from connector.models import (
    SendRequest,
    SendRequestUpdate,
    SendTarget,
    Skip,
    SkipReason,
    Subscriber,
    SubscriberStatus,
    TargetKind,
)
from connector.state.lifecycle import JobStatus
from connector.state.store import Batch, QuarantineRow, SendJob
from connector.steps import StepContext
from connector.steps.readahead import ReadAhead
from connector.steps.send.audience import audience_changed_reason, hold_changed_audience
from connector.steps.send.handover import BackgroundHandover, ensure_list, hand_over_files
from connector.steps.send.ledger import add_skips, current_batches, summary
from connector.steps.send.release import fail
from connector.steps.send.turns import Interrupted, end_of_turn
from connector.steps.send.workspace import batches_folder, own_workspace, work_folder
from connector.steps.suppression import ensure_suppression_ready
from connector.suppression import ResolveCheckpoint, SendWorkspace, read_suppression_file
from connector.suppression_list import lookup_digests

if TYPE_CHECKING:  # pragma: no cover
    from connector.steps.send.attempt import SendAttempt

log = structlog.get_logger(__name__)

RESOLVE_CHUNK = 2_500
"""Recipients screened and committed together: one ESP status lookup, one work-DB commit."""

RECORD_GROUP = RESOLVE_CHUNK
"""Consecutive single-record targets (contact, lead, account) read together, in sets
(``CrmClient.iter_record_targets``), and checkpointed as one target."""

SINGLE_KINDS = {TargetKind.CONTACT, TargetKind.LEAD, TargetKind.ACCOUNT}

STATUS_CLIENTS = 5
"""ESP clients asking for subscriber statuses at once: a chunk of 2,500 in parts of 500, one
round trip each, all at the same time (measured in docs/performance.md)."""

STATUS_SPLIT_MIN = 250
"""Below twice this many keys a chunk's status lookup is not split."""

ESP_SKIPS = {
    SubscriberStatus.HELD: (SkipReason.ESP_HELD, "held at the ESP after repeated bounces"),
    SubscriberStatus.BOUNCED: (SkipReason.ESP_BOUNCED, "bounced at the ESP"),
    SubscriberStatus.UNSUBSCRIBED: (SkipReason.ESP_UNSUBSCRIBED, "unsubscribed at the ESP"),
}

class StatusLookup:
    """Asks the ESP for subscriber statuses, split over ``STATUS_CLIENTS`` clients of its own at once.

    The clients are built with the ESP adapter's ``from_config`` and used by one thread
    each at a time; without a ``from_config`` (a stand-in), the step's own client is used
    on the step's thread.
    """

    def __init__(self, clients: list, pool: ThreadPoolExecutor | None) -> None:
        self.clients = clients
        self.parallel = pool is not None
        self._pool = pool

    @classmethod
    def start(cls, ctx: StepContext) -> "StatusLookup":
        esp = ctx.esp()
        factory = getattr(type(esp), "from_config", None)
        if factory is None:
            return cls([esp], None)
        pool = ThreadPoolExecutor(STATUS_CLIENTS, thread_name_prefix="send-esp-status")
        try:
            clients = list(pool.map(lambda _: factory(ctx.config), range(STATUS_CLIENTS)))
        except BaseException:
            pool.shutdown(wait=True)
            raise
        return cls(clients, pool)

    def statuses(self, keys: list[str]) -> dict:
        if self._pool is None or len(keys) < 2 * STATUS_SPLIT_MIN:
            return self.clients[0].subscriber_statuses(keys)
        size = -(-len(keys) // len(self.clients))
        parts = [keys[i : i + size] for i in range(0, len(keys), size)]
        merged: dict = {}
        for found in self._pool.map(lambda pair: pair[0].subscriber_statuses(pair[1]), zip(self.clients, parts)):
            merged.update(found)
        return merged

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            for client in self.clients:
                try:
                    client.close()
                except Exception as exc:  # noqa: BLE001 - closing must not hide the send's outcome
                    log.warning("status_client_close_failed", error=str(exc))


@dataclass
class Prepared:
    """A chunk of recipients, mapped, with the ESP status of its subscribers."""

    size: int
    mapped: list[Subscriber]
    skips: list[Skip]
    statuses: dict


def target_group(targets: tuple[SendTarget, ...], start: int) -> tuple[SendTarget, ...]:
    """The targets resolved as one from ``start``: a run of single-record targets (up to
    ``RECORD_GROUP``), else the one target. The same on every resume from ``start``."""
    if TargetKind(targets[start].kind) not in SINGLE_KINDS:
        return targets[start:start + 1]
    end, last = start, min(len(targets), start + RECORD_GROUP)
    while end < last and TargetKind(targets[end].kind) in SINGLE_KINDS:
        end += 1
    return targets[start:end]


class Resolver:
    """Runs (or resumes) the resolve phase of one send job."""

    def __init__(self, ctx, job, request: SendRequest, work: Path, first_seq: int, keep_alive: Callable[[], None],
                 progress: Callable[[str], None] | None = None,
                 on_batches: Callable[[int], None] | None = None) -> None:
        self.ctx, self.job, self.request = ctx, job, request
        self.config = ctx.config
        self.mapper = Mapper(self.config)
        self.columns = columns_to_read(self.config)
        self.attributes = esp_attribute_names(self.config)
        self.work = work
        self.first_seq = first_seq
        self.keep_alive = keep_alive
        self.progress = progress
        self.on_batches = on_batches  # hands finished batches over while resolving goes on
        self._known: set[int] | None = None

    def run(self, workspace: SendWorkspace) -> ResolveCheckpoint:
        point = workspace.checkpoint()
        if point is None:
            point = ResolveCheckpoint(open_seq=self.first_seq)
            ensure_suppression_ready(self.ctx)  # a configured list never refreshed yet is read first
            if self.config.sends.suppression_file:
                loaded = workspace.load_suppression(read_suppression_file(self.config.sends.suppression_file))
                log.info("suppression_list_loaded", send=self.request.id, count=loaded)
            workspace.commit(point)
        else:
            self._record_finished(workspace)  # batches finished before a crash, maybe not yet in state
        if point.done:
            return point
        writer = BatchWriter(
            batches_folder(self.work), self.request.id, self.attributes, self.config.batching.batch_size,
            resume=OpenBatch(point.open_seq, point.open_rows, point.open_size),
        )
        try:
            self._stream(workspace, writer, point)
            last = writer.close()
        except BaseException:
            writer.abandon()
            raise
        if last is not None:
            workspace.add_finished(last.seq, last.rows, last.size)
            self._log_batch(last, point)
        gone = workspace.done_not_seen()  # handed over by an earlier instance, no longer in CRM's answer
        point.resolved, point.written = point.resolved + gone, point.written + gone
        point.open_seq, point.open_rows, point.open_size, point.done = writer.seq, 0, 0, True
        workspace.commit(point)
        self._record_finished(workspace)
        return point

    def _stream(self, workspace: SendWorkspace, writer: BatchWriter, point: ResolveCheckpoint) -> None:
        crm = self.ctx.crm()
        lookup = StatusLookup.start(self.ctx)
        targets = self.request.targets
        try:
            while point.target_index < len(targets):
                group = target_group(targets, point.target_index)
                source = (crm.iter_record_targets(group, self.columns) if len(group) > 1
                          else crm.iter_recipients(group[0], self.columns))
                stream = islice(source, point.target_offset, None)
                with ReadAhead(stream, RESOLVE_CHUNK, name="send-crm-pages") as pages:
                    if lookup.parallel:  # ESP status lookups in their own thread, overlapping paging and writing
                        with ReadAhead(pages, 1, transform=lambda part: self._prepare(part[0], lookup),
                                       name="send-esp-status") as prepared:
                            self._target(prepared, workspace, writer, point)
                    else:
                        self._target((self._prepare(c, lookup) for c in pages), workspace, writer, point)
                point.target_index += len(group)
                point.target_offset = 0
                workspace.commit(point)
        finally:
            lookup.close()

    def _target(self, chunks: Iterable[Prepared], workspace: SendWorkspace, writer: BatchWriter,
                point: ResolveCheckpoint) -> None:
        waited_from = time.monotonic()
        for prepared in chunks:
            started = time.monotonic()
            finished = self._screen(prepared, workspace, writer, point)
            point.target_offset += prepared.size
            point.resolved += prepared.size
            open_batch = writer.checkpoint()
            point.open_seq, point.open_rows, point.open_size = open_batch.seq, open_batch.rows, open_batch.size
            workspace.commit(point)
            crashpoint("after_chunk_committed")
            for batch in finished:
                self._log_batch(batch, point)
            self._save_progress(workspace, point, bool(finished))
            if finished and self.on_batches is not None:
                self.on_batches(point.written)
            log.debug("chunk_resolved", send=self.request.id, rows=prepared.size, resolved=point.resolved,
                      wait_ms=int((started - waited_from) * 1000), work_ms=int((time.monotonic() - started) * 1000))
            waited_from = time.monotonic()
            if self.ctx.stopping.is_set():
                raise Interrupted()
            end_of_turn()  # committed: past its turn, the request pauses here and the others go first

    def _prepare(self, chunk: list, esp: "StatusLookup") -> Prepared:
        """Map a chunk and ask the ESP for the status of its subscribers (no local state touched)."""
        started = time.monotonic()
        mapped: list[Subscriber] = []
        skips: list[Skip] = []
        for recipient in chunk:
            try:
                outcome = self.mapper.map(recipient)
            except (ValueError, TypeError, KeyError, RecordError) as exc:  # a value the mapping cannot handle
                outcome = Skip(recipient.ref, recipient.email, SkipReason.MAPPING_ERROR,
                               f"the mapping failed for this record: {exc}; check the [mapping.*] sections")
            if isinstance(outcome, Skip):
                skips.append(outcome)
            else:
                mapped.append(outcome)
        keys = list(dict.fromkeys(s.subscriber_key for s in mapped))
        mapped_at = time.monotonic()
        statuses = esp.statuses(keys) if keys else {}
        log.debug("chunk_prepared", send=self.request.id, rows=len(chunk), map_ms=int((mapped_at - started) * 1000),
                  status_ms=int((time.monotonic() - mapped_at) * 1000))
        return Prepared(len(chunk), mapped, skips, statuses)

    def _screen(self, prepared: Prepared, workspace: SendWorkspace, writer: BatchWriter,
                point: ResolveCheckpoint) -> list[FinishedBatch]:
        skips = list(prepared.skips)
        candidates = self._first_seen(prepared.mapped, workspace, skips)
        emails = [normalize_email(s.email) for s in candidates]
        suppressed = workspace.suppressed(emails) if candidates else set()
        listed = self._listed(emails) if candidates else {}
        handed = workspace.done_among(emails, [s.subscriber_key for s in candidates]) if candidates else set()
        statuses = prepared.statuses
        finished: list[FinishedBatch] = []
        for i, (sub, email) in enumerate(zip(candidates, emails)):
            if i in handed:  # in a batch an earlier instance got to the ESP: counted, not written again
                point.written += 1
                continue
            if email in suppressed:
                skips.append(Skip(sub.ref, sub.email, SkipReason.SUPPRESSION_LIST, "the address is on the suppression list"))
                continue
            if email in listed:
                skips.append(Skip(sub.ref, sub.email, SkipReason.SUPPRESSION_LIST, listed[email]))
                continue
            esp_skip = ESP_SKIPS.get(statuses.get(sub.subscriber_key))  # type: ignore[arg-type]
            if esp_skip is not None:
                skips.append(Skip(sub.ref, sub.email, esp_skip[0], esp_skip[1]))
                continue
            done = writer.write(sub)
            point.written += 1
            if done is not None:
                workspace.add_finished(done.seq, done.rows, done.size)
                finished.append(done)
                crashpoint("after_batch_finished")  # mid-chunk: file renamed, chunk not committed
        workspace.add_skips(skips)
        for skip in skips:
            point.skipped_by_reason[skip.reason.value] = point.skipped_by_reason.get(skip.reason.value, 0) + 1
        return finished

    def _listed(self, emails: list[str]) -> dict[str, str]:
        """The addresses the ``[suppression]`` list holds (by address or domain), with the reason."""
        if not self.config.suppression.enabled:
            return {}
        wanted = {email: lookup_digests(email) for email in emails if "@" in email}
        found = self.ctx.state.suppression_matches([dg for pairs in wanted.values() for dg, _ in pairs])
        listed = {}
        for email, pairs in wanted.items():
            reason = next((why for dg, why in pairs if dg in found), None)
            if reason is not None:
                listed[email] = reason
        return listed

    def _first_seen(self, mapped: list[Subscriber], workspace: SendWorkspace, skips: list[Skip]) -> list[Subscriber]:
        """Drop subscribers whose address is already in this send (an earlier chunk or this one).

        One key per recipient suffices: the same record read twice carries the same address,
        and two records with one address must not get the email twice either.
        """
        keys = [normalize_email(s.email) for s in mapped]
        before = workspace.seen_before(keys)
        now: set[str] = set()
        out: list[Subscriber] = []
        for sub, key in zip(mapped, keys):
            if key in before or key in now:
                skips.append(Skip(sub.ref, sub.email, SkipReason.DUPLICATE,
                                  "the same record or email address is already in this send"))
                continue
            now.add(key)
            out.append(sub)
        workspace.record(now)
        return out

    def _log_batch(self, batch: FinishedBatch, point: ResolveCheckpoint) -> None:
        log.info("batch_written", send=self.request.id, batch=batch.seq, rows=batch.rows,
                 resolved=point.resolved, written=point.written, skipped=point.skipped)

    def _record_finished(self, workspace: SendWorkspace) -> None:
        with self.ctx.state.transaction() as conn:
            self.keep_alive(conn)  # fenced: a holder taken over meanwhile records no batch
            self._save_finished(workspace, conn)

    def _save_finished(self, workspace: SendWorkspace, conn=None) -> None:  # noqa: ANN001 - a state connection
        if self._known is None:
            self._known = {b.seq for b in self.ctx.state.batches(self.request.id, conn)}
        for seq, rows, _size in workspace.finished():
            if seq not in self._known:
                self._known.add(seq)
                name = batch_file_name(self.request.id, seq)
                keys = member_keys(batches_folder(self.work) / name)  # so another instance can take over
                self.ctx.state.save_batch(
                    Batch(request_id=self.request.id, seq=seq, file_name=name, rows=rows, member_keys=keys), conn=conn
                )

    def _save_progress(self, workspace: SendWorkspace, point: ResolveCheckpoint, new_batches: bool) -> None:
        job = self.job
        job.resolved, job.skipped = point.resolved, point.skipped
        job.skipped_by_reason = dict(point.skipped_by_reason)
        job.phase_detail = f"resolving: {point.resolved} recipients, {point.written} to hand over"
        with self.ctx.state.transaction() as conn:
            self.keep_alive(conn)  # in the transaction: a holder taken over meanwhile writes nothing more
            if new_batches:
                self._save_finished(workspace, conn)
            self.ctx.state.save_send_job(job, conn=conn)
        if self.progress is not None:
            self.progress(JobStatus.RESOLVING)


def resolve(attempt: SendAttempt) -> bool:
    """``resolving``: spool every recipient into batch files (handing finished ones over early when
    the send surely goes by files); then ``handing_over``, or failed when nobody is left."""
    if not attempt.ready():
        return False
    ctx, job = attempt.ctx, attempt.job
    own_workspace(ctx, job)  # this disk's folder is a cache: not this attempt's -> take the send over
    _resolve(ctx, job, attempt.request, attempt.keep_alive, attempt.reporter)
    crashpoint("after_resolved")
    return job.status is JobStatus.HANDING_OVER


def _resolve(ctx: StepContext, job: SendJob, request: SendRequest, keep_alive, report) -> None:
    work = work_folder(ctx.config, job.request_id)
    first_seq = max((b.seq for b in ctx.state.batches(job.request_id)), default=0) + 1
    background: list[BackgroundHandover | None] = []

    def early(written: int) -> None:
        """Once the send surely goes by files, hand finished batches over while resolving goes on."""
        if job.path != "files" and _choose_path(ctx, request, written, final=False) != "files":
            return
        if request.preview_would_send is not None:  # previewed: nothing handed over before the audience check
            return
        if job.path != "files":
            job.path = "files"
            with ctx.state.transaction() as conn:
                keep_alive(conn)  # fenced: a holder taken over meanwhile writes nothing
                ctx.state.save_send_job(job, conn=conn)
        if not background:
            background.append(BackgroundHandover.start(ctx, job.request_id, ensure_list(ctx, job), work, keep_alive))
        if background[0] is None:
            hand_over_files(ctx, job, work, keep_alive)
        else:
            background[0].kick()

    with SendWorkspace(work / "work.db") as workspace:
        try:
            point = Resolver(ctx, job, request, work, first_seq, keep_alive, report, early).run(workspace)
        except BaseException:
            if background and background[0] is not None:
                background[0].close()
            raise
        if background and background[0] is not None:
            background[0].finish()
        job.resolved, job.handed_over = point.resolved, 0
        job.skipped, job.skipped_by_reason = point.skipped, dict(point.skipped_by_reason)
        _count_kept(ctx, job)
        changed = audience_changed_reason(ctx, request, point)
        if changed:  # before any hand-over: back to Previewed with the audience as it is now
            hold_changed_audience(ctx, request, point, changed)
            fail(ctx, job, changed, tell_crm=False)
            return
        job.path = "files" if job.path == "files" else _choose_path(ctx, request, point.written)
        job.move(JobStatus.HANDING_OVER)
        job.phase_detail = f"{point.written} recipients to hand over by {job.path}"
        rows = (QuarantineRow(job.request_id, *row) for row in workspace.iter_skips())
        with ctx.state.transaction() as conn:
            keep_alive(conn)  # fenced: a holder taken over meanwhile writes nothing
            ctx.state.quarantine(rows, conn=conn)
            ctx.state.save_send_job(job, conn=conn)
    log.info("send_resolved", send=job.request_id, resolved=job.resolved, skipped=job.skipped,
             to_hand_over=point.written, path=job.path, skipped_by_reason=job.skipped_by_reason)
    _report_progress(ctx, job)
    if point.written == 0:
        fail(ctx, job, f"nobody is left to send to after skipping: {summary(job)}.")


def _count_kept(ctx: StepContext, job: SendJob) -> None:
    """Rows an earlier instance already upserted (SOAP path, kept by a takeover) count as handed over."""
    reason = SkipReason.ESP_REJECTED if job.path == "soap" else SkipReason.IMPORT_ROW_ERROR
    for batch in current_batches(ctx.state, job.request_id):
        job.handed_over += batch.rows_ok
        add_skips(job, reason, batch.rows_error)


def _choose_path(ctx: StepContext, request: SendRequest, count: int, final: bool = True) -> str:
    """Files above the threshold (or forced); while resolving, "" until that is certain."""
    batching = ctx.config.batching
    if not batching.enabled:
        return "soap"
    if request.force_batching or batching.threshold == 0 or count > batching.threshold:
        return "files"
    return "soap" if final else ""


def _report_progress(ctx: StepContext, job: SendJob) -> None:
    """Counts so far on the CRM request (still Processing); best effort."""
    try:
        ctx.crm().update_send_request(
            job.request_id,
            SendRequestUpdate(resolved=job.resolved, skipped=job.skipped, skipped_by_reason=dict(job.skipped_by_reason)),
        )
    except TransientPeerError as exc:
        log.warning("send_progress_not_reported", send=job.request_id, error=str(exc))
