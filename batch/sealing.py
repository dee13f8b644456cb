"""When an hour is sealed: the rule, as pure functions of what stage 1 has made durable.

Inputs, all read from Kafka by batch/stage1.py:

* the low watermark W over all input partitions, from the `APP_ID-watermarks` topic, computed
  exactly as stage 1 computes it (tables/watermark.low_watermark). Each partition's watermark is
  its highest event time minus ALLOWED_LATENESS, published only after the position behind it is
  durable in `APP_ID-ingest-state`;
* each input partition's stage-1 position record (formats.state.IngestPosition), read *after* W:
  `fold_next` (records before it were read and judged) and `archive_next` (every valid record
  before it is in a raw file in S3).

Rule. Let O be the positions read right after W, and N the positions at some later reading.
Every hour ending at or before W is sealed once, for every input partition p,
N[p].archive_next >= O[p].fold_next: every record stage 1 had read when its partitions'
watermarks passed the hour's end is then in the raw archive. Any record of that hour read
later is behind the low watermark (a late event): it lands in a new raw file of the hour's
folder, which the manifests notice (batch/manifest.py), and the hour and its day are computed
again. A day is sealed when its last hour is.

An hour processed once stays sealed: its manifest is the proof (late files for it are
processed even when a run cannot establish the current bound).
"""

from __future__ import annotations

from collections.abc import Mapping

from batch.periods import Period

__all__ = ["is_sealed", "sealed_until", "uncovered"]


def uncovered(fold_next_then: Mapping[int, int | None], archive_next_now: Mapping[int, int | None]) -> list[int]:
    """Partitions whose raw archive has not yet reached what stage 1 had read at the observation.

    A partition with nothing read then (fold_next None) is covered; one whose archive position is
    unknown now is not."""
    late = []
    for partition, fold_next in sorted(fold_next_then.items()):
        if fold_next is None:
            continue
        archive_next = archive_next_now.get(partition)
        if archive_next is None or archive_next < fold_next:
            late.append(partition)
    return late


def sealed_until(low_watermark_ms: int | None, uncovered_partitions: list[int]) -> int | None:
    """The bound B: every period ending at or before B is sealed. None while nothing can be said."""
    if low_watermark_ms is None or uncovered_partitions:
        return None
    return low_watermark_ms


def is_sealed(period: Period, bound_ms: int | None, *, processed_before: bool) -> bool:
    return processed_before or (bound_ms is not None and period.end_ms <= bound_ms)
