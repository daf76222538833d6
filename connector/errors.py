"""The connector's exception tree, grouped by what the caller does about it.

::

    ConnectorError
    ├─ OperatorError                      hold the work (never fail it), report loudly, resume when fixed
    │  ├─ ConfigError(section, key)       refuse to start; at run time: hold; the message names section.key
    │  ├─ AuthError (also a PermanentPeerError)
    │  └─ PeerSetupError (also a PermanentPeerError)
    ├─ PeerError(peer, operation)
    │  ├─ TransientPeerError(retry_after) back off and retry; else leave it to the next run
    │  │  ├─ ThrottledError               the peer said "slow down" (429, or ESP HTTP 500)
    │  │  └─ TokenExpiredError            the peer refused the access token: renew it, repeat once
    │  └─ PermanentPeerError              fail this item with a reason a person can act on
    │     ├─ AuthError                    credentials refused or expired beyond renewal
    │     ├─ PeerSetupError               the peer refuses how the connector is set up there:
    │     │                               TLS trust, host key, a mapped attribute it does not have
    │     ├─ NotFoundError                the record/object does not exist at the peer
    │     └─ DeltaTokenExpired            a change-tracking token is no longer valid: full resync
    ├─ RecordError(record_id, field)      quarantine the record, carry on
    └─ StateError                         abort the run; the lease expires, the next run resumes

``OperatorError`` is the classification "the operator's problem, not the marketer's":
whatever raises it (or a subclass), the send step leaves the request where it is
(Pending stays Pending) with a note on it, logs ``send_held`` and reports the step run
failed (``connector status``); the next poll tries again, so sends resume once it is
fixed. Catch ``OperatorError`` before ``PermanentPeerError``.

Whether a failure is repeated inside the call (and how long to wait) is decided in one
place, ``connector.retry``, from this tree and from what the call is (idempotent or not).

Library errors (requests, zeep, paramiko, SQLAlchemy) are translated into this
tree at the edge of the adapter that called the library, with ``raise ... from exc``.

``ShutdownRequested`` is a ``BaseException``: it unwinds through ``except Exception``
handlers so a second SIGTERM stops the process at once.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class OperatorError(ConnectorError):
    """Only an operator can fix this: the connector's configuration, credentials or set-up at a peer.

    Work in hand is held, never failed: a send request stays Pending (or Processing, once
    work on it began) with a note saying what is wrong, the step reports the problem, and
    the work resumes by itself once the problem is fixed. Raise it (or ``PeerSetupError``
    for a peer's refusal) for anything no marketer can fix on the request.
    """


class ConfigError(OperatorError):
    """The configuration is invalid; the service refuses to start (at run time: the work is held).

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


class TokenExpiredError(TransientPeerError):
    """The peer refused the access token as expired. The adapter has already dropped the token;
    ``connector.retry`` repeats the call once with a fresh one (if the call may be repeated)."""


class PermanentPeerError(PeerError):
    """Repeating the call will not help; a person has to act."""


class AuthError(PermanentPeerError, OperatorError):
    """Credentials were refused, or a token could not be renewed (an operator's problem)."""


class PeerSetupError(PermanentPeerError, OperatorError):
    """The peer refuses how the connector is set up there: TLS trust (``ca_bundle``), an SFTP host
    key, a mapped attribute or object the peer does not have. Held, not failed, like ``AuthError``."""


class NotFoundError(PermanentPeerError):
    """The record or object named in the call does not exist at the peer."""


class DeltaTokenExpired(PermanentPeerError):
    """A change-tracking token (a Dataverse delta link) the CRM no longer accepts: expired, or not
    valid any more. The caller forgets the token and does a full resync that reconciles.
    ``code`` is ``"delta_expired"`` (as on the other CRM errors that carry one)."""

    code = "delta_expired"


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
