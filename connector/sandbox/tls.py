"""A private certificate authority for the loopback sandboxes.

The sandboxes speak HTTPS with verification on, exactly like the real services.
``SandboxCA`` creates a CA key pair and a server certificate for ``127.0.0.1`` /
``localhost`` on first use, keeps them in a folder (``ca.pem``, ``ca-key.pem``,
``server.pem``, ``server-key.pem``) and reuses them on restart, so a client
configured with ``ca_bundle = <folder>/ca.pem`` keeps working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connector.private import FILE_MODE, open_private

CA_VALID_DAYS = 3650
"""Lifetime of the sandbox CA certificate."""

SERVER_VALID_DAYS = 825
"""Lifetime of the sandbox server certificate (the browser maximum)."""

_lock = threading.Lock()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (also when the file already existed)."""
    with open_private(path) as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class SandboxCA:
    """A CA plus one server certificate for loopback, persisted in ``folder``."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.ca_file = self.folder / "ca.pem"
        self.ca_key_file = self.folder / "ca-key.pem"
        self.cert_file = self.folder / "server.pem"
        self.key_file = self.folder / "server-key.pem"
        self._ensure()

    # -- generation ---------------------------------------------------------------
    def _ensure(self) -> None:
        with _lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.ca_file.exists() and self.ca_key_file.exists()):
                self._make_ca()
            if not (self.cert_file.exists() and self.key_file.exists()) or self._server_expired():
                self._make_server()

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Connector Sandbox CA")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.ca_key_file, _key_pem(key))
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        for stale in (self.cert_file, self.key_file):
            stale.unlink(missing_ok=True)

    def _server_expired(self) -> bool:
        cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        return cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)

    def _make_server(self) -> None:
        ca_key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        san = x509.SubjectAlternativeName(
            [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=SERVER_VALID_DAYS))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        write_private(self.key_file, _key_pem(key))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    # -- use ----------------------------------------------------------------------
    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the loopback certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx
