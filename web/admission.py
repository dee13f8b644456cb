"""How many API requests a worker serves: a rate, not only a concurrency.

The web server runs on the worker's event loop, beside the pipeline: every request costs the loop its
HTTP parsing, its view and its JSON, however cheap the view. Measured with `python -m bench --hammer 50`
(NOTES.md), 50 clients asking as fast as they were answered (243 requests a second) halved the events
a second of a 3-key run. So the `/v1` requests are admitted at WEB_RATE_LIMIT a second (health,
`/metrics` and `/v1/status`, answers from memory, are not counted: probes, Prometheus and a bench's
progress must never wait behind clients reading the stores), by the generic cell rate algorithm:
a burst of up to BURST_S seconds' worth passes at once; a request over the rate waits its turn, which
costs a sleeping coroutine and no CPU, so a client asking again as soon as it is answered is simply
slowed to the rate; one that would wait more than MAX_WAIT_S is refused at once (503, Retry-After).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

BURST_S: Final = 1.0  # a second's worth of requests may come at once (a dashboard's poll is 4 at a time)
MAX_WAIT_S: Final = 5.0  # a request waits at most this long for its turn; beyond, 503


class Admission:
    """The turn of each API request, at `rate` a second (GCRA); not thread-safe: one event loop's."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._tolerance = BURST_S  # the bucket's depth, in seconds of the rate
        self._clock = clock
        self._tat = clock()  # the theoretical arrival time of the next conforming request

    def reserve(self) -> float | None:
        """Seconds this request must wait for its turn (0: now), its turn then taken; None: it would wait
        more than MAX_WAIT_S, and is refused (no turn taken)."""
        now = self._clock()
        tat = max(self._tat, now)
        wait = tat - now - self._tolerance
        if wait > MAX_WAIT_S:
            return None
        self._tat = tat + self._interval
        return max(0.0, wait)
