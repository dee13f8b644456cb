"""The lake's layout: every object name under ``s3://{bucket}/{prefix}`` and the archive's object metadata.

Layout version LAYOUT_VERSION (1: every name below since the first release)::

    aggregated/{window}/year=YYYY/month=MM/day=DD/hour=HH/{window}-{window_start_ms}-part{part:04d}.parquet
    aggregated/{aggregation}/{window}/year=YYYY/month=MM/day=DD/hour=HH/{window}-{window_start_ms}-part{part:04d}.parquet
                                                                                          (a spec's aggregation)
    events/year=YYYY/month=MM/day=DD/hour=HH/part-{partition:05d}-{start_offset:020d}.parquet
    aggregated/hourly/year=YYYY/month=MM/day=DD/hour=HH/hourly-{hour_start_ms}.parquet   (batch layer)
    aggregated/daily/year=YYYY/month=MM/day=DD/daily-{day_start_ms}.parquet
    batch/manifests/hourly/year=YYYY/month=MM/day=DD/hour=HH/hourly-{hour_start_ms}.json
    batch/manifests/daily/year=YYYY/month=MM/day=DD/daily-{day_start_ms}.json
    batch/manifests/restated/year=YYYY/month=MM/day=DD/hour=HH/restated-{hour_start_ms}.json
    aggregated/{aggregation}/{hourly|daily}/...{period}-{start_ms}.parquet    (a spec's aggregation's rollups)
    batch/manifests/aggregations/{aggregation}/{hourly|daily|restated}/...{period}-{start_ms}.json

Hours are UTC; an object is in the folder of the hour (or day) its window, file or period starts in.
Names are pure functions of their inputs, so a replay writes the same keys. A raw file carries its
last offset (``end-offset``) and row count (``records``) as object metadata (sinks/lake.py says why).
What the files hold is in formats/rows.py, formats/raw.py and formats/batch.py.

``hourly`` and ``daily`` are reserved window names (tables/windows.py), so the rollup
datasets never share a folder with a window's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

from formats.keys import decode_key_part, encode_key_part

__all__ = [
    "DAY_MS",
    "check_prefix",
    "END_OFFSET_METADATA",
    "HOUR_MS",
    "LAYOUT_VERSION",
    "PERIOD_MS",
    "RAW_DIR",
    "RECORDS_METADATA",
    "ROLLUP_PERIODS",
    "AggregateKey",
    "RawKey",
    "aggregate_hour_prefix",
    "aggregate_key",
    "archive_key",
    "manifest_key",
    "parse_aggregate_key",
    "parse_raw_key",
    "raw_hour_prefix",
    "restate_manifest_key",
    "rollup_folders",
    "rollup_key",
    "spec_aggregate_hour_prefix",
    "spec_aggregate_key",
    "spec_manifest_key",
    "parse_spec_aggregate_key",
    "spec_rollup_key",
    "spec_rollup_prefix",
]

LAYOUT_VERSION: Final = 1
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
PERIOD_MS: Final = {"hourly": HOUR_MS, "daily": DAY_MS}  # the rollup periods and their lengths
END_OFFSET_METADATA: Final = "end-offset"
RECORDS_METADATA: Final = "records"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
RAW_DIR: Final = "events/"
ROLLUP_PERIODS: Final = tuple(PERIOD_MS)
_RAW_HOUR_DIR = re.compile(r"year=([0-9]{4})/month=([0-9]{2})/day=([0-9]{2})/hour=([0-9]{2})/", re.ASCII)
_RAW_NAME = re.compile(r"part-([0-9]{5})-([0-9]{20})\.parquet", re.ASCII)
_AGGREGATE_NAME = re.compile(r"(.+)-(-?[0-9]{1,19})-part([0-9]{4,})\.parquet", re.ASCII)


def check_prefix(prefix: str) -> None:
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"lake prefix must be empty or end with '/', got {prefix!r}")


def _hour_dirs(epoch_ms: int) -> str:
    # Integer arithmetic: no float rounding across an hour boundary.
    at = _EPOCH + timedelta(milliseconds=epoch_ms)
    return f"year={at.year:04d}/month={at.month:02d}/day={at.day:02d}/hour={at.hour:02d}"


def _day_dirs(epoch_ms: int) -> str:
    at = _EPOCH + timedelta(milliseconds=epoch_ms)
    return f"year={at.year:04d}/month={at.month:02d}/day={at.day:02d}"


def _period_dirs(period: str, start_ms: int) -> str:
    if period == "hourly":
        return _hour_dirs(start_ms)
    if period == "daily":
        return _day_dirs(start_ms)
    raise ValueError(f"unknown rollup period {period!r}: expected one of {ROLLUP_PERIODS}")


def rollup_key(prefix: str, period: str, start_ms: int) -> str:
    """Key of the hourly or daily rollup of the period starting at ``start_ms`` (UTC)."""
    check_prefix(prefix)
    return f"{prefix}aggregated/{period}/{_period_dirs(period, start_ms)}/{period}-{start_ms}.parquet"


def rollup_folders(prefix: str, period: str, first_start_ms: int, last_start_ms: int,
                   aggregation: str | None = None) -> list[str]:
    """The folders to list for the rollups of the periods starting in [first_start_ms, last_start_ms]
    (of a spec's aggregation, or the article's): one per UTC day for hourly rollups, one per UTC month
    for daily ones."""
    check_prefix(prefix)
    base = f"{prefix}aggregated/" if aggregation is None else f"{prefix}aggregated/{encode_key_part(aggregation)}/"
    if period not in ROLLUP_PERIODS:
        raise ValueError(f"unknown rollup period {period!r}: expected one of {ROLLUP_PERIODS}")
    folders: list[str] = []
    at = _EPOCH + timedelta(milliseconds=first_start_ms)
    last = _EPOCH + timedelta(milliseconds=last_start_ms)
    while at <= last:
        if period == "hourly":
            folders.append(f"{base}hourly/{at:year=%Y/month=%m/day=%d}/")
            at = datetime(at.year, at.month, at.day, tzinfo=timezone.utc) + timedelta(days=1)
        else:
            folders.append(f"{base}daily/{at:year=%Y/month=%m}/")
            at = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=timezone.utc)
    return folders


def manifest_key(prefix: str, period: str, start_ms: int) -> str:
    """Key of the batch manifest of the period starting at ``start_ms``."""
    check_prefix(prefix)
    return f"{prefix}batch/manifests/{period}/{_period_dirs(period, start_ms)}/{period}-{start_ms}.json"


def restate_manifest_key(prefix: str, hour_start_ms: int) -> str:
    """Key of the manifest of the batch layer's restatement of the windows starting in one hour."""
    check_prefix(prefix)
    return f"{prefix}batch/manifests/restated/{_hour_dirs(hour_start_ms)}/restated-{hour_start_ms}.json"


def aggregate_hour_prefix(prefix: str, window: str, hour_start_ms: int) -> str:
    """The folder of one window's objects whose window_start is in one UTC hour."""
    check_prefix(prefix)
    return f"{prefix}aggregated/{encode_key_part(window)}/{_hour_dirs(hour_start_ms)}/"


@dataclass(frozen=True, slots=True)
class AggregateKey:
    window: str
    window_start_ms: int
    part: int


def parse_aggregate_key(prefix: str, key: str) -> AggregateKey | None:
    """Inverse of aggregate_key, or None for any other name (the key must be exactly what aggregate_key
    gives back for what it parses to)."""
    return _parse_window_object(key, lambda window, start_ms, part: aggregate_key(prefix, window, start_ms, part))


def _parse_window_object(key: str, name_of: Callable[[str, int, int], str]) -> AggregateKey | None:
    """The window, start and part of a window object's key, if `name_of` gives that key back for them."""
    name = _AGGREGATE_NAME.fullmatch(key.rsplit("/", 1)[-1])
    if name is None:
        return None
    start_ms, part = int(name.group(2)), int(name.group(3))
    try:
        window = decode_key_part(name.group(1))
        if name_of(window, start_ms, part) != key:
            return None
    except (ValueError, OverflowError):
        return None
    return AggregateKey(window, start_ms, part)


def raw_hour_prefix(prefix: str, hour_start_ms: int) -> str:
    """The folder of the raw files of one UTC hour."""
    check_prefix(prefix)
    return f"{prefix}{RAW_DIR}{_hour_dirs(hour_start_ms)}/"


@dataclass(frozen=True, slots=True)
class RawKey:
    """What the name of an object under events/ says: its hour folder, and whether the file name
    is one the archiver writes (then its partition and first offset)."""

    hour_start_ms: int | None  # None: not in a canonical hour folder
    partition: int | None = None
    start_offset: int | None = None

    @property
    def archive_name(self) -> bool:
        return self.partition is not None


def parse_raw_key(prefix: str, key: str) -> RawKey:
    """Inverse of archive_key, tolerant: anything under events/ parses, foreign names included."""
    rest = key.removeprefix(prefix).removeprefix(RAW_DIR)
    folder = _RAW_HOUR_DIR.match(rest)
    if folder is None:
        return RawKey(None)
    year, month, day, hour = (int(part) for part in folder.groups())
    try:
        hour_ms = (datetime(year, month, day, hour, tzinfo=timezone.utc) - _EPOCH) // timedelta(milliseconds=1)
    except ValueError:  # month=13, day=31 of a short month, hour=24
        return RawKey(None)
    name = _RAW_NAME.fullmatch(rest[folder.end():])
    if name is None:
        return RawKey(hour_ms)
    return RawKey(hour_ms, int(name.group(1)), int(name.group(2)))


def aggregate_key(prefix: str, window: str, window_start_ms: int, part: int) -> str:
    """Key of part ``part`` of one window instance's aggregates, in the UTC hour of its start."""
    check_prefix(prefix)
    if part < 0:
        raise ValueError(f"part must be >= 0, got {part}")
    # Window names are validated as [a-z0-9_-] by settings; encoding them anyway means no
    # name can ever add path levels or fake a partition column.
    name = encode_key_part(window)
    return f"{prefix}aggregated/{name}/{_hour_dirs(window_start_ms)}/{name}-{window_start_ms}-part{part:04d}.parquet"


def spec_aggregate_key(prefix: str, aggregation: str, window: str, window_start_ms: int, part: int) -> str:
    """Key of part ``part`` of one window instance of a spec's aggregation, in the UTC hour of its start."""
    check_prefix(prefix)
    if part < 0:
        raise ValueError(f"part must be >= 0, got {part}")
    folder, name = encode_key_part(aggregation), encode_key_part(window)
    return (f"{prefix}aggregated/{folder}/{name}/{_hour_dirs(window_start_ms)}/{name}-{window_start_ms}-"
            f"part{part:04d}.parquet")


def spec_aggregate_hour_prefix(prefix: str, aggregation: str, window: str, hour_start_ms: int) -> str:
    """The folder of one window's objects of a spec's aggregation whose window_start is in one UTC hour."""
    check_prefix(prefix)
    return f"{prefix}aggregated/{encode_key_part(aggregation)}/{encode_key_part(window)}/{_hour_dirs(hour_start_ms)}/"


def parse_spec_aggregate_key(prefix: str, aggregation: str, key: str) -> AggregateKey | None:
    """Inverse of spec_aggregate_key for one aggregation, or None for any other name."""
    return _parse_window_object(key, lambda window, start_ms, part: spec_aggregate_key(prefix, aggregation, window,
                                                                                        start_ms, part))


def spec_rollup_key(prefix: str, aggregation: str, period: str, start_ms: int) -> str:
    """Key of a spec's aggregation's hourly or daily rollup of the period starting at ``start_ms``."""
    check_prefix(prefix)
    return (f"{prefix}aggregated/{encode_key_part(aggregation)}/{period}/{_period_dirs(period, start_ms)}/"
            f"{period}-{start_ms}.parquet")


def spec_rollup_prefix(prefix: str, aggregation: str, period: str) -> str:
    """The folder of every hourly or daily rollup of a spec's aggregation."""
    check_prefix(prefix)
    return f"{prefix}aggregated/{encode_key_part(aggregation)}/{period}/"


def spec_manifest_key(prefix: str, aggregation: str, period: str, start_ms: int) -> str:
    """Key of the manifest of a spec's aggregation's rollup of a period (hourly, daily), or of its
    restatement of the windows starting in one hour (restated)."""
    check_prefix(prefix)
    dirs = _hour_dirs(start_ms) if period == "restated" else _period_dirs(period, start_ms)
    return (f"{prefix}batch/manifests/aggregations/{encode_key_part(aggregation)}/{period}/{dirs}/"
            f"{period}-{start_ms}.json")


def archive_key(prefix: str, first_event_ms: int, partition: int, start_offset: int) -> str:
    """Key of the raw file of ``partition`` starting at ``start_offset``.

    The file name depends only on (partition, start_offset); the hour directory comes from
    the first record's event time, which a replay from the same offset reads again.
    """
    check_prefix(prefix)
    if partition < 0 or start_offset < 0:
        raise ValueError(f"partition and start offset must be >= 0, got {partition}, {start_offset}")
    return f"{prefix}events/{_hour_dirs(first_event_ms)}/part-{partition:05d}-{start_offset:020d}.parquet"
