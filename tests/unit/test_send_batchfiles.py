"""Batch files: RFC 4180 CSV, rolling every batch_size rows, resumable from a checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

from connector.batchfiles import BatchWriter, read_batch
from connector.steps.send.keys import batch_file_name, import_key
from connector.models import Subscriber


def sub(i: int, **attrs: str) -> Subscriber:
    return Subscriber(subscriber_key=f"k{i}", email=f"p{i}@example.com", attributes=attrs)


def test_names_follow_the_contract() -> None:
    assert batch_file_name("abc", 3) == "cesp_abc_3.csv"
    assert import_key("abc", 3) == "cesp-import-abc-3"


def test_rolls_over_and_quotes(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, "s1", ["City"], batch_size=2)
    done = [writer.write(sub(1, City='Wien, "Innere" Stadt')), writer.write(sub(2)), writer.write(sub(3, City="Graz"))]
    last = writer.close()
    assert done[0] is None and done[1] is not None and done[1].seq == 1 and done[1].rows == 2
    assert last is not None and last.seq == 2 and last.rows == 1
    raw = (tmp_path / "cesp_s1_1.csv").read_bytes()
    assert raw.startswith(b"SubscriberKey,EmailAddress,City\r\n")
    with open(tmp_path / "cesp_s1_1.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["k1", "p1@example.com", 'Wien, "Innere" Stadt']
    assert rows[2] == ["k2", "p2@example.com", ""]
    assert [s.attributes["City"] for s in read_batch(tmp_path / "cesp_s1_2.csv")] == ["Graz"]
    assert not list(tmp_path.glob("*.part"))


def test_resume_truncates_to_checkpoint(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, "s1", [], batch_size=10)
    writer.write(sub(1))
    point = writer.checkpoint()
    writer.write(sub(2))  # written after the checkpoint, then the process dies
    writer.checkpoint()
    writer.abandon()
    again = BatchWriter(tmp_path, "s1", [], batch_size=10, resume=point)
    again.write(sub(3))
    done = again.close()
    assert done is not None and done.rows == 2
    assert [s.subscriber_key for s in read_batch(done.path)] == ["k1", "k3"]
    assert [s.subscriber_key for s in read_batch(done.path, skip_rows=1)] == ["k3"]


def test_empty_close_leaves_no_file(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, "s1", [], batch_size=2, first_seq=5)
    writer.write(sub(1))
    writer.write(sub(2))
    assert writer.close() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cesp_s1_5.csv"]


def test_resume_after_rollover_past_the_checkpoint(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, "s1", [], batch_size=2)
    writer.write(sub(1))
    point = writer.checkpoint()
    assert writer.write(sub(2)) is not None  # file 1 completed and renamed after the checkpoint
    writer.write(sub(3))
    writer.abandon()
    again = BatchWriter(tmp_path, "s1", [], batch_size=2, resume=point)
    done = again.write(sub(4))
    assert done is not None and done.seq == 1
    assert [s.subscriber_key for s in read_batch(done.path)] == ["k1", "k4"]
    assert again.close() is None
