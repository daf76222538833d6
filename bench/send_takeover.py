#!/usr/bin/env python3
"""Chaos run for takeover between instances: every crash point, several rounds, on PostgreSQL.

Each round kills a holder instance (its own ``data_dir`` and ``instance_id``) at
every crash point of a send, on the file and the SOAP path, then lets one
survivor instance finish them all from the shared state database and the sandbox
peers. Every send must be released once, every recipient handed over once, with
the same outcome as an undisturbed send. The short version is
``tests/e2e/test_send_takeover.py``.

    bench/send_takeover.py --rounds 3 [--state-url postgresql://postgres@127.0.0.1:5432/test]

The state URL names a server database; each round gets a fresh database on it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILE_POINTS = [
    "before_crm_claim", "after_claim", "after_chunk_committed", "after_chunk_committed:2",
    "after_batch_finished:2", "after_batch_finished:5", "after_batch_uploaded:1", "after_batch_uploaded:6",
    "after_import_started:1", "after_import_started:5", "after_resolved", "before_send_started",
    "after_send_started", "after_send_recorded", "after_crm_updated",
]
SOAP_POINTS = ["after_chunk_committed:2", "after_batch_finished:4", "after_resolved", "after_soap_chunk:1",
               "after_soap_chunk:4", "before_send_started", "after_send_started", "after_crm_updated"]


def fresh_database(server_url: str) -> tuple[str, callable]:
    import sqlalchemy as sa

    url = server_url.replace("postgresql://", "postgresql+psycopg://", 1)
    name = "cesp_bench_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()

    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False), drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--state-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    from tests.e2e.test_send_takeover import Cluster, run_takeover

    cases = [("files", p, p) for p in FILE_POINTS] + [("soap", p, p) for p in SOAP_POINTS]
    for round_no in range(1, args.rounds + 1):
        started = time.monotonic()
        url, drop = fresh_database(args.state_url)
        with tempfile.TemporaryDirectory(prefix="takeover-") as base:
            cluster = Cluster(Path(base), url)
            try:
                outcomes = run_takeover(cluster, cases, ("files", "after_batch_finished:3", "real wait"))
            finally:
                cluster.sb.stop()
                drop()
        print(f"round {round_no}: {len(outcomes)} sends killed and taken over, each released once with "
              f"{next(iter(outcomes.values()))} (resolved, handed over + ESP skips, CRM skips); "
              f"{time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
