"""Typed sink errors, named after the failure, shared by the S3 and Redis writers.

Messages name the destination (bucket and key, or a Redis host without its password)
and never carry credentials.
"""

from __future__ import annotations

__all__ = [
    "ArchiveMetadataError",
    "S3BucketNotFoundError",
    "SinkConfigurationError",
    "SinkUnavailableError",
]


class SinkUnavailableError(Exception):
    """Transient: connection refused or reset, timeout, 5xx, throttling. Retry later."""


class SinkConfigurationError(Exception):
    """Permanent until a human acts: access denied, bad credentials, wrong key type. Not retried."""


class S3BucketNotFoundError(SinkConfigurationError):
    """The configured bucket does not exist (a configuration error, not retried)."""


class ArchiveMetadataError(SinkConfigurationError):
    """An existing raw-archive object lacks valid ``end-offset`` metadata: something else wrote it."""
