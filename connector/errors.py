"""The connector's exception tree, grouped by what the caller does about it.

::

    ConnectorError
    ├─ ConfigError(section, key)          refuse to start; the message names section.key
    ├─ PeerError(peer, operation)
    │  ├─ TransientPeerError(retry_after) back off and retry; else leave it to the next run
    │  │  └─ ThrottledError               the peer said "slow down" (429, or ESP HTTP 500)
    │  └─ PermanentPeerError              fail this item with a reason a person can act on
    │     ├─ AuthError                    credentials refused or expired beyond renewal
    │     └─ NotFoundError                the record/object does not exist at the peer
    ├─ RecordError(record_id, field)      quarantine the record, carry on
    └─ StateError                         abort the run; the lease expires, the next run resumes

Library errors (requests, zeep, paramiko, SQLAlchemy) are translated into this
tree at the edge of the adapter that called the library, with ``raise ... from exc``.

``ShutdownRequested`` is a ``BaseException``: it unwinds through ``except Exception``
handlers so a second SIGTERM stops the process at once.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """The configuration is invalid; the service refuses to start.

    ``problems`` holds every problem found, each a ``ConfigProblem``, so that an
    admin sees all of them at once rather than one per restart.
    """

    def __init__(self, message: str, section: str = "", key: str = "", problems: list | None = None) -> None:
        super().__init__(message)
        self.section = section
        self.key = key
        self.problems = list(problems or [])


class PeerError(ConnectorError):
    """A call to a peer (CRM, ESP, SFTP, staging database) failed."""

    def __init__(self, message: str, peer: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.peer = peer
        self.operation = operation


class TransientPeerError(PeerError):
    """Worth retrying later: timeouts, dropped connections, 5xx, throttling."""

    def __init__(
        self, message: str, peer: str = "", operation: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, peer=peer, operation=operation)
        self.retry_after = retry_after


class ThrottledError(TransientPeerError):
    """The peer asked us to slow down (Dataverse 429, Marketing Cloud HTTP 500)."""


class PermanentPeerError(PeerError):
    """Repeating the call will not help; a person has to act."""


class AuthError(PermanentPeerError):
    """Credentials were refused, or a token could not be renewed."""


class NotFoundError(PermanentPeerError):
    """The record or object named in the call does not exist at the peer."""


class RecordError(ConnectorError):
    """One record is bad; quarantine it with the reason and carry on with the rest."""

    def __init__(self, message: str, record_id: str = "", field: str = "") -> None:
        super().__init__(message)
        self.record_id = record_id
        self.field = field


class StateError(ConnectorError):
    """The state database is unusable or inconsistent; abort the run."""


class ShutdownRequested(BaseException):
    """Raised inside work when a second signal asks the process to stop now."""
