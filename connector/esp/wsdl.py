"""Loading the PartnerAPI WSDL for zeep: once per process, cached on disk, offline-safe.

The WSDL (the tenant's ``etframework.wsdl``, Salesforce's published copy or the
sandbox's) is parsed once per process and shared by every adapter thread: only
request building is used from the zeep client, which is safe across threads.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import requests
import structlog
import zeep
from zeep.cache import SqliteCache
from zeep.transports import Transport

from connector.errors import PeerSetupError, PermanentPeerError, TransientPeerError

log = structlog.get_logger(__name__)

WSDL_CACHE_SECONDS = 24 * 3600

# The PartnerAPI WSDL imports this schema from the internet although nothing in the WSDL
# uses it. It is answered locally, so the WSDL loads offline. Written from the published
# shape of the apifault element (Code, Message, LogID, Params).
_FAULT_XSD = b"""<?xml version="1.0" encoding="utf-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:f="urn:fault.partner.exacttarget.com"
    targetNamespace="urn:fault.partner.exacttarget.com" elementFormDefault="qualified">
  <xs:element name="apifault" type="f:APIFault"/>
  <xs:complexType name="APIFault">
    <xs:sequence>
      <xs:element name="Code" type="xs:int"/>
      <xs:element name="Message" type="xs:string"/>
      <xs:element name="LogID" type="xs:long" minOccurs="0"/>
      <xs:element name="Params" minOccurs="0">
        <xs:complexType><xs:sequence>
          <xs:element name="Param" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
        </xs:sequence></xs:complexType>
      </xs:element>
    </xs:sequence>
  </xs:complexType>
</xs:schema>
"""

class _PartnerTransport(Transport):
    """zeep transport that answers the fault-schema import locally and verifies with our CA."""

    def load(self, url: str) -> bytes:
        if url.endswith("/ETFrameworkFault.xsd"):
            return _FAULT_XSD
        return super().load(url)

    def _load_remote_data(self, url: str) -> bytes:
        # verify= per request: a session-level verify loses to REQUESTS_CA_BUNDLE in the environment
        with self.session.get(url, timeout=self.load_timeout, verify=self.session.verify) as response:
            response.raise_for_status()
            return response.content


_clients: dict[str, zeep.Client] = {}
_clients_lock = threading.Lock()


def load_client(wsdl: str, *, verify: str | bool, cache_dir: Path | None, timeout: float) -> zeep.Client:
    """A zeep client for the WSDL (URL or file), parsed once per process and shared.

    Only request building is used from it (thread-safe); every call goes through the
    caller's own session. WSDLs fetched by URL are cached in ``cache_dir`` for a day.
    """
    key = f"{wsdl}|{verify}"
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        session = requests.Session()
        session.verify = verify
        try:
            cache = _cache(cache_dir)
            transport = _PartnerTransport(session=session, cache=cache, timeout=timeout, operation_timeout=timeout)
            settings = zeep.Settings(strict=False, xml_huge_tree=True)
            client = zeep.Client(wsdl, transport=transport, settings=settings)
        except requests.exceptions.SSLError as exc:
            raise PeerSetupError(
                f"TLS verification of {wsdl} failed: {exc} - check [esp] ca_bundle", peer="esp", operation="wsdl"
            ) from exc
        except (requests.RequestException, OSError) as exc:
            raise TransientPeerError(
                f"could not load the Marketing Cloud WSDL from {wsdl} ([esp] wsdl): {exc}", peer="esp", operation="wsdl"
            ) from exc
        except Exception as exc:  # zeep raises many kinds on a broken document
            raise PermanentPeerError(
                f"the Marketing Cloud WSDL at {wsdl} ([esp] wsdl) could not be parsed: {exc}",
                peer="esp", operation="wsdl",
            ) from exc
        finally:
            session.close()
        _clients[key] = client
        return client


def _cache(cache_dir: Path | None) -> SqliteCache | None:
    """The on-disk WSDL cache; without a writable folder the WSDL is simply fetched each start."""
    if cache_dir is None:
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return SqliteCache(path=str(cache_dir / "esp-wsdl-cache.sqlite"), timeout=WSDL_CACHE_SECONDS)
    except (OSError, sqlite3.Error) as exc:
        log.warning("esp_wsdl_cache_unavailable", folder=str(cache_dir), error=str(exc))
        return None


def wsdl_address(client: zeep.Client) -> str:
    """The endpoint written in the WSDL (the deprecated global one in the real WSDL)."""
    return str(client.service._binding_options.get("address", ""))  # noqa: SLF001 - no public accessor
