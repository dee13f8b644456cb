"""What a run of the batch layer reports (RunReport), and the lake as a run uses it (BatchLake)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from batch.periods import Period
from sinks.lake import LakeReader

__all__ = ["BatchLake", "RunReport"]


class BatchLake(LakeReader, Protocol):
    """The lake as the batch job uses it (sinks.lake.S3Lake; a dict in unit tests)."""

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None: ...



@dataclass(slots=True)
class RunReport:
    processed: list[Period] = field(default_factory=list)
    up_to_date: int = 0
    not_sealed: list[Period] = field(default_factory=list)
    objects_written: int = 0
    skipped: set[str] = field(default_factory=set)  # keys of foreign or unreadable objects met
    # Restatement of the speed layer's windows, per hour of window starts:
    restated_hours: int = 0
    restate_up_to_date: int = 0
    restate_not_sealed: int = 0
    restate_waiting: int = 0  # sealed, but stage 2 has not exported all of the hour's windows yet
    windows_restated: int = 0
    rows_restated: int = 0
    restate_problems: int = 0  # stored rows the raw archive cannot account for (left as they are)
    redis_rows_written: int = 0  # by a backfill's repopulation

    @property
    def skipped_objects(self) -> int:
        return len(self.skipped)
