#!/usr/bin/env python3
"""The floor for bench/tracking: only retrieve the same tracking pages from the same sandbox.

Same ESP client, same event types, same ``since`` as the tracking step; the events are
counted and dropped (no state, no CRM, no staging). ``bench/tracking`` runs this in a
subprocess and prints the step's time as a multiple of this one.

    tracking_floor.py WORKDIR        (WORKDIR written by ``bench/tracking``)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# requests lets REQUESTS_CA_BUNDLE override a session's own CA; the sandbox has its own CA
for _var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_var, None)


def sandbox_info(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / "sandbox.json").read_text(encoding="utf-8"))


def bench_config(workdir: Path, mode: str = "all") -> Any:
    """The connector's Config pointed at the sandbox described in WORKDIR/sandbox.json."""
    from connector.config import (
        Config,
        CrmSettings,
        EspSettings,
        LoggingSettings,
        ServiceSettings,
        StateSettings,
        TrackingSettings,
    )

    info = sandbox_info(workdir)
    esp, crm = info["esp"], info.get("crm") or {}
    return Config(
        service=ServiceSettings(data_dir=workdir / "data"),
        logging=LoggingSettings(folder=workdir / "logs", level="WARNING", console="off"),
        state=StateSettings(url=f"sqlite:///{workdir / 'data' / 'state.db'}"),
        esp=EspSettings(wsdl=esp["wsdl_url"], auth_url=esp["auth_url"], client_id=esp["client_id"],
                        client_secret=esp["client_secret"], ca_bundle=Path(info["ca_file"])),
        crm=CrmSettings(url=crm.get("url", ""), authority=crm.get("authority", ""),
                        client_id=crm.get("client_id", ""), client_secret=crm.get("client_secret") or None,
                        ca_bundle=Path(info["ca_file"])),
        tracking=TrackingSettings(mode=mode, event_types=tuple(info["types"]),
                                  initial_lookback_days=info["lookback_days"]),
    )


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the parent's over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    workdir = Path(sys.argv[1])
    info = sandbox_info(workdir)
    config = bench_config(workdir)

    import structlog

    from connector.esp.marketing_cloud import MarketingCloudEspClient
    from connector.models import EventType

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    since = datetime.fromisoformat(info["since"])
    client = MarketingCloudEspClient.from_config(config)
    started, cpu = time.perf_counter(), time.process_time()
    events = pages = 0
    try:
        for name in info["types"]:
            for page in client.iter_event_pages(EventType(name), since):
                pages += 1
                events += len(page)
    finally:
        client.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"events": events, "pages": pages, "seconds": seconds, "cpu_seconds": cpu,
                      "peak_rss_mb": peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
