"""``FakeDrop``: the ESP's import folder as a local directory, behind the ``FileDrop`` interface.

Same rules as ``SftpFileDrop`` on the sandbox SFTP server: a remote name is a plain file name
(``ValueError`` otherwise, before anything is written); an upload lands under a temporary
name and is renamed into place, so a reader never sees half a file; a complete file of the
same size already there is left as is; ``size`` of an absent file is None; ``remove`` really
removes (an import reads its file before the step removes it). The folder is the one
``FakeEsp`` imports from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from connector.errors import PermanentPeerError
from connector.transfer.base import FileDrop
from connector.transfer.sftp import PART_SUFFIX


class FakeDrop(FileDrop):
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.uploads = 0

    def _path(self, name: str) -> Path:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"remote file name {name!r} must be a plain file name")
        return self.folder / name

    def upload(self, local_path: Path, remote_name: str) -> int:
        final = self._path(remote_name)
        total = Path(local_path).stat().st_size
        self.uploads += 1
        part = final.with_name(final.name + PART_SUFFIX)
        if self.size(remote_name) == total and not part.exists():
            return total  # an earlier attempt finished: leave it as is
        shutil.copyfile(local_path, part)
        os.replace(part, final)
        return final.stat().st_size

    def size(self, remote_name: str) -> int | None:
        path = self._path(remote_name)
        if path.is_dir():
            raise PermanentPeerError(f"remote {path} is a folder, not a file", peer="sftp", operation="stat")
        return path.stat().st_size if path.exists() else None

    def remove(self, remote_name: str) -> None:
        if self.size(remote_name) is not None:
            self._path(remote_name).unlink()
