"""How fast a 2,500-row Marketing Cloud Retrieve page is read: zeep objects vs lxml.

Usage: python bench/esp_page_parse.py [WSDL file]   (default: the sandbox's WSDL)
Figures are recorded in docs/esp.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

from connector.esp.events import PARTNER_NS, events_from_rows, flatten
from connector.esp.wsdl import load_client
from connector.models import EventType

ROWS = 2500


def page() -> bytes:
    rows = "".join(
        f'<Results xsi:type="ClickEvent"><Client><ID>100</ID></Client><PartnerKey xsi:nil="true"/>'
        f"<CreatedDate>2026-05-01T10:00:00</CreatedDate><ID>{i}</ID><ObjectID xsi:nil=\"true\"/>"
        f"<SendID>4711</SendID><SubscriberKey>0b6f7c1e-0000-4000-8000-{i:012d}</SubscriberKey>"
        f"<EventDate>2026-05-01T10:{i % 60:02d}:{i % 60:02d}.123</EventDate><EventType>Click</EventType>"
        f"<BatchID>1</BatchID><URLID>{i % 7}</URLID><URL>https://example.com/landing?id={i}&amp;utm=x</URL></Results>"
        for i in range(ROWS)
    )
    return (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soap:Body>'
        f'<RetrieveResponseMsg xmlns="{PARTNER_NS}"><OverallStatus>MoreDataAvailable</OverallStatus>'
        f"<RequestID>abc</RequestID>{rows}</RetrieveResponseMsg></soap:Body></soap:Envelope>"
    ).encode()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            wsdl = sys.argv[1]
        else:
            from connector.sandbox.marketing_cloud.wsdl import build_wsdl

            path = Path(tmp) / "sandbox.wsdl"
            path.write_text(build_wsdl("https://127.0.0.1/Service.asmx"))
            wsdl = str(path)
        operation = load_client(wsdl, verify=True, cache_dir=None, timeout=10).service._binding.get("Retrieve")
    xml = page()

    def with_zeep() -> int:
        return len(operation.process_reply(etree.fromstring(xml))["Results"])

    def with_lxml() -> int:
        results = etree.fromstring(xml)[0][0].iterfind(f"{{{PARTNER_NS}}}Results")
        return len(list(events_from_rows(EventType.CLICK, (flatten(r) for r in results))))

    print(f"page: {ROWS} ClickEvent rows, {len(xml):,} bytes")
    for name, parse in (("zeep", with_zeep), ("lxml", with_lxml)):
        count, best = parse(), float("inf")
        for _ in range(3):
            started = time.perf_counter()
            parse()
            best = min(best, time.perf_counter() - started)
        print(f"{name}: {count} rows, {best * 1000:.0f} ms per page, {count / best:,.0f} rows/s")


if __name__ == "__main__":
    main()
