"""`make bench-batch`: rollup throughput of the batch layer, in raw events per second.

Writes one hour of N raw events (default 5M) as the archiver's files (ARCHIVE_MAX_RECORDS rows each,
4 partitions, 8 event types, 100k users) into an in-memory lake, then times `run_batch` computing that
hour and its day: listing, manifest check, Parquet decoding, DuckDB, writing outputs and manifests.
S3 transfer is not included (the embedded S3's speed is not production's). Each of RUNS runs starts
from a lake without outputs; the median is reported.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

from batch.job import Plan, run_batch
from formats.events import Event
from formats.lake import DAY_MS, HOUR_MS, archive_key
from formats.raw import events_to_parquet

HOUR_START_MS = 1_793_570_400_000  # 2026-11-01T22:00Z
PARTITIONS = 4
TYPES = [f"type{i}" for i in range(8)]


class MemoryLake:
    bucket = "bench"
    prefix = ""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}

    def list_etags(self, prefix: str) -> dict[str, str]:
        return {key: etag for key, etag in self.etags.items() if key.startswith(prefix)}

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self.objects[key] = body
        self.etags[key] = str(hash(body))


def raw_file(rng: random.Random, partition: int, start_offset: int, rows: int) -> bytes:
    """The archiver's format (formats.raw.events_to_parquet), event times in the hour."""
    times = sorted(HOUR_START_MS + rng.randrange(HOUR_MS) for _ in range(rows))
    return events_to_parquet([
        (partition, start_offset + i, Event(user_id=f"user-{rng.randrange(100_000)}", event_type=rng.choice(TYPES),
                                            event_ms=at, value=rng.randrange(-40_000, 40_000) / 100))
        for i, at in enumerate(times)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file-records", type=int, default=50_000, help="rows per raw file (ARCHIVE_MAX_RECORDS)")
    args = parser.parse_args()
    rng = random.Random(1)
    lake = MemoryLake()
    started = time.perf_counter()
    offsets = [0] * PARTITIONS
    written = 0
    while written < args.events:
        partition = (written // args.file_records) % PARTITIONS
        rows = min(args.file_records, args.events - written)
        key = archive_key("", HOUR_START_MS, partition, offsets[partition])
        lake.put_bytes(key, raw_file(rng, partition, offsets[partition], rows), "")
        offsets[partition] += rows
        written += rows
    raw_bytes = sum(len(body) for body in lake.objects.values())
    print(f"wrote {written:,} raw events in {len(lake.objects)} files ({raw_bytes / 1e6:.0f} MB Parquet) "
          f"in {time.perf_counter() - started:.0f} s")
    raw = dict(lake.objects), dict(lake.etags)
    figures = []
    for run in range(1, args.runs + 1):
        lake.objects, lake.etags = dict(raw[0]), dict(raw[1])
        started = time.perf_counter()
        report = run_batch(lake, sealed_until_ms=HOUR_START_MS + DAY_MS, plan=Plan(), say=lambda _line: None)
        elapsed = time.perf_counter() - started
        assert [p.kind for p in report.processed] == ["hourly", "daily"], report
        # Each raw event is read twice: once for its hour, once for its day.
        figures.append(written / elapsed)
        print(f"run {run}: the hour and its day in {elapsed:.1f} s: {written / elapsed:,.0f} raw events/s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"median: {statistics.median(figures):,.0f} raw events/s (hour and day; {args.events:,} events); "
          f"peak RSS {peak_mb:,.0f} MB, the in-memory lake included")


if __name__ == "__main__":
    main()
