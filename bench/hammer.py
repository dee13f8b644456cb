"""Web clients hammering a worker's API while a bench run measures it (``python -m bench --hammer N``).

N clients, each sending its next request as soon as the last one answered, cycle over the API's
costliest reads: ``/v1/rollups/hourly`` (a LIST per day folder, and the GETs of what is there) and
``/v1/windows/{window}/open`` (every open row, up to the page's limit). They stop after HAMMER_S or
when the run ends, whichever is first, and at most MAX_REQUESTS requests in all: the load is bounded in
count and in time. Run on a thread of its own with its own event loop, so that the bench's polling is
not slowed by it; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

HAMMER_S: Final = 60.0
MAX_REQUESTS: Final = 1_000_000
REQUEST_TIMEOUT_S: Final = 30.0


@dataclass
class HammerReport:
    clients: int
    seconds: float = 0.0
    by_status: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_ms)

        def quantile(q: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None

        total = sum(self.by_status.values())
        return {"clients": self.clients, "seconds": round(self.seconds, 1), "requests": total,
                "requests_per_s": round(total / self.seconds) if self.seconds else 0,
                "by_status": dict(sorted(self.by_status.items())), "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}


class Hammer:
    """`clients` clients on `port`'s API, from start() until stop() or HAMMER_S."""

    def __init__(self, port: int, clients: int, window: str, token: str | None = None) -> None:
        self.report = HammerReport(clients)
        self._base = f"http://127.0.0.1:{port}"
        self._paths = ["/v1/rollups/hourly", f"/v1/windows/{window}/open"]
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hammer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> HammerReport:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S + 5)
        return self.report

    def _run(self) -> None:
        asyncio.run(self._hammer())

    async def _hammer(self) -> None:
        started = time.monotonic()
        deadline = started + HAMMER_S
        sent = 0
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=self.report.clients)

        async def client(index: int, session: aiohttp.ClientSession) -> None:
            nonlocal sent
            turn = index
            while not self._stop.is_set() and time.monotonic() < deadline and sent < MAX_REQUESTS:
                sent += 1
                path = self._paths[turn % len(self._paths)]
                turn += 1
                begun = time.monotonic()
                try:
                    async with session.get(self._base + path, headers=self._headers) as response:
                        await response.read()
                        status = str(response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = type(exc).__name__
                self.report.by_status[status] += 1
                self.report.latencies_ms.append((time.monotonic() - begun) * 1000)

        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(client(i, session) for i in range(self.report.clients)))
        self.report.seconds = time.monotonic() - started
