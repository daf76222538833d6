"""A loopback SFTP server for the Marketing Cloud file drop (paramiko's server side).

``start_sftp_server(root, data_dir, username=..., password=...)`` serves the folder
``root`` (with ``Import/``, ``Export/`` and ``Reports/`` created, as on Marketing
Cloud's Enhanced FTP) on 127.0.0.1 at a free port. The host key is kept in
``data_dir`` (so it survives restarts) and written to ``known_hosts`` in the
``[127.0.0.1]:PORT`` form a client must check against. Password and public-key
auth; like the real service it allows 10 simultaneous connections and locks the
account for 30 minutes after 5 failed password logins in a row. Fault kind ``drop``
closes the connection in the middle of an operation (an upload's write, an open, a
rename), as a flaky network would.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import paramiko
import structlog
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface, ServerInterface
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_OP_UNSUPPORTED, SFTP_PERMISSION_DENIED

from connector.private import FILE_MODE
from connector.sandbox.faults import FaultKnobs

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 10
"""Simultaneous connections per account, as on Marketing Cloud's SFTP."""

LOCKOUT_AFTER = 5
"""Failed password logins in a row that lock the account (0 = never)."""

LOCKOUT_SECONDS = 30 * 60
"""How long a lock-out lasts (Marketing Cloud: 30 minutes)."""

HOST_KEY_FILE = "sftp_host_key"
KNOWN_HOSTS_FILE = "sftp_known_hosts"
FOLDERS = ("Import", "Export", "Reports")


def _load_host_key(data_dir: Path) -> paramiko.PKey:
    path = data_dir / HOST_KEY_FILE
    if path.exists():
        return paramiko.ECDSAKey.from_private_key_file(str(path))
    key = paramiko.ECDSAKey.generate(bits=256)
    key.write_private_key_file(str(path))
    os.chmod(path, 0o600)
    return key


def _load_authorized_keys(files: Iterable[Path | str]) -> list[tuple[str, str]]:
    """(key type, base64 blob) pairs from OpenSSH authorized_keys / .pub files."""
    keys = []
    for file in files:
        for line in Path(file).read_text(encoding="utf-8").splitlines():
            parts = line.strip().split()
            if len(parts) >= 2 and not line.lstrip().startswith("#"):
                keys.append((parts[0], parts[1]))
    return keys


class _Server(ServerInterface):
    """Authentication and channel policy for one connection."""

    def __init__(self, sandbox: "SftpSandbox", transport: paramiko.Transport) -> None:
        self.sandbox = sandbox
        self.transport = transport

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey" if self.sandbox.authorized_keys else "password"

    def check_auth_password(self, username: str, password: str) -> int:
        sandbox = self.sandbox
        if sandbox.locked_out():
            log.info("sftp_sandbox_login_refused", user=username, reason="locked out")
            return paramiko.AUTH_FAILED
        if username == sandbox.username and password == sandbox.password and sandbox.password:
            sandbox.login_failures = 0
            return paramiko.AUTH_SUCCESSFUL
        sandbox.note_login_failure()
        log.info("sftp_sandbox_login_failed", user=username, method="password")
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.sandbox.username and (key.get_name(), key.get_base64()) in self.sandbox.authorized_keys:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(SFTPHandle):
    def __init__(self, flags: int, fs: "_Folder", path: str) -> None:
        super().__init__(flags)
        self.fs = fs
        self.path = path

    def write(self, offset: int, data: bytes) -> int:
        self.fs.maybe_drop("write")
        return super().write(offset, data)

    def stat(self) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.fstat((self.readfile or self.writefile).fileno()))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def chattr(self, attr: SFTPAttributes) -> int:
        return SFTP_OK


class _Folder(SFTPServerInterface):
    """The SFTP file system: paths below the sandbox root only."""

    def __init__(self, server: _Server, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.server = server
        self.root = server.sandbox.root.resolve()

    def maybe_drop(self, where: str) -> None:
        if self.server.sandbox.faults.take("drop"):
            log.info("sftp_sandbox_drop", where=where)
            self.server.transport.close()
            raise EOFError("sandbox fault: connection dropped")

    def _real(self, path: str) -> Path:
        real = (self.root / self.canonicalize(path).lstrip("/")).resolve()
        if real != self.root and self.root not in real.parents:
            raise PermissionError(errno.EACCES, "outside the SFTP root")
        return real

    def canonicalize(self, path: str) -> str:
        return "/" + os.path.normpath("/" + path.replace("\\", "/")).lstrip("/")

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        try:
            folder = self._real(path)
            out = []
            for entry in sorted(os.listdir(folder)):
                attr = SFTPAttributes.from_stat(os.stat(folder / entry))
                attr.filename = entry
                out.append(attr)
            return out
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    def stat(self, path: str) -> SFTPAttributes | int:
        try:
            self.maybe_drop("stat")
            return SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    lstat = stat

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> SFTPHandle | int:
        try:
            self.maybe_drop("open")
            real = self._real(path)
            fd = os.open(real, flags | getattr(os, "O_BINARY", 0), FILE_MODE)  # uploads hold personal data
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        if flags & os.O_WRONLY:
            mode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            mode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            mode = "rb"
        try:
            handle_file = os.fdopen(fd, mode)
        except OSError as exc:
            os.close(fd)
            return SFTPServer.convert_errno(exc.errno)
        handle = _Handle(flags, self, str(real))
        handle.filename = str(real)
        handle.readfile = handle_file
        handle.writefile = handle_file if mode != "rb" else None
        return handle

    def remove(self, path: str) -> int:
        try:
            os.remove(self._real(path))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        try:
            self.maybe_drop("rename")
            new = self._real(newpath)
            if new.exists():  # SFTP v3 rename refuses to overwrite, like OpenSSH
                return SFTP_FAILURE
            os.rename(self._real(oldpath), new)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        try:
            self.maybe_drop("rename")
            os.replace(self._real(oldpath), self._real(newpath))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        try:
            os.mkdir(self._real(path))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def rmdir(self, path: str) -> int:
        try:
            os.rmdir(self._real(path))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        try:
            real = self._real(path)
            if attr.st_size is not None and attr._flags & attr.FLAG_SIZE:
                os.truncate(real, attr.st_size)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def symlink(self, target_path: str, path: str) -> int:
        return SFTP_OP_UNSUPPORTED

    def readlink(self, path: str) -> str | int:
        return SFTP_NO_SUCH_FILE


@dataclass
class SftpSandbox:
    """A running SFTP sandbox."""

    root: Path
    data_dir: Path
    username: str
    password: str
    host_key: paramiko.PKey
    authorized_keys: list[tuple[str, str]]
    faults: FaultKnobs = field(default_factory=FaultKnobs)
    host: str = "127.0.0.1"
    port: int = 0
    known_hosts: Path = Path()
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _transports: list[paramiko.Transport] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    max_connections: int = MAX_CONNECTIONS
    lockout_after: int = LOCKOUT_AFTER
    lockout_seconds: float = LOCKOUT_SECONDS
    login_failures: int = 0
    locked_until: float = 0.0

    def note_login_failure(self) -> None:
        with self._lock:
            self.login_failures += 1
            if self.lockout_after and self.login_failures >= self.lockout_after:
                self.locked_until = time.monotonic() + self.lockout_seconds

    def locked_out(self) -> bool:
        return time.monotonic() < self.locked_until

    def unlock(self) -> None:
        """Lift a lock-out (as support would)."""
        with self._lock:
            self.login_failures, self.locked_until = 0, 0.0

    @property
    def import_folder(self) -> Path:
        return self.root / "Import"

    def start(self) -> "SftpSandbox":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.known_hosts = self.data_dir / KNOWN_HOSTS_FILE
        self.known_hosts.write_text(
            f"[{self.host}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n", encoding="utf-8"
        )
        self._thread = threading.Thread(target=self._accept_loop, name=f"sftp-sandbox-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _addr = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            threading.Thread(target=self._serve, args=(conn,), daemon=True, name="sftp-sandbox-conn").start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._transports = [t for t in self._transports if t.is_active()]
            busy = len(self._transports) >= self.max_connections
        if busy:  # the account's simultaneous-connection limit: refused before the SSH banner
            log.info("sftp_sandbox_connection_refused", reason="too many connections")
            conn.close()
            return
        transport = paramiko.Transport(conn)
        with self._lock:
            self._transports.append(transport)
        try:
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler("sftp", SFTPServer, _Folder)
            transport.start_server(server=_Server(self, transport))
            while transport.is_active() and not self._stopping.is_set():
                channel = transport.accept(timeout=0.5)
                if channel is None:
                    continue
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.debug("sftp_sandbox_connection_ended", error=str(exc))
        finally:
            transport.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()
        for transport in transports:
            transport.join(5)

    def __enter__(self) -> "SftpSandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_sftp_server(root: Path, data_dir: Path, *, username: str, password: str,
                      authorized_key_files: Iterable[Path | str] = (), faults: FaultKnobs | None = None) -> SftpSandbox:
    """Serve ``root`` over SFTP on 127.0.0.1 (free port); host key and known_hosts in ``data_dir``."""
    root, data_dir = Path(root), Path(data_dir)
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    sandbox = SftpSandbox(root=root, data_dir=data_dir, username=username, password=password,
                          host_key=_load_host_key(data_dir), authorized_keys=_load_authorized_keys(authorized_key_files),
                          faults=faults or FaultKnobs())
    return sandbox.start()


__all__ = ["SftpSandbox", "start_sftp_server", "SFTP_PERMISSION_DENIED"]
