"""The S3 data lake: deterministic object names and a tiny writer (one put_object per call).

Layout under ``s3://{bucket}/{prefix}``::

    aggregated/{window}/year=YYYY/month=MM/day=DD/hour=HH/{window}-{window_start_ms}-part{part:04d}.parquet
    events/year=YYYY/month=MM/day=DD/hour=HH/part-{partition:05d}-{start_offset:020d}.parquet
    aggregated/hourly/year=YYYY/month=MM/day=DD/hour=HH/hourly-{hour_start_ms}.parquet   (batch layer)
    aggregated/daily/year=YYYY/month=MM/day=DD/daily-{day_start_ms}.parquet
    batch/manifests/hourly/year=YYYY/month=MM/day=DD/hour=HH/hourly-{hour_start_ms}.json
    batch/manifests/daily/year=YYYY/month=MM/day=DD/daily-{day_start_ms}.json
    batch/manifests/restated/year=YYYY/month=MM/day=DD/hour=HH/restated-{hour_start_ms}.json

Hours are UTC. Names are pure functions of their inputs, so a replay writes the same keys:

* aggregates are overwritten with a plain put: same key and same (deterministic) content
  make a replay idempotent;
* raw archive files are written with ``If-None-Match: *`` and never overwritten; see
  ``S3Lake.put_archive`` for the offset contract that keeps replays from duplicating rows;
* rollups and manifests are overwritten whole, the manifest last (batch/job.py).

``hourly`` and ``daily`` are reserved window names (tables/windows.py), so the rollup
datasets never share a folder with a window's.

The writer is blocking (boto3): call it from a thread executor. Retries belong to the
caller (``sinks.retry``); clients built by ``make_s3_client_factory`` do not retry.
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any, Final, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from events import Event, EventColumns
from keys import decode_key_part, encode_key_part
from sinks.errors import (
    ArchiveMetadataError,
    S3BucketNotFoundError,
    SinkConfigurationError,
    SinkUnavailableError,
)
from sinks.rows import PARQUET_CONTENT_TYPE, WindowRow, events_to_parquet, rows_to_parquet

__all__ = [
    "END_OFFSET_METADATA",
    "RAW_DIR",
    "RECORDS_METADATA",
    "ROLLUP_PERIODS",
    "ArchiveOutcome",
    "RawKey",
    "S3Client",
    "S3Lake",
    "AggregateKey",
    "aggregate_hour_prefix",
    "aggregate_key",
    "archive_key",
    "make_s3_client_factory",
    "manifest_key",
    "parse_aggregate_key",
    "parse_raw_key",
    "raw_hour_prefix",
    "restate_manifest_key",
    "rollup_folders",
    "rollup_key",
]

logger = logging.getLogger(__name__)

END_OFFSET_METADATA: Final = "end-offset"
RECORDS_METADATA: Final = "records"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
RAW_DIR: Final = "events/"
ROLLUP_PERIODS: Final = ("hourly", "daily")
_RAW_HOUR_DIR = re.compile(r"year=([0-9]{4})/month=([0-9]{2})/day=([0-9]{2})/hour=([0-9]{2})/", re.ASCII)
_RAW_NAME = re.compile(r"part-([0-9]{5})-([0-9]{20})\.parquet", re.ASCII)
_AGGREGATE_NAME = re.compile(r"(.+)-(-?[0-9]{1,19})-part([0-9]{4,})\.parquet", re.ASCII)
# Error codes that mean "the service is busy or briefly broken": retry later.
_TRANSIENT_CODES: Final = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestTimeout", "InternalError", "ServiceUnavailable", "OperationAborted",
    # A concurrent conditional write to the same key (AWS: 409); retrying resolves it to 200 or 412.
    "ConditionalRequestConflict",
})
_BUCKET_NOT_FOUND_CODES: Final = frozenset({"NoSuchBucket"})
_PRECONDITION_FAILED_CODES: Final = frozenset({"PreconditionFailed"})


class S3Client(Protocol):
    """The part of a boto3 S3 client the lake uses."""

    def put_object(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def get_object(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def list_objects_v2(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def head_object(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def head_bucket(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ArchiveOutcome:
    """Result of put_archive: offsets <= end_offset of the partition are archived."""

    key: str
    end_offset: int
    written: bool


def _check_prefix(prefix: str) -> None:
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
    _check_prefix(prefix)
    return f"{prefix}aggregated/{period}/{_period_dirs(period, start_ms)}/{period}-{start_ms}.parquet"


def rollup_folders(prefix: str, period: str, first_start_ms: int, last_start_ms: int) -> list[str]:
    """The folders to list for the rollups of the periods starting in [first_start_ms, last_start_ms]:
    one per UTC day for hourly rollups, one per UTC month for daily ones."""
    _check_prefix(prefix)
    if period not in ROLLUP_PERIODS:
        raise ValueError(f"unknown rollup period {period!r}: expected one of {ROLLUP_PERIODS}")
    folders: list[str] = []
    at = _EPOCH + timedelta(milliseconds=first_start_ms)
    last = _EPOCH + timedelta(milliseconds=last_start_ms)
    while at <= last:
        if period == "hourly":
            folders.append(f"{prefix}aggregated/hourly/{at:year=%Y/month=%m/day=%d}/")
            at = datetime(at.year, at.month, at.day, tzinfo=timezone.utc) + timedelta(days=1)
        else:
            folders.append(f"{prefix}aggregated/daily/{at:year=%Y/month=%m}/")
            at = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=timezone.utc)
    return folders


def manifest_key(prefix: str, period: str, start_ms: int) -> str:
    """Key of the batch manifest of the period starting at ``start_ms``."""
    _check_prefix(prefix)
    return f"{prefix}batch/manifests/{period}/{_period_dirs(period, start_ms)}/{period}-{start_ms}.json"


def restate_manifest_key(prefix: str, hour_start_ms: int) -> str:
    """Key of the manifest of the batch layer's restatement of the windows starting in one hour."""
    _check_prefix(prefix)
    return f"{prefix}batch/manifests/restated/{_hour_dirs(hour_start_ms)}/restated-{hour_start_ms}.json"


def aggregate_hour_prefix(prefix: str, window: str, hour_start_ms: int) -> str:
    """The folder of one window's objects whose window_start is in one UTC hour."""
    _check_prefix(prefix)
    return f"{prefix}aggregated/{encode_key_part(window)}/{_hour_dirs(hour_start_ms)}/"


@dataclass(frozen=True, slots=True)
class AggregateKey:
    window: str
    window_start_ms: int
    part: int


def parse_aggregate_key(prefix: str, key: str) -> AggregateKey | None:
    """Inverse of aggregate_key, or None for any other name (the key must be exactly what aggregate_key
    gives back for what it parses to)."""
    name = _AGGREGATE_NAME.fullmatch(key.rsplit("/", 1)[-1])
    if name is None:
        return None
    start_ms, part = int(name.group(2)), int(name.group(3))
    try:
        window = decode_key_part(name.group(1))
        if aggregate_key(prefix, window, start_ms, part) != key:
            return None
    except (ValueError, OverflowError):
        return None
    return AggregateKey(window, start_ms, part)


def raw_hour_prefix(prefix: str, hour_start_ms: int) -> str:
    """The folder of the raw files of one UTC hour."""
    _check_prefix(prefix)
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
    _check_prefix(prefix)
    if part < 0:
        raise ValueError(f"part must be >= 0, got {part}")
    # Window names are validated as [a-z0-9_-] by settings; encoding them anyway means no
    # name can ever add path levels or fake a partition column.
    name = encode_key_part(window)
    return f"{prefix}aggregated/{name}/{_hour_dirs(window_start_ms)}/{name}-{window_start_ms}-part{part:04d}.parquet"


def archive_key(prefix: str, first_event_ms: int, partition: int, start_offset: int) -> str:
    """Key of the raw file of ``partition`` starting at ``start_offset``.

    The file name depends only on (partition, start_offset); the hour directory comes from
    the first record's event time, which a replay from the same offset reads again.
    """
    _check_prefix(prefix)
    if partition < 0 or start_offset < 0:
        raise ValueError(f"partition and start offset must be >= 0, got {partition}, {start_offset}")
    return f"{prefix}events/{_hour_dirs(first_event_ms)}/part-{partition:05d}-{start_offset:020d}.parquet"


def make_s3_client_factory(
    endpoint_url: str | None,
    region: str,
    *,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 30.0,
    max_attempts: int = 1,
) -> Callable[[], Any]:
    """A factory of boto3 S3 clients: credentials from the default AWS chain, no retries by default.

    botocore's own retries are disabled (``total_max_attempts=1``; note that botocore's
    ``max_attempts`` counts *retries*, so ``max_attempts=1`` would still retry once): the
    caller's retry policy owns retries. A caller without one (the batch command) asks for
    ``max_attempts`` > 1. Each call builds its own boto3 Session, because the
    default session is shared mutable state and not thread-safe.
    """

    def factory() -> Any:
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
        )
        session = boto3.session.Session(region_name=region)
        return session.client("s3", endpoint_url=endpoint_url or None, config=config)

    return factory


def _check_archive_records(partition: int, records: Sequence[tuple[int, int, Event]]) -> None:
    """put_archive's precondition: records of ``partition`` in strictly increasing offset order."""
    if isinstance(records, EventColumns):  # the archive's own columns: one C-level pass over the offsets
        offsets = records.offsets
        if records.partition == partition and all(map(operator.lt, offsets, islice(offsets, 1, None))):
            return
    previous: int | None = None
    for record_partition, offset, _event in records:
        if record_partition != partition:
            raise ValueError(f"record of partition {record_partition} in a file of partition {partition}")
        if previous is not None and offset <= previous:
            raise ValueError(f"offsets must strictly increase: {offset} after {previous}")
        previous = offset


def _parse_offset(metadata: Mapping[str, str], name: str) -> int | None:
    text = metadata.get(name)
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)


class LakeReader(Protocol):
    """What the lake's readers use of it (S3Lake; a dict in unit tests)."""

    @property
    def bucket(self) -> str: ...

    @property
    def prefix(self) -> str: ...

    def list_etags(self, prefix: str) -> dict[str, str]: ...

    def get_bytes(self, key: str) -> bytes: ...


class S3Lake:
    """Writes aggregated windows and raw archive files to ``s3://{bucket}/{prefix}``.

    Holds configuration only until ``open()`` creates the client through ``client_factory``.
    """

    __slots__ = ("_bucket", "_client", "_client_factory", "_prefix")

    def __init__(self, bucket: str, prefix: str, client_factory: Callable[[], S3Client]) -> None:
        _check_prefix(prefix)
        self._bucket = bucket
        self._prefix = prefix
        self._client_factory = client_factory
        self._client: S3Client | None = None

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    def open(self) -> None:
        if self._client is None:
            self._client = self._client_factory()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _require_client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3Lake is not open: call open() first")
        return self._client

    def put_aggregates(self, window: str, window_start_ms: int, part: int, rows: Sequence[WindowRow]) -> str:
        """Write (overwrite) one window instance's rows; returns the key.

        Every row must belong to ``window`` starting at ``window_start_ms``.
        """
        for row in rows:
            if row.window != window or row.window_start_ms != window_start_ms:
                raise ValueError(
                    f"row of window {row.window!r} at {row.window_start_ms} "
                    f"in the file of {window!r} at {window_start_ms}"
                )
        client = self._require_client()
        key = aggregate_key(self._prefix, window, window_start_ms, part)
        body = rows_to_parquet(rows)
        with self._translate_errors("put", key):
            client.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=PARQUET_CONTENT_TYPE)
        logger.debug("wrote %d rows to s3://%s/%s", len(rows), self._bucket, key)
        return key

    def put_archive(
        self, partition: int, start_offset: int, records: Sequence[tuple[int, int, Event]]
    ) -> ArchiveOutcome:
        """Write the raw file of ``partition`` starting at ``start_offset``, unless it exists.

        ``records`` are (partition, offset, Event), all of ``partition``, in strictly
        increasing offset order, the first at an offset >= ``start_offset``.

        The object is created with ``If-None-Match: *`` and metadata ``end-offset`` (last
        offset in the file) and ``records`` (row count). If it already exists (a run wrote it
        and crashed before committing its offsets), nothing is written and the existing
        file's end offset is returned with ``written=False``.

        Contract: the caller treats every offset <= ``outcome.end_offset`` of this partition
        as archived (drops those records, commits past them) and starts the next file at
        ``outcome.end_offset + 1``. A replay may cut files at different boundaries than the
        crashed run, but it always restarts at a start offset the crashed run used (the
        committed one), finds that file, and skips exactly what it already holds, so no row
        is archived twice and none is lost.

        With offset gaps (transaction markers, compaction) ``end_offset + 1`` and the next
        record's offset differ. Either works as the next start offset, as long as the caller
        names the first file after a restart the same way: by the committed offset (=
        last archived + 1) with the first convention, by its first record's offset with the
        second. Mixing the two makes a replay miss the crashed run's file.
        """
        if not records:
            raise ValueError("cannot archive an empty batch: it has no offsets")
        if records[0][1] < start_offset:
            raise ValueError(f"first offset {records[0][1]} is before the file's start offset {start_offset}")
        _check_archive_records(partition, records)
        client = self._require_client()
        first_event_ms = records.event_ms[0] if isinstance(records, EventColumns) else records[0][2].event_ms
        key = archive_key(self._prefix, first_event_ms, partition, start_offset)
        end_offset = records[-1][1]
        body = events_to_parquet(records)
        with self._translate_errors("conditional put", key):
            try:
                client.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=body,
                    ContentType=PARQUET_CONTENT_TYPE,
                    IfNoneMatch="*",
                    Metadata={END_OFFSET_METADATA: str(end_offset), RECORDS_METADATA: str(len(records))},
                )
            except ClientError as exc:
                if _error_code(exc) not in _PRECONDITION_FAILED_CODES and _http_status(exc) != 412:
                    raise
                existing_end = self._existing_end_offset(client, key, start_offset)
                logger.info("raw archive s3://%s/%s already exists up to offset %d: not rewritten",
                            self._bucket, key, existing_end)
                return ArchiveOutcome(key=key, end_offset=existing_end, written=False)
        logger.debug("archived offsets %d..%d of partition %d to s3://%s/%s",
                     records[0][1], end_offset, partition, self._bucket, key)
        return ArchiveOutcome(key=key, end_offset=end_offset, written=True)

    # -- the batch layer: listing with ETags, whole-object reads and writes -------------------

    def list_etags(self, prefix: str) -> dict[str, str]:
        """Every object whose key starts with ``prefix`` (absolute: include the lake prefix), key -> ETag."""
        client = self._require_client()
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            request: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
            if token is not None:
                request["ContinuationToken"] = token
            with self._translate_errors("list", prefix):
                page = client.list_objects_v2(**request)
            for item in page.get("Contents", []):
                found[str(item["Key"])] = str(item["ETag"]).strip('"')
            if not page.get("IsTruncated"):
                return found
            token = str(page["NextContinuationToken"])

    def get_bytes(self, key: str) -> bytes:
        client = self._require_client()
        with self._translate_errors("get", key):
            body = client.get_object(Bucket=self._bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        """Write (overwrite) one whole object."""
        client = self._require_client()
        with self._translate_errors("put", key):
            client.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)

    def _existing_end_offset(self, client: S3Client, key: str, start_offset: int) -> int:
        try:
            head = client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _http_status(exc) == 404:
                # Deleted between our put and head: the next attempt can simply write it.
                raise SinkUnavailableError(
                    f"s3://{self._bucket}/{key} existed at put time but not at head time; retry") from exc
            raise
        end_offset = _parse_offset(head.get("Metadata", {}), END_OFFSET_METADATA)
        if end_offset is None or end_offset < start_offset:
            raise ArchiveMetadataError(
                f"s3://{self._bucket}/{key} exists without a valid '{END_OFFSET_METADATA}' >= {start_offset} in its "
                "metadata; it was not written by this archiver")
        return end_offset

    @contextmanager
    def _translate_errors(self, operation: str, key: str) -> Iterator[None]:
        """Turn botocore failures into the sink's typed errors (messages: bucket and key only)."""
        where = f"s3://{self._bucket}/{key}"
        try:
            yield
        except (BotoConnectionError, HTTPClientError) as exc:
            raise SinkUnavailableError(f"S3 {operation} of {where} failed: {type(exc).__name__}") from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise SinkConfigurationError(f"S3 {operation} of {where} failed: no usable AWS credentials") from exc
        except ClientError as exc:
            code, status = _error_code(exc), _http_status(exc)
            detail = f"S3 {operation} of {where} failed: {code} (HTTP {status})"
            if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
                raise SinkUnavailableError(detail) from exc
            if code in _BUCKET_NOT_FOUND_CODES or (status == 403 and self._bucket_missing()):
                message = f"S3 bucket {self._bucket!r} does not exist ({operation} of {where})"
                raise S3BucketNotFoundError(message) from exc
            raise SinkConfigurationError(detail) from exc
        except BotoCoreError as exc:
            raise SinkConfigurationError(f"S3 {operation} of {where} failed: {type(exc).__name__}") from exc

    def _bucket_missing(self) -> bool:
        """After a 403: is the bucket simply missing? (SeaweedFS answers a put to a missing
        bucket with 403 AccessDenied rather than 404 NoSuchBucket.)"""
        try:
            self._require_client().head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            return _http_status(exc) == 404 or _error_code(exc) in _BUCKET_NOT_FOUND_CODES
        except BotoCoreError:
            return False
        return False


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status if isinstance(status, int) else 0
