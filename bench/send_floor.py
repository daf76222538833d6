#!/usr/bin/env python3
"""The floor for bench/send: only page a list's recipients out of CRM and write them to a file.

Same CRM client, same sandbox, same page size as the connector; no mapping, no
de-duplication, no ESP. ``bench/send`` runs this in a subprocess and compares.

    send_floor.py -c service.ini --list LIST_ID --out recipients.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, type=Path)
    parser.add_argument("--list", required=True, dest="list_id")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    from connector.config import load_config
    from connector.crm.dataverse import DataverseCrmClient
    from connector.mapping import columns_to_read
    from connector.models import SendTarget, TargetKind

    config = load_config(args.config)
    client = DataverseCrmClient.from_config(config)
    started = time.monotonic()
    rows = 0
    try:
        with open(args.out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(["SubscriberKey", "EmailAddress"])
            for recipient in client.iter_recipients(SendTarget(TargetKind.LIST, args.list_id), columns_to_read(config)):
                writer.writerow([recipient.ref.id, recipient.email or ""])
                rows += 1
    finally:
        client.close()
    print(f"floor: {rows} recipients in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
