"""Per-caller rate limits of the HTTP API: one token bucket per token, or per address.

Three limiters, each a :class:`RateLimiter` on ``app.state``: queries
(``rate_limiter``), writes (``write_limiter``: triggers, acknowledgements) and
failed authentications (``failed_auth_limiter``, always keyed by client
address, so that guessing tokens from one address stops at its burst).
A caller with a valid token is limited by its token (however many addresses
it calls from); an anonymous one by its client address.  Over the limit the
answer is ``429 Too Many Requests`` with ``Retry-After`` in whole seconds.
Buckets live in this process: with several API processes each allows the
full rate (the deployment's proxy is where a global limit belongs).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets: ``rate_per_s`` sustained, ``burst`` at once, per key.

    Parameters
    ----------
    rate_per_s
        Refill rate, requests per second; 0 turns limiting off.
    burst
        Bucket size, requests.
    clock
        Monotonic seconds (injectable for tests).
    """

    MAX_KEYS = 100_000

    def __init__(self, rate_per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        """``key``'s bucket refilled up to ``now`` (call with the lock held)."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate_per_s)

    def retry_after_s(self, key: str) -> float | None:
        """Take one request for ``key``: None if allowed, else seconds until one would be."""
        return self._take(key, take=True)

    def peek_s(self, key: str) -> float | None:
        """Like :meth:`retry_after_s` without taking a request: None if one would be allowed."""
        return self._take(key, take=False)

    def _take(self, key: str, *, take: bool) -> float | None:
        if self.rate_per_s <= 0:
            return None
        now = self._clock()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                if take:
                    self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate_per_s
            if take:
                if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
                    self._forget_full(now)
                self._buckets[key] = (tokens - 1.0, now)
            return None

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold no state worth keeping."""
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate_per_s >= self.burst]
        for key in full:
            del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
