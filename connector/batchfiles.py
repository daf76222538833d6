"""Batch files for ESP imports: UTF-8 CSV (RFC 4180), header row, ``batch_size`` rows each.

Columns: ``SubscriberKey``, ``EmailAddress``, then one per mapped ESP attribute; the file
names are the send's idempotency keys (``connector.steps.send.keys``).
A file is written as ``<name>.part`` and renamed when complete, so a finished
name always means a finished file. The open file can be checkpointed (its byte
length and row count) and reopened after a crash, truncated to the checkpoint.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

from connector.models import Subscriber
from connector.private import open_private, private_dir
from connector.steps.send.keys import batch_file_name

KEY_COLUMN = "SubscriberKey"
EMAIL_COLUMN = "EmailAddress"


@dataclass(frozen=True)
class FinishedBatch:
    seq: int
    path: Path
    rows: int
    size: int


@dataclass(frozen=True)
class OpenBatch:
    """Checkpoint of the file being written: resume by truncating to ``size``."""

    seq: int
    rows: int
    size: int


class BatchWriter:
    """Writes subscribers into numbered batch files, rolling over every ``batch_size`` rows."""

    def __init__(
        self,
        folder: Path,
        send_id: str,
        attributes: Sequence[str],
        batch_size: int,
        resume: OpenBatch | None = None,
        first_seq: int = 1,
    ) -> None:
        self.folder = Path(folder)
        self.folder = private_dir(self.folder)  # names and e-mail addresses: owner-only
        self.send_id = send_id
        self.attributes = list(attributes)
        self.batch_size = batch_size
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\r\n")
        self._file: io.BufferedWriter | None = None
        self.seq = resume.seq if resume else first_seq
        self.rows = 0
        self.size = 0
        if resume is not None and (resume.rows or resume.size):
            self._reopen(resume)

    @property
    def header(self) -> list[str]:
        return [KEY_COLUMN, EMAIL_COLUMN, *self.attributes]

    def path(self, seq: int) -> Path:
        return self.folder / batch_file_name(self.send_id, seq)

    def _part(self) -> Path:
        return self.path(self.seq).with_name(self.path(self.seq).name + ".part")

    def _reopen(self, resume: OpenBatch) -> None:
        part = self._part()
        final = self.path(self.seq)
        if not part.exists() and final.exists():
            os.replace(final, part)  # completed after the checkpoint, then the process died
        handle = open_private(part, "r+b" if part.exists() else "w+b")
        handle.truncate(resume.size)
        handle.seek(resume.size)
        if handle.tell() != resume.size:  # pragma: no cover - a file shorter than its checkpoint
            handle.close()
            raise OSError(f"batch file {part} is shorter than its checkpoint ({resume.size} bytes)")
        self._file = handle  # type: ignore[assignment]
        self.rows, self.size = resume.rows, resume.size

    def _open(self) -> None:
        self._file = open_private(self._part(), "wb")  # type: ignore[assignment]
        self.rows, self.size = 0, 0
        self._emit(self.header)

    def _emit(self, row: Sequence[str]) -> None:
        self._csv.writerow(row)
        data = self._buffer.getvalue().encode("utf-8")
        self._buffer.seek(0)
        self._buffer.truncate()
        assert self._file is not None
        self._file.write(data)
        self.size += len(data)

    def write(self, subscriber: Subscriber) -> FinishedBatch | None:
        """Append one row; returns the batch it completed, if it completed one."""
        if self._file is None:
            self._open()
        attrs = subscriber.attributes
        self._emit([subscriber.subscriber_key, subscriber.email, *(attrs.get(a, "") for a in self.attributes)])
        self.rows += 1
        if self.rows >= self.batch_size:
            return self._finish()
        return None

    def _finish(self) -> FinishedBatch:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        final = self.path(self.seq)
        os.replace(self._part(), final)
        done = FinishedBatch(self.seq, final, self.rows, self.size)
        self.seq += 1
        self.rows, self.size = 0, 0
        return done

    def checkpoint(self) -> OpenBatch:
        """Flush the open file to disk and say how far it goes."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        return OpenBatch(self.seq, self.rows, self.size)

    def close(self) -> FinishedBatch | None:
        """Complete the last, partly filled batch (None if it holds no rows)."""
        if self._file is None:
            return None
        if self.rows == 0:
            self._file.close()
            self._file = None
            self._part().unlink(missing_ok=True)
            return None
        return self._finish()

    def abandon(self) -> None:
        """Close the open file without completing it (the checkpoint still describes it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_batch(path: Path, skip_rows: int = 0) -> Iterator[Subscriber]:
    """Stream the subscribers of a batch file, after the first ``skip_rows`` data rows."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        attributes = header[2:]
        for row in islice(reader, skip_rows, None):
            yield Subscriber(
                subscriber_key=row[0], email=row[1], attributes=dict(zip(attributes, row[2:]))
            )


DIGEST_SIZE = 16
MEMBER_KEY_SIZE = 2 * DIGEST_SIZE
"""Per row: the digest of the normalized address, then the digest of the subscriber key."""


def member_keys(path: Path) -> bytes:
    """Per row of a batch file, in file order: the 16-byte digests of its normalized address and
    of its subscriber key.

    Kept with the batch in the state database, so an instance taking the send over
    knows who is in a batch at the ESP without this instance's copy of the file.
    """
    from connector.mapping import normalize_email
    from connector.suppression import address_digest

    return b"".join(address_digest(normalize_email(sub.email)) + address_digest(sub.subscriber_key)
                    for sub in read_batch(path))


def split_keys(blob: bytes | None, rows: int | None = None) -> list[tuple[bytes, bytes]]:
    """``member_keys`` back into (address digest, subscriber key digest) pairs (the first ``rows``)."""
    if not blob:
        return []
    count = len(blob) // MEMBER_KEY_SIZE
    count = count if rows is None else min(rows, count)
    step, half = MEMBER_KEY_SIZE, DIGEST_SIZE
    return [(blob[i * step:i * step + half], blob[i * step + half:(i + 1) * step]) for i in range(count)]
