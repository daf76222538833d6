"""Benchmark: the ESP side of a full subscriber sync run — every subscriber read by modified date.

    .venv/bin/python bench/esp_subscribers.py -n 100000 [-n 300000] [--rows 100000]

Starts the Marketing Cloud sandbox in this process (TLS on 127.0.0.1), seeds N subscribers
with two profile attributes, and reads them all with
``MarketingCloudEspClient.iter_subscribers_modified_since`` (ListSubscriber of All
Subscribers by ModifiedDate, 2,500 a page, then the subscribers by key, 500 a call), as
``connector sync --full`` does; with ``--rows`` also every row of a data extension of that
many rows (``iter_data_extension_rows``). Prints the rate and the process's CPU seconds.
The sandbox shares the process, so its peak RSS holds the seeded account too: what the
adapter adds is the growth during the read (it must not grow with N).
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import structlog
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.config import Config, EspSettings, ServiceSettings, TimeoutSettings  # noqa: E402
from connector.esp.marketing_cloud import MarketingCloudEspClient  # noqa: E402
from connector.sandbox.marketing_cloud import start_esp_sandbox  # noqa: E402
from connector.sandbox.marketing_cloud.dataext import DEFieldRec  # noqa: E402
from connector.sandbox.tls import SandboxCA  # noqa: E402

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(n: int, rows: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-esp-"))
    ca = SandboxCA(tmp / "ca")
    mc = start_esp_sandbox(tmp / "esp", ca, import_root=tmp / "root")
    try:
        for i in range(n):
            mc.store.add_subscriber(f"k{i:08d}", f"k{i}@example.com", attributes={"First Name": "Ann", "City": "Graz"})
        if rows:
            mc.store.add_data_extension("bench-de", "Bench DE", [
                DEFieldRec("Id", "Text", 20, is_primary_key=True, is_required=True), DEFieldRec("Points", "Number")])
            for i in range(rows):
                mc.store.edit_row("bench-de", {"Id": f"r{i:08d}", "Points": str(i)})
        config = Config(esp=EspSettings(wsdl=mc.wsdl_url, auth="oauth", auth_url=mc.auth_url, client_id=mc.client_id,
                                        client_secret=SecretStr(mc.client_secret), account_id=mc.account_id,
                                        ca_bundle=ca.ca_file, max_retries=1),
                        service=ServiceSettings(data_dir=tmp / "data"), timeouts=TimeoutSettings(esp_seconds=120))
        esp = MarketingCloudEspClient.from_config(config)
        before, cpu0, started = peak_mb(), cpu_s(), time.monotonic()
        count = sum(len(page) for page in esp.iter_subscribers_modified_since(EPOCH, ["First Name", "City"]))
        took = time.monotonic() - started
        assert count == n, (count, n)
        print(f"subscribers n={n:>9,}: {took:6.1f} s, {n / took:7,.0f}/s, CPU {cpu_s() - cpu0:6.1f} s, "
              f"peak RSS {before:5.0f} MB after seeding -> {peak_mb():5.0f} MB after the read")
        if rows:
            before, cpu0, started = peak_mb(), cpu_s(), time.monotonic()
            got = sum(len(page) for page in esp.iter_data_extension_rows("bench-de", ["Id", "Points"]))
            took = time.monotonic() - started
            assert got == rows, (got, rows)
            print(f"DE rows     n={rows:>9,}: {took:6.1f} s, {rows / took:7,.0f}/s, CPU {cpu_s() - cpu0:6.1f} s, "
                  f"peak RSS {before:5.0f} MB -> {peak_mb():5.0f} MB")
        esp.close()
    finally:
        mc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="subscribers to seed and read (repeatable)")
    parser.add_argument("--rows", type=int, default=0, help="also read a data extension of this many rows")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for n in args.n or [100_000]:
        run(n, args.rows)


if __name__ == "__main__":
    main()
