"""S3Lake against a fake client: request shapes, input checks and error classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from formats.events import Event
from formats.raw import parquet_to_events
from formats.rows import WindowRow, parquet_to_rows
from sinks.lake import ArchiveOutcome, S3Lake
from sinks.policy import ArchiveMetadataError, S3BucketNotFoundError, SinkConfigurationError, SinkUnavailableError

START_MS = 1763251140000  # 2025-11-15T23:59:00Z
ARCHIVE_KEY = "p/events/year=2025/month=11/day=15/hour=23/part-00002-00000000000000000010.parquet"
AGG_KEY = "p/aggregated/tumbling_1m/year=2025/month=11/day=15/hour=23/tumbling_1m-1763251140000-part0000.parquet"


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


class FakeS3:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.put_errors: list[Exception] = []
        self.head_object_result: Mapping[str, Any] | Exception = {"Metadata": {}}
        self.head_bucket_result: Mapping[str, Any] | Exception = {}
        self.closed = False

    def put_object(self, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("put_object", kwargs))
        if self.put_errors:
            raise self.put_errors.pop(0)
        return {"ETag": '"x"'}

    def head_object(self, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("head_object", kwargs))
        if isinstance(self.head_object_result, Exception):
            raise self.head_object_result
        return self.head_object_result

    def head_bucket(self, **kwargs: Any) -> Mapping[str, Any]:
        self.calls.append(("head_bucket", kwargs))
        if isinstance(self.head_bucket_result, Exception):
            raise self.head_bucket_result
        return self.head_bucket_result

    def close(self) -> None:
        self.closed = True


def open_lake(fake: FakeS3) -> S3Lake:
    lake = S3Lake("lake-bucket", "p/", lambda: fake)
    lake.open()
    return lake


def records(*offsets: int, partition: int = 2) -> list[tuple[int, int, Event]]:
    return [(partition, offset, Event(f"u{offset}", "click", START_MS + offset, float(offset))) for offset in offsets]


def rows() -> list[WindowRow]:
    return [WindowRow("tumbling_1m", START_MS, START_MS + 60_000, "click", 2, 3.0, 1.0, 2.0)]


def test_client_is_created_by_open_and_closed_by_close() -> None:
    made: list[FakeS3] = []

    def factory() -> FakeS3:
        made.append(FakeS3())
        return made[-1]

    lake = S3Lake("b", "", factory)
    assert made == []
    with pytest.raises(RuntimeError, match="not open"):
        lake.put_aggregates("w", 0, 0, [])
    lake.open()
    lake.open()
    assert len(made) == 1
    lake.close()
    assert made[0].closed


def test_put_aggregates_is_one_plain_put() -> None:
    fake = FakeS3()
    key = open_lake(fake).put_aggregates("tumbling_1m", START_MS, 0, rows())
    assert key == AGG_KEY
    [(name, kwargs)] = fake.calls
    assert name == "put_object"
    assert set(kwargs) == {"Bucket", "Key", "Body", "ContentType"}  # no condition: overwriting is the point
    assert (kwargs["Bucket"], kwargs["Key"], kwargs["ContentType"]) == (
        "lake-bucket", AGG_KEY, "application/vnd.apache.parquet")
    assert parquet_to_rows(kwargs["Body"]) == rows()


def test_put_aggregates_rejects_rows_of_another_window() -> None:
    fake = FakeS3()
    message = "row of window 'tumbling_1m' at 1763251140000 in the file of 'tumbling_1m' at 0"
    with pytest.raises(ValueError, match=message):
        open_lake(fake).put_aggregates("tumbling_1m", 0, 0, rows())
    with pytest.raises(ValueError, match="in the file of 'hopping_1m'"):
        open_lake(fake).put_aggregates("hopping_1m", START_MS, 0, rows())
    assert fake.calls == []


def test_put_archive_is_a_conditional_put_with_offset_metadata() -> None:
    fake = FakeS3()
    outcome = open_lake(fake).put_archive(2, 10, records(10, 11, 15))
    assert outcome == ArchiveOutcome(key=ARCHIVE_KEY, end_offset=15, written=True)
    [(name, kwargs)] = fake.calls
    assert name == "put_object"
    assert kwargs["IfNoneMatch"] == "*"
    assert kwargs["Metadata"] == {"end-offset": "15", "records": "3"}
    assert [offset for _, offset, _ in parquet_to_events(kwargs["Body"])] == [10, 11, 15]


def test_put_archive_after_precondition_failure_reports_the_existing_end_offset() -> None:
    fake = FakeS3()
    fake.put_errors = [client_error("PreconditionFailed", 412)]
    fake.head_object_result = {"Metadata": {"end-offset": "12", "records": "3"}}
    outcome = open_lake(fake).put_archive(2, 10, records(10, 11, 12, 13, 14))
    assert outcome == ArchiveOutcome(key=ARCHIVE_KEY, end_offset=12, written=False)
    assert [name for name, _ in fake.calls] == ["put_object", "head_object"]
    assert fake.calls[1][1] == {"Bucket": "lake-bucket", "Key": ARCHIVE_KEY}


@pytest.mark.parametrize("metadata", [{}, {"end-offset": "abc"}, {"end-offset": "-3"}, {"end-offset": "9"}])
def test_existing_archive_without_valid_end_offset_is_a_configuration_error(metadata: dict[str, str]) -> None:
    fake = FakeS3()
    fake.put_errors = [client_error("PreconditionFailed", 412)]
    fake.head_object_result = {"Metadata": metadata}
    with pytest.raises(ArchiveMetadataError, match=f"s3://lake-bucket/{ARCHIVE_KEY} exists without a valid"):
        open_lake(fake).put_archive(2, 10, records(10, 11))


def test_archive_deleted_between_put_and_head_is_transient() -> None:
    fake = FakeS3()
    fake.put_errors = [client_error("PreconditionFailed", 412)]
    fake.head_object_result = client_error("404", 404, "HeadObject")
    with pytest.raises(SinkUnavailableError, match="existed at put time but not at head time"):
        open_lake(fake).put_archive(2, 10, records(10))


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([], "empty batch"),
        (records(10, 11, partition=3), "record of partition 3 in a file of partition 2"),
        (records(11, 10), "offsets must strictly increase: 10 after 11"),
        (records(10, 10), "offsets must strictly increase: 10 after 10"),
        (records(9, 10), "first offset 9 is before the file's start offset 10"),
    ],
)
def test_put_archive_rejects_bad_batches(batch: list[tuple[int, int, Event]], message: str) -> None:
    fake = FakeS3()
    with pytest.raises(ValueError, match=message):
        open_lake(fake).put_archive(2, 10, batch)
    assert fake.calls == []


def test_archive_may_start_after_its_start_offset() -> None:
    # Offsets can have gaps (compaction, transaction markers): the name keeps the start offset.
    fake = FakeS3()
    assert open_lake(fake).put_archive(2, 10, records(12, 13)) == ArchiveOutcome(ARCHIVE_KEY, 13, True)


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1/"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1/"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1/"),
        client_error("InternalError", 500),
        client_error("ServiceUnavailable", 503),
        client_error("SlowDown", 503),
        client_error("SlowDown", 200),
        client_error("TooManyRequests", 429),
        client_error("ConditionalRequestConflict", 409),
        client_error("RequestTimeout", 400),
    ],
)
def test_transient_failures_are_sink_unavailable(error: Exception) -> None:
    fake = FakeS3()
    fake.put_errors = [error]
    with pytest.raises(SinkUnavailableError, match=f"S3 put of s3://lake-bucket/{AGG_KEY} failed") as raised:
        open_lake(fake).put_aggregates("tumbling_1m", START_MS, 0, rows())
    assert raised.value.__cause__ is error


def test_no_such_bucket_is_bucket_not_found() -> None:
    fake = FakeS3()
    fake.put_errors = [client_error("NoSuchBucket", 404)]
    with pytest.raises(S3BucketNotFoundError, match="S3 bucket 'lake-bucket' does not exist"):
        open_lake(fake).put_aggregates("tumbling_1m", START_MS, 0, rows())


def test_access_denied_on_a_missing_bucket_is_bucket_not_found() -> None:
    # SeaweedFS answers a put to a missing bucket with 403 AccessDenied.
    fake = FakeS3()
    fake.put_errors = [client_error("AccessDenied", 403)]
    fake.head_bucket_result = client_error("404", 404, "HeadBucket")
    with pytest.raises(S3BucketNotFoundError, match="S3 bucket 'lake-bucket' does not exist"):
        open_lake(fake).put_archive(2, 10, records(10))
    assert fake.calls[-1] == ("head_bucket", {"Bucket": "lake-bucket"})


@pytest.mark.parametrize("head_bucket", [{}, client_error("403", 403, "HeadBucket")])
def test_access_denied_on_an_existing_bucket_is_a_configuration_error(head_bucket: Any) -> None:
    fake = FakeS3()
    fake.put_errors = [client_error("AccessDenied", 403)]
    fake.head_bucket_result = head_bucket
    with pytest.raises(SinkConfigurationError) as raised:
        open_lake(fake).put_aggregates("tumbling_1m", START_MS, 0, rows())
    assert type(raised.value) is SinkConfigurationError
    assert str(raised.value) == f"S3 put of s3://lake-bucket/{AGG_KEY} failed: AccessDenied (HTTP 403)"


def test_missing_credentials_are_a_configuration_error() -> None:
    fake = FakeS3()
    fake.put_errors = [NoCredentialsError()]
    with pytest.raises(SinkConfigurationError, match="no usable AWS credentials"):
        open_lake(fake).put_aggregates("tumbling_1m", START_MS, 0, rows())


def test_prefix_must_be_empty_or_end_with_a_slash() -> None:
    with pytest.raises(ValueError, match="end with '/'"):
        S3Lake("b", "lake", FakeS3)
