"""How late the Marketing Cloud sandbox shows what happened, as the real service does.

Marketing Cloud works asynchronously: a started send, an import's results and the
tracking events all become retrievable some time after the fact. The sandbox holds
each of them back on its simulated clock (``SimClock``), so ``esp.advance(hours)``
moves past every delay at once and a clock ``speed`` shortens them in wall time.

``Latency.scale`` multiplies every delay (1.0 = the realistic defaults below; a test
that wants the same behaviour in less wall time passes e.g. 0.01). ``Latency.none()``
switches the delays off for the few unit tests about something else.

Defaults and their sources (docs/sandbox-esp.md, production rules):

* ``send_visible_seconds`` 60: Perform start returns before the Send exists for
  Retrieve; the delay is not documented [unverified], so a minute is assumed.
* ``import_summary_seconds`` 30: "information for a recently executed import may
  not be readily available" (retrieving_the_results_of_an_import) [delay unverified].
* ``EVENT_ARRIVAL``: about 84% of events retrievable within 1 minute of their
  EventDate, 96% within 15, 99% within 60 (help: "Understand timing and tracking");
  the last 1% is assumed to arrive within two hours [unverified].
"""

from __future__ import annotations

import bisect
import functools
from array import array
from dataclasses import dataclass

EVENT_ARRIVAL: tuple[tuple[float, int], ...] = ((0.84, 60), (0.96, 15 * 60), (0.99, 60 * 60), (1.0, 120 * 60))
"""(share of events, seconds after EventDate by which they are retrievable), cumulative."""


@dataclass(frozen=True)
class Latency:
    """Delays between an action at the ESP and its visibility to Retrieve (sandbox seconds)."""

    send_visible_seconds: float = 60.0
    import_summary_seconds: float = 30.0
    event_arrival: tuple[tuple[float, int], ...] = EVENT_ARRIVAL
    scale: float = 1.0

    @classmethod
    def none(cls) -> "Latency":
        return cls(send_visible_seconds=0.0, import_summary_seconds=0.0, event_arrival=())

    @property
    def send_delay(self) -> float:
        return self.send_visible_seconds * self.scale

    @property
    def import_delay(self) -> float:
        return self.import_summary_seconds * self.scale

    @property
    def max_event_lag(self) -> int:
        """The longest event delay, in whole seconds (0: events are retrievable at their EventDate)."""
        return int(self.event_arrival[-1][1] * self.scale) if self.event_arrival else 0


TABLE_BITS = 16


@functools.lru_cache(maxsize=8)
def arrival_table(latency: Latency) -> array:
    """Event delays in seconds at 65,536 evenly spaced quantiles of ``latency.event_arrival``.

    Inside each band of the cumulative table the delay is uniform: with the defaults 84%
    fall in 0-60 s, 12% in 60-900 s, 3% in 900-3600 s and 1% in 3600-7200 s. Drawing an
    event's delay is then one ``getrandbits(16)`` and an index (a million events in well
    under a second).
    """
    table = latency.event_arrival
    size = 1 << TABLE_BITS
    out = array("H", bytes(2 * size))
    if not table:
        return out
    shares = [share for share, _ in table]
    lows = [0] + [seconds for _, seconds in table]
    for k in range(size):
        u = (k + 0.5) / size
        band = min(bisect.bisect_right(shares, u), len(table) - 1)
        start = shares[band - 1] if band else 0.0
        width = (shares[band] - start) or 1.0
        seconds = lows[band] + (u - start) / width * (lows[band + 1] - lows[band])
        out[k] = min(65_535, int(seconds * latency.scale))
    return out
