"""The SFTP file drop (paramiko): where batch files wait for the ESP's import.

* The server's host key must already be in ``[sftp] known_hosts`` (or the user's
  ``~/.ssh/known_hosts`` when that key is blank); an unknown or changed key is
  refused, never accepted on first use.
* A file goes up as ``<name>.part``, its size is checked, then it is renamed, so
  the ESP never imports half a file.
* A dropped connection is reconnected and the upload resumes from the size the
  server already has (files are written strictly in order); how often and after what
  wait is the one retry policy's (:mod:`connector.retry`).
"""

from __future__ import annotations

import errno
import posixpath
import socket
import stat
import time
from pathlib import Path
from typing import Callable, TypeVar

import paramiko
import structlog

from connector.config import Config
from connector.defaults import MAX_RETRIES
from connector.errors import AuthError, ConfigError, PeerSetupError, PermanentPeerError, TransientPeerError
from connector.retry import BACKOFF_SECONDS, RetryPolicy
from connector.transfer.base import FileDrop

log = structlog.get_logger(__name__)

T = TypeVar("T")
PEER = "sftp"
CHUNK = 256 * 1024
PART_SUFFIX = ".part"
_DROPPED = (OSError, EOFError, socket.timeout, paramiko.SSHException)


class SftpFileDrop(FileDrop):
    """``FileDrop`` on an SFTP folder (Marketing Cloud's Enhanced FTP ``/Import``)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        *,
        password: str | None = None,
        key_file: Path | None = None,
        key_passphrase: str | None = None,
        known_hosts: Path | None = None,
        folder: str = "/Import",
        timeout: float = 60.0,
        max_retries: int = MAX_RETRIES,
        backoff_seconds: float = BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host = host
        self.port = port
        self._username = username
        self._password = password
        self._key_file = key_file
        self._key_passphrase = key_passphrase
        self._known_hosts = known_hosts
        self.folder = folder.rstrip("/") or "/"
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __repr__(self) -> str:
        return f"SftpFileDrop({self._username}@{self.host}:{self.port}{self.folder})"

    @classmethod
    def from_config(cls, config: Config) -> "SftpFileDrop":
        sftp = config.sftp
        if not sftp.host or not sftp.username:
            raise ConfigError("[sftp] host and username are needed for the file drop", section="sftp", key="host")
        if sftp.password is None and sftp.private_key_file is None:
            raise ConfigError("[sftp] needs a password (CONNECTOR_SFTP_PASSWORD) or private_key_file",
                              section="sftp", key="password")
        return cls(
            sftp.host,
            sftp.port,
            sftp.username,
            password=sftp.password.get_secret_value() if sftp.password else None,
            key_file=sftp.private_key_file,
            key_passphrase=sftp.private_key_passphrase.get_secret_value() if sftp.private_key_passphrase else None,
            known_hosts=sftp.known_hosts,
            folder=sftp.import_folder,
            timeout=config.timeouts.sftp_seconds,
        )

    # -- connection ----------------------------------------------------------------------

    def _where(self) -> str:
        return f"SFTP server {self.host}:{self.port}"

    def _connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None:
            transport = self._ssh.get_transport() if self._ssh is not None else None
            if transport is not None and transport.is_active():
                return self._sftp
            self._drop()  # closed while idle (Marketing Cloud closes idle sessions after 10 minutes)
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            if self._known_hosts is not None:
                ssh.load_host_keys(str(self._known_hosts))
            else:
                ssh.load_system_host_keys()
        except OSError as exc:
            ssh.close()
            raise ConfigError(f"cannot read [sftp] known_hosts {self._known_hosts}: {exc.strerror}",
                              section="sftp", key="known_hosts") from exc
        try:
            ssh.connect(
                self.host, port=self.port, username=self._username, password=self._password,
                pkey=self._load_key(), timeout=self._timeout, banner_timeout=self._timeout,
                auth_timeout=self._timeout, channel_timeout=self._timeout,
                look_for_keys=False, allow_agent=False,
            )
            _no_delay(ssh)
            sftp = ssh.open_sftp()
            sftp.get_channel().settimeout(self._timeout)
        except BaseException as exc:
            ssh.close()
            raise self._connect_error(exc) from exc
        self._ssh, self._sftp = ssh, sftp
        log.debug("sftp_connected", peer="sftp", host=self.host, port=self.port)
        return sftp

    def _load_key(self) -> paramiko.PKey | None:
        if self._key_file is None:
            return None
        try:
            passphrase = self._key_passphrase.encode() if self._key_passphrase else None
            return paramiko.PKey.from_path(self._key_file, passphrase=passphrase)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise ConfigError(f"cannot load [sftp] private_key_file {self._key_file}: {exc}",
                              section="sftp", key="private_key_file") from exc

    def _connect_error(self, exc: BaseException) -> BaseException:
        where = self._where()
        known = f"[sftp] known_hosts ({self._known_hosts or '~/.ssh/known_hosts'})"
        if isinstance(exc, paramiko.BadHostKeyException):
            return PeerSetupError(
                f"{where} presented a host key that does not match {known}: refusing to connect. If the server's key "
                "really changed, verify it out of band and update the file", peer="sftp", operation="connect")
        if isinstance(exc, paramiko.AuthenticationException):
            return AuthError(f"{where} refused the login of {self._username!r}: check [sftp] username and the "
                             "password (CONNECTOR_SFTP_PASSWORD) or [sftp] private_key_file",
                             peer="sftp", operation="connect")
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return PeerSetupError(
                f"{where} is not in {known}: add its host key there (e.g. ssh-keyscan -p {self.port} {self.host}, "
                "checked against the provider's published fingerprint); unknown keys are never accepted",
                peer="sftp", operation="connect")
        if isinstance(exc, (ConfigError, KeyboardInterrupt, SystemExit)):
            return exc
        return TransientPeerError(f"{where}: connection failed: {type(exc).__name__}: {exc}",
                                  peer="sftp", operation="connect")

    def _drop(self) -> None:
        for thing in (self._sftp, self._ssh):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
        self._sftp = self._ssh = None

    def close(self) -> None:
        self._drop()

    # -- operations ----------------------------------------------------------------------

    def _path(self, name: str) -> str:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"remote file name {name!r} must be a plain file name")
        return posixpath.join(self.folder, name)

    def _retrying(self, operation: str, path: str, action: Callable[[paramiko.SFTPClient], T]) -> T:
        """``action`` on a live connection, repeated by the retry policy after a drop (reconnecting).

        Every operation here is idempotent (a stat; a remove of what is there; an upload that
        resumes its part file and renames it last), so a dropped one is always repeated.
        """

        def attempt() -> T:
            try:
                return action(self._connect())
            except TransientPeerError:
                self._drop()
                raise
            except (PermissionError, FileNotFoundError) as exc:
                raise PermanentPeerError(
                    f"{self._where()}: {operation} in {self.folder} failed: {exc} (check [sftp] import_folder and "
                    "the account's rights)", peer=PEER, operation=operation) from exc
            except _DROPPED as exc:
                self._drop()
                raise TransientPeerError(f"{self._where()}: {operation} interrupted: {type(exc).__name__}: {exc}",
                                         peer=PEER, operation=operation) from exc

        policy = RetryPolicy(PEER, self._max_retries, backoff_seconds=self._backoff, sleep=self._sleep)
        return policy.call(attempt, call=f"{operation} {path}", idempotent=True)

    @staticmethod
    def _stat_size(sftp: paramiko.SFTPClient, path: str) -> int | None:
        try:
            attrs = sftp.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
            raise PermanentPeerError(f"remote {path} is a folder, not a file", peer="sftp", operation="stat")
        return int(attrs.st_size or 0)

    def size(self, remote_name: str) -> int | None:
        path = self._path(remote_name)
        return self._retrying("stat", path, lambda sftp: self._stat_size(sftp, path))

    def remove(self, remote_name: str) -> None:
        path = self._path(remote_name)

        def action(sftp: paramiko.SFTPClient) -> None:
            if self._stat_size(sftp, path) is not None:
                sftp.remove(path)

        self._retrying("remove", path, action)

    def upload(self, local_path: Path, remote_name: str) -> int:
        local_path = Path(local_path)
        total = local_path.stat().st_size
        final = self._path(remote_name)
        part = final + PART_SUFFIX
        started = time.monotonic()

        def action(sftp: paramiko.SFTPClient) -> int:
            if self._stat_size(sftp, final) == total and self._stat_size(sftp, part) is None:
                return total  # an earlier attempt finished: leave it as is
            self._send(sftp, local_path, part, total)
            self._rename(sftp, part, final)
            return total

        size = self._retrying("upload", final, action)
        log.info("file_uploaded", peer="sftp", file=remote_name, bytes=total,
                 duration_ms=int((time.monotonic() - started) * 1000))
        return size

    def _send(self, sftp: paramiko.SFTPClient, local_path: Path, part: str, total: int) -> None:
        offset = self._stat_size(sftp, part) or 0
        if offset > total:
            offset = 0  # a stale part of another file: start over
        if offset:
            log.info("sftp_upload_resumed", peer="sftp", file=posixpath.basename(part), offset=offset, bytes=total)
        mode = "r+b" if offset else "wb"
        # Writes are NOT pipelined: each is acknowledged before the next is sent, so after a
        # failure the server holds an exact prefix and resuming from its size is safe. With
        # pipelining, writes queued behind a failed one could land and leave a hole.
        with local_path.open("rb") as source, sftp.open(part, mode) as target:
            if offset:
                target.seek(offset)
                source.seek(offset)
            while chunk := source.read(CHUNK):
                target.write(chunk)
        written = self._stat_size(sftp, part)
        if written != total:
            raise TransientPeerError(
                f"{self._where()}: {part} has {written} bytes after upload, expected {total}",
                peer="sftp", operation="upload")

    @staticmethod
    def _rename(sftp: paramiko.SFTPClient, part: str, final: str) -> None:
        try:
            sftp.posix_rename(part, final)
            return
        except OSError:
            pass  # server without posix-rename@openssh.com: plain rename does not replace
        try:
            sftp.remove(final)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, None):
                raise
        sftp.rename(part, final)


def _no_delay(ssh: paramiko.SSHClient) -> None:
    """TCP_NODELAY: acknowledged writes would otherwise wait on Nagle + delayed ACK (~40 ms each)."""
    transport = ssh.get_transport()
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
