"""Stage 2: merge the partial aggregates of every input partition and decide when a window closes.

Pure logic over plain data. Stage 1 sends, per (window, window_start, event_type), the
*cumulative* partial of one input partition with its offset marker; here the newest
partial per input partition replaces the older one, so a replayed or duplicated partial
changes nothing (exactly once in effect without coordination).

Closing. Each input partition also sends its frontier (the low watermark its worker has
announced) to every stage-2 partition, after the partials it covers. A window closes
when every input partition's frontier has reached its end: from then on no partition
can contribute to it (stage 1 treats later records for it as late).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from tables.partials import COUNT, MARKER, MAX, MIN, SUM

# Per input partition: [count, sum, min, max, marker]
PartsByPartition = dict[int, list[float]]


class Totals(NamedTuple):
    count: int
    sum: float
    min: float
    max: float


def merge_partial(parts: PartsByPartition, partition: int, partial: list[float]) -> bool:
    """Keep the partial with the highest marker for `partition`; True if it changed."""
    current = parts.get(partition)
    if current is not None and current[MARKER] >= partial[MARKER]:
        return False
    parts[partition] = list(partial)
    return True


def combine(parts: Mapping[int, list[float]]) -> Totals:
    """Merge partitions' partials in ascending partition order (float sums are order-sensitive)."""
    count, total, low, high = 0, 0.0, float("inf"), float("-inf")
    for partition in sorted(parts):
        partial = parts[partition]
        count += int(partial[COUNT])
        total += partial[SUM]
        low = min(low, partial[MIN])
        high = max(high, partial[MAX])
    if count == 0:
        raise ValueError("no partial to combine")
    return Totals(count, total, low, high)


def low_frontier(frontiers: Mapping[int, int], source_partitions: int) -> int | None:
    """The frontier every input partition has reached, or None until all have reported."""
    if source_partitions < 1 or any(p not in frontiers for p in range(source_partitions)):
        return None
    return min(frontiers[p] for p in range(source_partitions))
