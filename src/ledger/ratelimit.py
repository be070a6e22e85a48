"""Request rates per API key: a token bucket each, kept in the API process.

A bucket holds up to ``burst`` tokens and refills at ``per_second``; a request
takes one. An app that paces itself never notices; one that floods gets told
how long to wait instead of degrading the ledger for every other tenant. The
buckets live in one process: behind a load balancer each process allows the
rate, so the effective limit is the rate times the number of processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

IDLE_BUCKETS_KEPT: Final = 10_000


class TokenBucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """Buckets by key; ``per_second`` 0 turns limiting off."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = max(burst, 1)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def wait_for(self, key: str) -> float:
        """Take a token for ``key``: 0 when granted, else the seconds until one is due."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= IDLE_BUCKETS_KEPT:
                self._forget_full_buckets(now)
            bucket = self._buckets[key] = TokenBucket(float(self.burst), now)
        bucket.tokens = min(
            float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second
        )
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second

    def _forget_full_buckets(self, now: float) -> None:
        """A bucket that has refilled is the same as no bucket: drop those."""
        full_after = self.burst / self.per_second
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key]


def retry_after_seconds(wait: float) -> int:
    """``Retry-After`` takes whole seconds: round up, never 0."""
    return max(1, math.ceil(wait))
