"""Files that can hold personal data or state: created private, never widened afterwards.

Batch files (names, e-mail addresses), the SQLite state, staging and suppression
databases with their ``-wal`` / ``-shm`` / ``-journal`` companions, and the sandboxes'
data are created owner-only (``FILE_MODE``) in folders only the owner can enter
(``DIR_MODE``), *at creation* (``os.open`` with the mode), so there is no moment
when another account could open them. Log files are the one documented exception:
readable by the service group (``connector.logs.LOG_FILE_MODE``) so support staff in
that group can read them.

SQLite creates its ``-wal``, ``-shm`` and journal files with the permissions of the
database file (``findCreateFileMode`` in SQLite's ``os_unix.c``), so creating the
database file owner-only before SQLite opens it covers its companions too.

On top of that the command line lowers the process umask to at least
``PROCESS_UMASK`` (what the systemd unit sets with ``UMask=0027``), so a file some
library creates on its own is never readable by others either. On Windows the mode
bits mean little; the data folder's ACL is what protects the files there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

import structlog

log = structlog.get_logger(__name__)

FILE_MODE = 0o600
"""Batch files, databases, work files: read and write for the owner only."""
DIR_MODE = 0o700
"""Folders the connector creates for them."""
PROCESS_UMASK = 0o027
"""Nothing a process of the connector creates is readable by others (as ``UMask=0027``)."""
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def restrict_umask() -> int:
    """Add ``PROCESS_UMASK``'s bits to the process umask (never loosens it); returns the old one."""
    old = os.umask(PROCESS_UMASK)
    os.umask(old | PROCESS_UMASK)
    return old


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) as owner-only folders if missing; return it."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    return path


def open_private(path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)``, but a file it creates is ``FILE_MODE`` from its first moment.

    ``mode`` is one of ``wb``, ``w+b``, ``r+b``, ``ab``, ``w``, ``a`` (text modes take
    ``encoding`` / ``newline`` as ``open`` does).
    """
    flags = {
        "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "w+b": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
        "r+b": os.O_RDWR,
        "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    }[mode]
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0), FILE_MODE)
    try:
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def private_sqlite_file(path: Path) -> Path:
    """Make sure the SQLite database ``path`` exists owner-only before SQLite opens it.

    A file left readable by others by an older version (and its companions) is made
    owner-only once, with a warning naming it.
    """
    path = Path(path).expanduser()
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), FILE_MODE)
    os.close(fd)
    for name in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        tighten(name)
    return path


def tighten(path: Path) -> None:
    """Take group and other permissions off an existing file of ours (no-op on Windows)."""
    if os.name == "nt":
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
        log.warning("file_mode_tightened", path=str(path), was=oct(mode), now=oct(mode & 0o700),
                    reason="it holds state or personal data; others could read it")
