"""The file drop interface: where batch files go before an ESP import reads them."""

from __future__ import annotations

import abc
from pathlib import Path


class FileDrop(abc.ABC):
    """Role interface for a remote folder the ESP imports from (SFTP for Marketing Cloud)."""

    @abc.abstractmethod
    def upload(self, local_path: Path, remote_name: str) -> int:
        """Upload to a temporary name, check the size, rename to ``remote_name``.

        Resumes after a dropped connection. Returns the size in bytes. Safe to repeat:
        a complete file of the same size already at ``remote_name`` is left as is.
        """

    @abc.abstractmethod
    def size(self, remote_name: str) -> int | None:
        """Size of the remote file, or None if it is absent."""

    @abc.abstractmethod
    def remove(self, remote_name: str) -> None:
        """Delete the remote file if present."""

    def close(self) -> None:  # pragma: no cover - default no-op
        """Close the connection."""
