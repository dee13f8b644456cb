"""The S3 data lake's writer and reader (one call per object); the object names are formats/lake.py's.

Names are pure functions of their inputs (formats/lake.py), so a replay writes the same keys:

* aggregates are overwritten with a plain put: same key and same (deterministic) content
  make a replay idempotent;
* raw archive files are written with ``If-None-Match: *`` and never overwritten; see
  ``S3Lake.put_archive`` for the offset contract that keeps replays from duplicating rows;
* rollups and manifests are overwritten whole, the manifest last (batch/job.py).

The writer is blocking (boto3): call it from a thread executor. Retries belong to the
caller (sinks/policy.py); clients built by ``make_s3_client_factory`` do not retry.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Generic, Protocol, TypeVar

import boto3
import pyarrow as pa
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

from formats.aggregates import AggregateColumns, AggregateLayout, aggregate_columns_to_parquet
from formats.events import Event, EventColumns
from formats.lake import (
    END_OFFSET_METADATA,
    RECORDS_METADATA,
    aggregate_key,
    archive_key,
    check_prefix,
    spec_aggregate_key,
)
from formats.parquet import PARQUET_CONTENT_TYPE
from formats.raw import RawColumns, events_to_parquet
from formats.rows import WindowRow, rows_to_parquet
from sinks.policy import (
    S3_BUCKET_NOT_FOUND_CODES,
    S3_PRECONDITION_FAILED_CODES,
    ArchiveMetadataError,
    S3BucketNotFoundError,
    SinkConfigurationError,
    SinkUnavailableError,
    s3_failure_is_transient,
)

__all__ = ["READ_THREADS", "ArchiveOutcome", "LakeReader", "ListingCache", "ObjectCache", "S3Client", "S3Lake",
           "decoded_objects", "get_objects", "make_s3_client_factory"]

logger = logging.getLogger(__name__)



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


def _check_archive_records(partition: int, records: Sequence[tuple[int, int, Any]]) -> None:
    """put_archive's precondition: records of ``partition`` in strictly increasing offset order."""
    if isinstance(records, EventColumns | RawColumns):  # the archive's own columns: one C-level pass
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

    def list_folders(self, prefix: str) -> list[str]: ...

    def get_bytes(self, key: str) -> bytes: ...


READ_THREADS = 8  # parallel GETs of small objects: a range's rollups, an hour's or a window's window objects


def get_objects(lake: LakeReader, keys: Sequence[str]) -> list[bytes]:
    """The bodies of `keys`, in their order, READ_THREADS GETs at a time (blocking: call from a thread)."""
    if not keys:
        return []
    with ThreadPoolExecutor(min(READ_THREADS, len(keys))) as pool:
        return list(pool.map(lake.get_bytes, keys))


V = TypeVar("V")
LISTING_TTL_S: Final = 10.0  # how long a folder's listing is reused (ListingCache)
CACHED_OBJECTS: Final = 256  # decoded objects a cache keeps at most (a week of hourly rollups, windows' parts)
CACHED_BYTES: Final = 128 * 1024 * 1024  # and their decoded size at most (per-user rollups are large)


class ObjectCache(Generic[V]):
    """Decoded lake objects by (key, ETag), least recently used first out, bounded in count and in their
    decoded size as the caller weighs it; thread-safe. An object rewritten (restated) has a new ETag, so a
    reader that lists the ETags first never serves a stale decode and GETs only what changed."""

    def __init__(self, size: int = CACHED_OBJECTS, max_bytes: int = CACHED_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._values: OrderedDict[tuple[str, str], tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, etag: str) -> V | None:
        with self._lock:
            found = self._values.get((key, etag))
            if found is None:
                return None
            self._values.move_to_end((key, etag))
            return found[0]

    def put(self, key: str, etag: str, value: V, nbytes: int) -> None:
        """Keep `value` (about `nbytes` decoded); one larger than the whole budget is not kept."""
        if nbytes > self._max_bytes:
            return
        with self._lock:
            old = self._values.pop((key, etag), None)
            if old is not None:
                self._bytes -= old[1]
            self._values[(key, etag)] = (value, nbytes)
            self._bytes += nbytes
            while len(self._values) > self._size or self._bytes > self._max_bytes:
                _, (_, dropped) = self._values.popitem(last=False)
                self._bytes -= dropped


class ListingCache:
    """Folders' listings (key -> ETag) reused for LISTING_TTL_S: boto3's LIST is pure Python on a thread
    that holds the GIL, so a dashboard's or a client's repeated request of the same range would otherwise
    cost the event loop a LIST per folder each time. What it misses is at most LISTING_TTL_S old (a
    rollup the batch job rewrote, every few minutes). Thread-safe."""

    def __init__(self, ttl_s: float = LISTING_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._listings: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def list_etags(self, lake: LakeReader, prefix: str) -> dict[str, str]:
        """lake.list_etags(prefix), or its answer of less than the TTL ago."""
        key = (lake.bucket, prefix)
        now = self._clock()
        with self._lock:
            found = self._listings.get(key)
            if found is not None and now - found[0] < self._ttl_s:
                return found[1]
        listing = lake.list_etags(prefix)
        with self._lock:
            self._listings = {k: v for k, v in self._listings.items() if now - v[0] < self._ttl_s}
            self._listings[key] = (now, listing)
        return listing


def decoded_objects(lake: LakeReader, cache: ObjectCache[V], keys: Sequence[str], etags: Mapping[str, str],
                    decode: Callable[[bytes], V], weigh: Callable[[V], int]) -> Iterator[tuple[str, V | Exception]]:
    """Each key's decoded object in key order, or the error (ValueError, ArrowException) that kept it from
    decoding. Objects whose ETag the cache holds are not read; the others are GET READ_THREADS at a time,
    as the caller consumes them, so a reader that stops early (a row limit reached) does not read the
    rest; what decodes is cached, weighed by `weigh`."""
    for first in range(0, len(keys), READ_THREADS):
        chunk = keys[first:first + READ_THREADS]
        cached = {key: cache.get(key, etags[key]) for key in chunk}
        missing = [key for key in chunk if cached[key] is None]
        bodies = dict(zip(missing, get_objects(lake, missing), strict=True))
        for key in chunk:
            value = cached[key]
            if value is None:
                try:
                    value = decode(bodies[key])
                except (ValueError, pa.ArrowException) as exc:
                    yield key, exc
                    continue
                cache.put(key, etags[key], value, weigh(value))
            yield key, value


class S3Lake:
    """Writes aggregated windows and raw archive files to ``s3://{bucket}/{prefix}``.

    Holds configuration only until ``open()`` creates the client through ``client_factory``.
    """

    __slots__ = ("_bucket", "_client", "_client_factory", "_prefix")

    def __init__(self, bucket: str, prefix: str, client_factory: Callable[[], S3Client]) -> None:
        check_prefix(prefix)
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

    def put_aggregate_columns(self, columns: AggregateColumns, part: int, layout: AggregateLayout) -> str:
        """Write one window instance's rows of a spec's aggregation (replacing the object); its key."""
        key = spec_aggregate_key(self._prefix, columns.aggregation, columns.window, columns.window_start_ms, part)
        with self._translate_errors("put", key):
            self._require_client().put_object(Bucket=self._bucket, Key=key, ContentType=PARQUET_CONTENT_TYPE,
                                              Body=aggregate_columns_to_parquet(columns, layout))
        return key

    def put_archive(
        self, partition: int, start_offset: int, records: Sequence[tuple[int, int, Event]] | RawColumns
    ) -> ArchiveOutcome:
        """Write the raw file of ``partition`` starting at ``start_offset``, unless it exists.

        ``records`` are (partition, offset, Event), or a spec's RawColumns (formats/raw.py), all of
        ``partition``, in strictly increasing offset order, the first at an offset >= ``start_offset``.

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
        first_event_ms = records.event_ms[0] if isinstance(records, EventColumns | RawColumns) else \
            records[0][2].event_ms
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
                if _error_code(exc) not in S3_PRECONDITION_FAILED_CODES and _http_status(exc) != 412:
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
        return {str(item["Key"]): str(item["ETag"]).strip('"')
                for page in self._list_pages(prefix) for item in page.get("Contents", [])}

    def list_folders(self, prefix: str) -> list[str]:
        """The folders right under ``prefix`` (absolute, ending in "/"), each ending in "/"."""
        return [str(item["Prefix"]) for page in self._list_pages(prefix, delimiter="/")
                for item in page.get("CommonPrefixes", [])]

    def _list_pages(self, prefix: str, delimiter: str | None = None) -> Iterator[Mapping[str, Any]]:
        """Every page of a ListObjectsV2 of ``prefix``, following the continuation tokens."""
        client = self._require_client()
        request: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if delimiter is not None:
            request["Delimiter"] = delimiter
        while True:
            with self._translate_errors("list", prefix):
                page = client.list_objects_v2(**request)
            yield page
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = str(page["NextContinuationToken"])

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

    def check(self) -> None:
        """List one object under the lake's prefix, as the web views do: S3BucketNotFoundError for a missing
        bucket, SinkConfigurationError for refused credentials or access, SinkUnavailableError for no answer."""
        client = self._require_client()
        with self._translate_errors("check", self._prefix):
            try:
                client.list_objects_v2(Bucket=self._bucket, Prefix=self._prefix, MaxKeys=1)
            except ClientError as exc:
                if _http_status(exc) == 404 and _error_code(exc) in ("", "404", "NotFound"):
                    raise S3BucketNotFoundError(f"S3 bucket {self._bucket!r} does not exist") from exc
                raise

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
            if s3_failure_is_transient(code, status):
                raise SinkUnavailableError(detail) from exc
            if code in S3_BUCKET_NOT_FOUND_CODES or (status == 403 and self._bucket_missing()):
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
            return _http_status(exc) == 404 or _error_code(exc) in S3_BUCKET_NOT_FOUND_CODES
        except BotoCoreError:
            return False
        return False


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status if isinstance(status, int) else 0
