"""The write rate Dataverse's service-protection limits allow, from the sandbox's limits and costs.

A campaign-response write is one operation of ``costs.write`` seconds of execution
inside a ``$batch`` of ``batch`` operations (the envelope adds ``costs.batch``). Per user
and web server the window of ``window_seconds`` holds at most ``execution_seconds`` of
execution and ``requests`` requests; a client honouring ``x-ms-dop-hint`` has at most
``dop_hint`` requests in flight, and (replies held for their execution time) spends at
most ``dop_hint`` seconds of execution per second.

- ``sustained_rate``: writes/s over a long run (every window full);
- ``best_seconds(n)``: the least time n writes can take from an empty window, by
  spending each window's budget as fast as the dop hint allows and then waiting for the
  window to move on (the burst credit of the first window included).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Floor:
    window: float
    execution: float
    requests: int
    dop: int
    op_cost: float  # execution seconds per write, envelope share included

    @classmethod
    def of(cls, limits, batch: int = 100) -> "Floor":
        c = limits.costs
        return cls(limits.window_seconds, limits.execution_seconds, limits.requests, limits.dop_hint,
                   c.write + c.batch / max(1, batch))

    def sustained_rate(self, batch: int = 100) -> float:
        by_time = self.execution / self.window / self.op_cost
        by_requests = self.requests / self.window * batch
        by_dop = self.dop / self.op_cost
        return min(by_time, by_requests, by_dop)

    def best_seconds(self, n: int) -> float:
        work = n * self.op_cost
        full, rest = divmod(work, self.execution)
        if rest == 0 and full > 0:
            full, rest = full - 1, self.execution
        return full * self.window + rest / self.dop

    def best_rate(self, n: int) -> float:
        return n / self.best_seconds(n)
