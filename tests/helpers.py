"""Small test utilities: deadline-bounded waits, process-tree inspection, topics, Prometheus samples."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.2,
             detail: Callable[[], object] | None = None) -> T:
    """Poll until `condition()` is truthy and return it; fail naming `what` (and `detail()`) at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = condition()
        except Exception:  # noqa: BLE001 - the condition's service may not be up yet
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            seen = ""
            if detail is not None:
                try:
                    seen = f"; last seen: {detail()!r}"
                except Exception as exc:  # noqa: BLE001 - the detail is best effort
                    seen = f"; detail unavailable: {exc!r}"
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{seen}")
        time.sleep(interval_s)


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below pid, whatever session or process group it is in."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def metric_samples(exposition: str) -> dict[MetricKey, float]:
    """Prometheus text format as {(sample name, sorted label pairs): value}."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create topics on the embedded broker (replication 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)
                                   for topic in topics])
    finally:
        await admin.close()
